/**
 * The `rspamd` step: Rspamd 3.12 from Debian with Valkey (Debian's Redis) for Bayes and
 * greylisting, the milter on a Unix socket for Postfix, the controller on loopback with a hashed
 * password, and every listed selector's DKIM key (which one signs is the dkim-signer step's
 * business: ./dkim-signer.ts).
 *
 * Config files: files/rspamd/local.d (merged into Rspamd's defaults), lua.local.d (the From-header
 * ownership rules, the sending limit notice), apply.sh (controller password hash, configtest, reload).
 */
import type { Model } from "../config";
import { DATA_DIR, secretPath } from "../paths";
import { dkimKeySecret, RSPAMD_CONTROLLER_SECRET, SPAMHAUS_DQS_SECRET, type SecretSpec } from "../secrets";
import type { StepFile } from "../steps";
import { secretRef } from "../steps";
import { shellAssignments } from "../shell";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

/** DKIM private keys live on the data volume: they are state (their public halves are in DNS). */
export const DKIM_DIR = `${DATA_DIR}/dkim`;
/**
 * The milter listens on a Unix socket inside Postfix's chroot, in a directory only Rspamd (owner)
 * and Postfix (group) can enter. Not on TCP loopback: there every message waited ~40 ms more
 * between Postfix and Rspamd than over the socket (one SMTP session sending ~2 KB messages one after
 * the other: 17.7-17.9 msg/s over localhost:11332, 59.7-69.4 msg/s over the socket, Rspamd's own
 * CPU ~6 ms per message in both), so every SMTP session was paced by that wait.
 */
const POSTFIX_CHROOT = "/var/spool/postfix";
export const MILTER_SOCKET_DIR = `${POSTFIX_CHROOT}/rspamd`;
export const MILTER_SOCKET = `${MILTER_SOCKET_DIR}/milter.sock`;
/** The same socket as Postfix's chrooted smtpd and cleanup name it (main.cf smtpd_milters). */
export const MILTER_ADDRESS = `unix:${MILTER_SOCKET.slice(POSTFIX_CHROOT.length)}`;

export const dkimKeyPath = (selector: string) => `${DKIM_DIR}/${selector}.key`;

export const RBL_CONF = "/etc/rspamd/local.d/rbl.conf";
const PROXY_CONF = "/etc/rspamd/local.d/worker-proxy.inc";

/** local.d files copied as they are. */
const LOCAL_D = [
    "worker-normal.inc",
    "worker-controller.inc",
    "redis.conf",
    "classifier-bayes.conf",
    "greylist.conf",
    "actions.conf",
    "milter_headers.conf",
    "options.inc",
    "headers_group.conf",
] as const;

function render(model: Model): StepBody {
    // The sending limit, and how often a full hour bucket frees one message (for the texts).
    const sendLimitView = { ...model.mailPolicy.sendLimit, hourSeconds: Math.round(3600 / model.mailPolicy.sendLimit.perHour) };
    const files: StepFile[] = [
        ...LOCAL_D.map((name) => ({ path: `/etc/rspamd/local.d/${name}`, content: readStatic(`rspamd/local.d/${name}`), mode: "0644" })),
        { path: PROXY_CONF, content: renderTemplate("rspamd/local.d/worker-proxy.inc.mustache", { milterSocket: MILTER_SOCKET }), mode: "0644" },
        { path: "/etc/rspamd/local.d/dmarc.conf", content: renderTemplate("rspamd/local.d/dmarc.conf.mustache", { enforceDmarc: model.mailPolicy.enforceDmarc }), mode: "0644" },
        // With a DQS key the file holds it: then readable by Rspamd only.
        model.spamhausDqs
            ? { path: RBL_CONF, content: renderTemplate("rspamd/local.d/rbl.conf.mustache", { dqsKey: secretRef(SPAMHAUS_DQS_SECRET) }), owner: "root", group: "_rspamd", mode: "0640", secret: true }
            : { path: RBL_CONF, content: renderTemplate("rspamd/local.d/rbl.conf.mustache", { dqsKey: "" }), mode: "0644" },
        {
            path: "/etc/rspamd/local.d/ratelimit.conf",
            content: renderTemplate("rspamd/local.d/ratelimit.conf.mustache", sendLimitView),
            mode: "0644",
        },
        { path: "/etc/rspamd/lua.local.d/ispmail_from_header.lua", content: readStatic("rspamd/lua.local.d/ispmail_from_header.lua"), mode: "0644" },
        {
            path: "/etc/rspamd/lua.local.d/ispmail_ratelimit_notice.lua",
            content: renderTemplate("rspamd/lua.local.d/ispmail_ratelimit_notice.lua.mustache", { mailHost: model.mailHost, ...sendLimitView }),
            mode: "0644",
        },
        // Every selector's key stays installed (rotation switches the signer), readable by Rspamd
        // only; sorted, so that reordering the list (the rotation's switch) changes only the signer.
        ...[...model.dkimSelectors].sort().map((s) => ({ path: dkimKeyPath(s), content: secretRef(dkimKeySecret(s)), owner: "_rspamd", group: "_rspamd", mode: "0600", secret: true })),
        { path: secretPath(RSPAMD_CONTROLLER_SECRET), content: secretRef(RSPAMD_CONTROLLER_SECRET), mode: "0600", secret: true },
    ];
    return {
        description: "Rspamd: spam filter milter, Bayes/greylisting in Valkey, the DKIM keys, controller on loopback",
        packages: ["rspamd", "valkey-server"],
        files,
        script: [shellAssignments({ DKIM_DIR, CONTROLLER_SECRET: secretPath(RSPAMD_CONTROLLER_SECRET), MILTER_SOCKET_DIR, MILTER_SOCKET, PROXY_CONF }), readStatic("rspamd/apply.sh")].join("\n"),
    };
}

const secrets = (model: Model): SecretSpec[] => [
    { name: RSPAMD_CONTROLLER_SECRET, kind: "password", description: "Rspamd controller (web UI) password", stateful: false },
    ...model.dkimSelectors.map((s): SecretSpec => ({ name: dkimKeySecret(s), kind: "dkim-rsa2048", description: `DKIM key for selector ${s}`, stateful: true })),
];

export const rspamd: Service = { name: STEP.rspamd, after: [STEP.base, STEP.resolver], secrets, render };
