/**
 * DNS questions Node's resolver cannot ask (Node 20 has no TLSA, SSHFP or DS lookup): one query
 * over TCP with dns-packet to the same server the rest of the check asks. The answer is given in
 * the presentation form `renderDnsRecords` uses ("3 1 1 <hex>", "4 2 <hex>", "<tag> 13 2 <HEX>").
 */
import { isIP, connect } from "node:net";
import * as dnsPacket from "dns-packet";

export type WireType = "TLSA" | "SSHFP" | "DS";

/** "192.0.2.1", "192.0.2.1:5353", "[2001:db8::1]:53" or "2001:db8::1" -> host and port. */
export function parseServer(server: string): { host: string; port: number } {
    if (isIP(server)) return { host: server, port: 53 };
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(server) ?? /^([^:]+):(\d+)$/.exec(server);
    if (!m) throw new Error(`not a DNS server address: ${server}`);
    return { host: m[1], port: m[2] ? Number(m[2]) : 53 };
}

/** The presentation form of one answer's data. */
export function presentation(answer: dnsPacket.Answer): string | undefined {
    switch (answer.type) {
        case "TLSA":
            return `${answer.data.usage} ${answer.data.selector} ${answer.data.matchingType} ${answer.data.certificate.toString("hex")}`;
        case "SSHFP":
            return `${answer.data.algorithm} ${answer.data.hash} ${answer.data.fingerprint.toLowerCase()}`;
        case "DS":
            return `${answer.data.keyTag} ${answer.data.algorithm} ${answer.data.digestType} ${answer.data.digest.toString("hex").toUpperCase()}`;
        default:
            return undefined;
    }
}

export interface WireAnswer {
    /** The response code ("NOERROR", "NXDOMAIN", "SERVFAIL", ...). */
    readonly rcode: string;
    /** The resolver validated the answer (the AD flag). */
    readonly authenticated: boolean;
    readonly values: string[];
}

/** Asks `server` for `name`/`type` over TCP (DNSSEC OK set, so a validating resolver reports AD). */
export function queryWire(server: string, name: string, type: WireType, timeoutMs = 3000): Promise<WireAnswer> {
    const { host, port } = parseServer(server);
    const question = dnsPacket.streamEncode({
        type: "query",
        id: Math.floor(Math.random() * 65535),
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
        questions: [{ type, name }],
        additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: dnsPacket.DNSSEC_OK, flag_do: true, options: [] }],
    });
    return new Promise((resolve, reject) => {
        const socket = connect({ host, port });
        let received = Buffer.alloc(0);
        const fail = (e: Error) => {
            socket.destroy();
            reject(e);
        };
        socket.setTimeout(timeoutMs, () => fail(new Error(`no answer from ${server} within ${timeoutMs} ms`)));
        socket.on("error", fail);
        socket.on("connect", () => socket.write(question));
        socket.on("data", (chunk) => {
            received = Buffer.concat([received, chunk]);
            if (received.length < 2 || received.length < 2 + received.readUInt16BE(0)) return;
            socket.end();
            // dns-packet decodes the response code as `rcode`; its type declarations leave it out.
            const response = dnsPacket.streamDecode(received) as dnsPacket.DecodedPacket & { rcode?: string };
            const values = (response.answers ?? []).filter((a) => a.type === type).map(presentation).filter((v): v is string => v !== undefined);
            resolve({ rcode: response.rcode ?? "NOERROR", authenticated: response.flag_ad, values });
        });
    });
}
