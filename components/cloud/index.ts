export { Host, type HostArgs } from "./host";
export { cloudInit, firewallRules, PUBLIC_TCP_PORTS, serverIpv6Address, sshAccessStep, type FirewallRule } from "./rules";
