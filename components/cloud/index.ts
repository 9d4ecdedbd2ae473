export { Host, type HostArgs } from "./host";
export { cloudInit, firewallRules, serverIpv6Address, sshAccessStep, type FirewallRule } from "./rules";
