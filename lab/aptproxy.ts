/**
 * Packages for the guests: the lab's own apt-cacher-ng on the host (loopback only), reachable from
 * the lab network as http://198.51.100.1:3142.
 *
 * The lab namespace has no way out, so the proxy itself runs in the host's namespace and a pair of
 * socat relays joins the two through a Unix socket (a file, which both namespaces see):
 *   guest -> 198.51.100.1:3142 (socat, lab netns) -> /run/ispmail-lab/apt-proxy.sock (socat, host netns)
 *         -> 127.0.0.1:13142 (apt-cacher-ng) -> http://deb.debian.org/debian
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { labTemplate, writeIfChanged } from "./files";
import { LAB, PATHS } from "./lab";
import { daemonPid, inLabNet, run, startDaemon, stopDaemon, waitFor } from "./proc";
import { DEBIAN_MIRROR } from "./rootfs";

/** apt-cacher-ng's loopback port: not 3142, which a system apt-cacher-ng may hold on all addresses. */
const LOOPBACK_PORT = 13142;
/** The proxy as the host reaches it (an apt inside a tree on the host's network). */
export const APT_PROXY_HOST_URL = `http://127.0.0.1:${LOOPBACK_PORT}`;
export const APT_PROXY_DAEMONS = ["apt-proxy-relay-lab", "apt-proxy-relay-host", "apt-cacher-ng"] as const;
const relaySocket = () => join(PATHS.run, "apt-proxy.sock");

async function proxyAnswers(): Promise<boolean> {
    // apt-cacher-ng answers a plain request for / itself (406 and its usage page): proves the whole relay
    // chain, from the lab side, without a request to the mirror.
    const [cmd, args] = inLabNet("curl", ["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "3", `${LAB.aptProxy.url}/`]);
    const r = await run(cmd, args, { timeoutMs: 8_000 });
    return r.code === 0 && /^HTTP\/1\.[01] 406 Usage Information/.test(r.stdout);
}

export async function ensureAptProxy(): Promise<"started" | "running"> {
    const confDir = join(PATHS.aptProxy, "conf");
    mkdirSync(confDir, { recursive: true });
    mkdirSync(PATHS.aptCache, { recursive: true });
    mkdirSync(join(PATHS.logs, "apt-cacher-ng"), { recursive: true });
    mkdirSync(PATHS.run, { recursive: true });
    const conf = labTemplate("apt-cacher-ng/acng.conf.mustache", {
        cacheDir: PATHS.aptCache,
        logDir: join(PATHS.logs, "apt-cacher-ng"),
        runDir: PATHS.run,
        loopbackPort: LOOPBACK_PORT,
        mirror: DEBIAN_MIRROR,
        securityMirror: DEBIAN_MIRROR.replace(/\/debian$/, "/debian-security"),
    });
    const confChanged = writeIfChanged(join(confDir, "acng.conf"), conf);
    const allRunning = APT_PROXY_DAEMONS.every((d) => daemonPid(d) !== undefined);
    if (!confChanged && allRunning && (await proxyAnswers())) return "running";
    // (Re)start the whole chain: the pieces are cheap and depend on each other.
    for (const d of APT_PROXY_DAEMONS) await stopDaemon(d);
    startDaemon("apt-cacher-ng", "apt-cacher-ng", ["-c", confDir]);
    startDaemon("apt-proxy-relay-host", "socat", [`UNIX-LISTEN:${relaySocket()},fork,unlink-early,mode=600`, `TCP:127.0.0.1:${LOOPBACK_PORT}`]);
    const [cmd, args] = inLabNet("socat", [`TCP-LISTEN:${LAB.aptProxy.port},bind=${LAB.host.ipv4},reuseaddr,fork`, `UNIX-CONNECT:${relaySocket()}`]);
    startDaemon("apt-proxy-relay-lab", cmd, args);
    await waitFor("the apt proxy at " + LAB.aptProxy.url, proxyAnswers, { tries: 60, intervalMs: 250, timeoutMs: 20_000 });
    return "started";
}
