/**
 * The `base` step: what every later step assumes of the machine. Host name and /etc/hosts, UTC,
 * locale, the data volume at /srv/ispmail, the vmail user owning /var/vmail (a link onto the
 * volume), SSH with keys only, unattended security upgrades, time sync, a persistent, bounded
 * journal, and the cloud metadata service (whose user data carries the SSH host key) for root only.
 * (Postfix's debconf answers belong to the postfix step.)
 *
 * Config files live in files/base/; the script is files/base/data-volume.sh (the data volume, kept
 * apart so that its tests can run it alone) followed by files/base/apply.sh.
 */
import type { Model } from "../config";
import { DATA_DIR } from "../paths";
import type { StepFile } from "../steps";
import { readStatic } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

export { DATA_DIR };
/** The data volume's filesystem label; fstab mounts it by this label. */
export const DATA_VOLUME_LABEL = "ispmail-data";
export const VMAIL_UID = 5000;
/** nftables rules that let only root reach the cloud metadata service (the user data holds the SSH host key). */
export const METADATA_GUARD = "/etc/ispmail/metadata-guard.nft";

/** Tools every step assumes. Service packages are declared by the steps that configure them. */
export const BASE_PACKAGES = [
    "ca-certificates",
    // Locale data and locale-gen; the time zone database behind /etc/localtime.
    "locales",
    "tzdata",
    // mkfs.ext4 and e2label for the data volume (blkid and mount come with util-linux).
    "e2fsprogs",
    // The helper scripts of later steps (ispmail-db, ...) are Python.
    "python3",
    "unattended-upgrades",
    // The metadata guard (files/base/metadata-guard.nft); fail2ban bans through it as well.
    "nftables",
    // Time sync: systemd-timesyncd, unless the image already has another NTP client (installing
    // timesyncd would remove it: they conflict). Alternatives, as in a Depends line.
    "systemd-timesyncd|chrony|ntpsec|openntpd",
] as const;

/** A systemd drop-in that mails the administrator when its unit fails (`<unit>.d/ispmail-alert.conf`). */
export const ALERT_ON_FAILURE = readStatic("base/ispmail-alert.conf");

function file(path: string, content: string, mode = "0644"): StepFile {
    return { path, content, owner: "root", group: "root", mode };
}

function render(model: Model): StepBody {
    return {
        description: "Base system: host name, UTC, locale, data volume, vmail, SSH keys only, security upgrades, time sync, journal",
        packages: BASE_PACKAGES,
        files: [
            file("/etc/hostname", `${model.mailHost}\n`),
            // Debian's Postfix uses /etc/mailname for myorigin; it is the same host.
            file("/etc/mailname", `${model.mailHost}\n`),
            file("/etc/timezone", "Etc/UTC\n"),
            // Debian 13 keeps the system locale in /etc/locale.conf; /etc/default/locale is a
            // symlink to it that systemd-tmpfiles restores at every boot (tmpfiles.d/debian.conf),
            // so writing that path would be undone by each reboot and redone by the next apply.
            file("/etc/locale.conf", "LANG=C.UTF-8\n"),
            file("/etc/ssh/sshd_config.d/00-ispmail.conf", readStatic("base/sshd-ispmail.conf")),
            file("/etc/systemd/journald.conf.d/ispmail.conf", readStatic("base/journald-ispmail.conf")),
            file("/etc/apt/apt.conf.d/20auto-upgrades", readStatic("base/20auto-upgrades")),
            file("/etc/apt/apt.conf.d/52ispmail-unattended-upgrades", readStatic("base/52ispmail-unattended-upgrades")),
            file(METADATA_GUARD, readStatic("base/metadata-guard.nft")),
            file("/etc/systemd/system/ispmail-metadata-guard.service", readStatic("base/ispmail-metadata-guard.service")),
            // Failures mail a person: units name ispmail-alert@ in OnFailure= (ALERT_ON_FAILURE).
            file("/etc/systemd/system/ispmail-alert@.service", readStatic("base/ispmail-alert@.service")),
            file("/usr/local/sbin/ispmail-alert", readStatic("base/ispmail-alert"), "0755"),
        ],
        // mailHost is a validated FQDN (letters, digits, hyphens, dots): safe in single quotes.
        script: [`MAIL_HOST='${model.mailHost}'`, readStatic("base/data-volume.sh"), readStatic("base/apply.sh")].join("\n"),
    };
}

export const base: Service = { name: STEP.base, after: [], render };
