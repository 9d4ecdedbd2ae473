/**
 * Network observations: TCP reachability, the SMTP greeting, the certificate a TLS port presents
 * and an HTTPS GET (for the MTA-STS policy). Every operation has a timeout.
 */
import { connect as tcpConnect } from "node:net";
import { request } from "node:https";
import { checkServerIdentity, connect as tlsConnect, type PeerCertificate } from "node:tls";

const TIMEOUT_MS = 8000;

/** Resolves to undefined when the port accepts a connection, else to the error code. */
export function tcpProbe(host: string, port: number, timeoutMs = TIMEOUT_MS): Promise<string | undefined> {
    return new Promise((resolve) => {
        const socket = tcpConnect({ host, port });
        const done = (err?: string) => {
            socket.destroy();
            resolve(err);
        };
        socket.setTimeout(timeoutMs, () => done("timeout"));
        socket.once("connect", () => done());
        socket.once("error", (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
    });
}

/**
 * The SMTP greeting's last line ("220 mx1.example.org ESMTP"). The timeout covers postscreen's
 * wait before it (6 s for an address it has not seen yet).
 */
export function readGreeting(host: string, port: number, timeoutMs = 20_000): Promise<string> {
    return new Promise((resolve, reject) => {
        const socket = tcpConnect({ host, port });
        let buf = "";
        const timer = setTimeout(() => {
            socket.destroy();
            reject(new Error("timeout waiting for the greeting"));
        }, timeoutMs);
        socket.on("data", (d: Buffer) => {
            buf += d.toString("latin1");
            // A multi-line greeting ("220-..." first) ends with its "220 ..." line: postscreen sends
            // the first line, waits a few seconds for clients that talk too early, then smtpd the last.
            const last = buf.split("\n").find((l) => /^\d{3}(?: |\r?$)/.test(l));
            if (last !== undefined) {
                clearTimeout(timer);
                socket.end("QUIT\r\n");
                resolve(last.trim());
            }
        });
        socket.once("error", (e) => {
            clearTimeout(timer);
            reject(e);
        });
    });
}

export interface CertificateInfo {
    readonly subjectAltNames: string[];
    readonly validTo: Date;
    readonly daysLeft: number;
    /** Chain trusted by this machine's CA store. */
    readonly trusted: boolean;
    readonly trustError?: string;
    /** Undefined when the certificate is valid for the name asked for. */
    readonly nameError?: string;
}

/** The certificate of an implicit-TLS port (443, 465, 993), asked for with SNI `servername`. */
export function tlsCertificate(host: string, port: number, servername: string, now = new Date(), timeoutMs = TIMEOUT_MS): Promise<CertificateInfo> {
    return new Promise((resolve, reject) => {
        const socket = tlsConnect({ host, port, servername, rejectUnauthorized: false, ALPNProtocols: port === 443 ? ["http/1.1"] : undefined });
        socket.setTimeout(timeoutMs, () => {
            socket.destroy();
            reject(new Error("timeout during the TLS handshake"));
        });
        socket.once("secureConnect", () => {
            const cert: PeerCertificate = socket.getPeerCertificate();
            socket.end();
            if (!cert || !cert.valid_to) return reject(new Error("no certificate presented"));
            const validTo = new Date(cert.valid_to);
            const nameError = checkServerIdentity(servername, cert)?.message;
            resolve({
                subjectAltNames: (cert.subjectaltname ?? "").split(/,\s*/).filter(Boolean).map((s) => s.replace(/^DNS:/, "")),
                validTo,
                daysLeft: Math.floor((validTo.getTime() - now.getTime()) / 86_400_000),
                trusted: socket.authorized,
                ...(socket.authorizationError ? { trustError: String(socket.authorizationError) } : {}),
                ...(nameError ? { nameError } : {}),
            });
        });
        socket.once("error", reject);
    });
}

/** GET https://<servername><path> from the address `host` (no redirects followed). */
export function httpsGet(host: string, servername: string, path: string, timeoutMs = TIMEOUT_MS): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
        const req = request({ host, servername, path, method: "GET", headers: { Host: servername }, rejectUnauthorized: false, timeout: timeoutMs }, (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        });
        req.on("timeout", () => req.destroy(new Error("timeout")));
        req.on("error", reject);
        req.end();
    });
}
