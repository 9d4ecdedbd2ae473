export { dnsZones, mtaStsPolicy, renderDnsRecords, txtContent, txtText, zoneOf, type DnsInput, type DnsRecord, type DnsRecordType, type MtaStsPolicy } from "./records";
export { MailDns, recordResourceNames, recordTemplate, toCloudflareRecord, type CloudflareRecordArgs, type MailDnsArgs } from "./cloudflare";
