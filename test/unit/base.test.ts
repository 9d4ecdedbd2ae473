/**
 * The base step: what it renders (pure), and the data-volume logic (files/base/data-volume.sh) run
 * for real against loop devices in a private mount namespace: format only a blank volume, mount by
 * label through fstab, never touch a filesystem that is not ours, leave an existing mountpoint.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { renderApplyScript } from "../../components/steps";
import { FILES_DIR } from "../../components/templates";
import { fixtureModel } from "../fixtures/config";
import { SERVICE, stepsOf } from "../../components/services";
import { needsRoot } from "../harness/needs";

const model = fixtureModel();
const [base] = stepsOf(SERVICE.base, model);
const fileAt = (path: string) => {
    const f = base.files.find((x) => x.path === path);
    assert.ok(f, `base step has no file ${path}`);
    return f;
};
/** `Keyword value` lines of an sshd/journald-style file, comments and sections dropped. */
const settings = (text: string, separator: RegExp) =>
    new Map(
        text
            .split("\n")
            .map((l) => l.trim())
            .filter((l) => l && !l.startsWith("#") && !l.startsWith("["))
            .map((l) => {
                const [k, ...v] = l.split(separator);
                return [k, v.join(" ")] as [string, string];
            }),
    );

describe("base: rendering", () => {
    it("base: runs first; Postfix's debconf answers come from the postfix step alone, before it installs Postfix", () => {
        assert.equal(base.name, "base");
        assert.deepEqual(base.after, []);
        assert.equal(base.debconf, undefined, "base answers no package's questions");
        const [postfix] = stepsOf(SERVICE.postfix, model);
        assert.deepEqual(postfix.debconf, ["postfix postfix/main_mailer_type select No configuration", "postfix postfix/mailname string mx1.example.org"]);
        // The apply script preseeds before it installs anything.
        const script = renderApplyScript(postfix);
        assert.ok(script.indexOf("ispmail_debconf") < script.indexOf("ispmail_packages "), "debconf before packages");
    });

    it("base: the metadata guard lets only root reach 169.254.169.254, in a table of its own, loaded at boot", () => {
        const nft = fileAt("/etc/ispmail/metadata-guard.nft").content;
        assert.match(nft, /^table inet ispmail_metadata \{$/m);
        assert.match(nft, /ip daddr 169\.254\.169\.254 meta skuid != 0 .*reject/);
        assert.doesNotMatch(nft, /flush ruleset/, "must not flush fail2ban's tables");
        const unit = fileAt("/etc/systemd/system/ispmail-metadata-guard.service").content;
        assert.match(unit, /^Before=network-pre\.target$/m);
        assert.match(unit, /^WantedBy=sysinit\.target$/m);
        assert.ok(base.packages?.includes("nftables"));
        assert.match(base.script, /nft -c -f \/etc\/ispmail\/metadata-guard\.nft/);
    });

    it("base: host name, mailname, UTC and locale files carry mailHost and the chosen values", () => {
        assert.equal(fileAt("/etc/hostname").content, "mx1.example.org\n");
        assert.equal(fileAt("/etc/mailname").content, "mx1.example.org\n");
        assert.equal(fileAt("/etc/timezone").content, "Etc/UTC\n");
        assert.equal(fileAt("/etc/locale.conf").content, "LANG=C.UTF-8\n");
        assert.ok(!base.files.some((f) => f.path === "/etc/default/locale"), "Debian 13's /etc/default/locale is a symlink made at boot, not a file to write");
        assert.match(base.script, /ln -sfn \.\.\/locale\.conf \/etc\/default\/locale/);
        assert.match(base.script, /^MAIL_HOST='mx1\.example\.org'$/m);
    });

    it("ssh: the drop-in allows keys only and is read before cloud-init's", () => {
        const f = fileAt("/etc/ssh/sshd_config.d/00-ispmail.conf");
        // sshd takes the first value per keyword; files are read in name order, so ours must sort
        // before the drop-in cloud-init writes on Hetzner's Debian images.
        assert.ok(basename(f.path) < "50-cloud-init.conf", `${basename(f.path)} is read after 50-cloud-init.conf`);
        const s = settings(f.content, /\s+/);
        assert.equal(s.get("PasswordAuthentication"), "no");
        assert.equal(s.get("KbdInteractiveAuthentication"), "no");
        assert.equal(s.get("PermitRootLogin"), "prohibit-password");
        assert.equal(s.size, 3);
        // Reloaded only when it changed, and only after sshd -t accepted it.
        const script = base.script;
        assert.match(script, /if changed "\$SSHD_DROPIN"/);
        assert.ok(script.indexOf("sshd -t") < script.indexOf("reload ssh"));
    });

    it("journal: persistent and bounded", () => {
        const s = settings(fileAt("/etc/systemd/journald.conf.d/ispmail.conf").content, /=/);
        assert.equal(s.get("Storage"), "persistent");
        assert.match(s.get("SystemMaxUse") ?? "", /^[0-9]+[MG]$/);
    });

    it("upgrades: unattended-upgrades runs daily and takes security updates only", () => {
        assert.match(fileAt("/etc/apt/apt.conf.d/20auto-upgrades").content, /APT::Periodic::Unattended-Upgrade "1";/);
        const u = fileAt("/etc/apt/apt.conf.d/52ispmail-unattended-upgrades").content;
        assert.match(u, /^#clear Unattended-Upgrade::Origins-Pattern;$/m);
        const origins = [...u.matchAll(/^\s*"(origin=[^"]+)";$/gm)].map((m) => m[1]);
        assert.deepEqual(origins, ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"]);
    });

    it("alerts: installs ispmail-alert@.service and the ispmail-alert script (0755) it runs with the failed unit's name", () => {
        const unit = fileAt("/etc/systemd/system/ispmail-alert@.service");
        assert.equal(unit.mode, "0644");
        assert.match(unit.content, /^Type=oneshot$/m);
        // %i, not %I: the instance is the failed unit's name as OnFailure=ispmail-alert@%n.service gives it.
        assert.match(unit.content, /^ExecStart=\/usr\/local\/sbin\/ispmail-alert %i$/m);
        const script = fileAt("/usr/local/sbin/ispmail-alert");
        assert.deepEqual([script.owner, script.group, script.mode], ["root", "root", "0755"]);
        assert.equal(script.content, readFileSync(join(FILES_DIR, "base", "ispmail-alert"), "utf8"));
        assert.match(base.script, /^daemon_reload_when_changed \/etc\/systemd\/system\/ispmail-alert@\.service /m);
    });

    it("alerts: ispmail-alert is valid sh and mails root the unit's status and last log lines", () => {
        const path = join(FILES_DIR, "base", "ispmail-alert");
        const source = readFileSync(path, "utf8");
        const syntax = spawnSync("sh", ["-n", path], { encoding: "utf8" });
        assert.equal(syntax.status, 0, syntax.stderr);

        const dir = mkdtempSync(join(tmpdir(), "ispmail-alert-"));
        try {
            const bin = join(dir, "bin");
            mkdirSync(bin);
            const stub = (name: string, body: string) => writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
            stub("hostname", 'if [ "$1" = --fqdn ]; then echo mx1.example.org; else echo mx1; fi');
            stub("date", "echo 2026-11-28 03:00 UTC");
            stub("systemctl", `echo "$*" >> ${dir}/systemctl.args\necho "x ispmail-backup.service - stub status"\necho "     Active: failed (Result: exit-code)"\nexit 3`);
            stub("journalctl", `echo "$*" >> ${dir}/journalctl.args\necho "2026-11-28T03:00:01+00:00 mx1 ispmail-backup[42]: stub journal line one"\necho "2026-11-28T03:00:02+00:00 mx1 ispmail-backup[42]: stub journal line two"`);
            stub("sendmail", `echo "$*" > ${dir}/sendmail.args\ncat > ${dir}/message`);
            // The script calls /usr/sbin/sendmail by its absolute path: the copy calls the stub.
            assert.ok(source.includes("| /usr/sbin/sendmail "), "the script pipes into /usr/sbin/sendmail");
            writeFileSync(join(dir, "ispmail-alert"), source.replaceAll("/usr/sbin/sendmail", join(bin, "sendmail")));

            const r = spawnSync("sh", [join(dir, "ispmail-alert"), "ispmail-backup.service"], { encoding: "utf8", env: { PATH: `${bin}:/usr/bin:/bin` }, timeout: 10_000 });
            assert.equal(r.status, 0, r.stderr);
            const message = readFileSync(join(dir, "message"), "utf8");
            const [head, ...body] = message.split("\n\n");
            const headers = head.split("\n");
            assert.ok(headers.includes("Subject: [mx1.example.org] ispmail-backup.service failed"), head);
            assert.ok(headers.includes("To: root"), head);
            assert.ok(headers.includes("Auto-Submitted: auto-generated"), head);
            assert.ok(headers.includes("From: ispmail on mx1.example.org <root@mx1.example.org>"), head);
            const text = body.join("\n\n");
            assert.match(text, /^ispmail-backup\.service failed on mx1\.example\.org at 2026-11-28 03:00 UTC\.$/m);
            assert.match(text, /^ {5}Active: failed \(Result: exit-code\)$/m, "systemctl status (exit 3 for a failed unit) is in the message");
            assert.match(text, /^2026-11-28T03:00:01\+00:00 mx1 ispmail-backup\[42\]: stub journal line one\n2026-11-28T03:00:02\+00:00 mx1 ispmail-backup\[42\]: stub journal line two$/m);
            assert.equal(readFileSync(join(dir, "sendmail.args"), "utf8"), "-t -i -f root@mx1.example.org\n");
            assert.match(readFileSync(join(dir, "systemctl.args"), "utf8"), / ispmail-backup\.service$/m);
            assert.match(readFileSync(join(dir, "journalctl.args"), "utf8"), /--unit=ispmail-backup\.service$/m);
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    it("base: installs the tools later steps assume, and the vmail user is 5000:5000 on the volume", () => {
        for (const p of ["ca-certificates", "python3", "locales", "e2fsprogs", "unattended-upgrades"]) assert.ok(base.packages?.includes(p), p);
        assert.match(base.script, /groupadd --gid 5000 vmail/);
        assert.match(base.script, /useradd --uid 5000 --gid vmail --home-dir \/var\/vmail/);
        assert.match(base.script, /ln -s "\$DATA_DIR\/vmail" \/var\/vmail/);
    });
});

// ---------------------------------------------------------------------------------------------
// The data volume, for real.
// ---------------------------------------------------------------------------------------------
const volumeSkip =
    needsRoot("loop devices and a private mount namespace") ?? (existsSync("/dev/loop-control") ? undefined : "no loop device support: /dev/loop-control is missing (modprobe loop)");

describe("base: data volume", { skip: volumeSkip }, () => {
    const label = `ispmail-t${randomBytes(3).toString("hex")}`;
    let work = "";
    const loops: string[] = [];

    /** A fresh 16 MiB loop device, optionally with a filesystem; linked as <work>/by-id/<name>. */
    const newDevice = (name: string, mkfs?: string[]): string => {
        const image = join(work, `${name}.img`);
        writeFileSync(image, Buffer.alloc(0));
        assert.equal(spawnSync("truncate", ["-s", "16M", image]).status, 0);
        const r = spawnSync("losetup", ["-f", "--show", image], { encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
        const loop = r.stdout.trim();
        loops.push(loop);
        if (mkfs) assert.equal(spawnSync(mkfs[0], [...mkfs.slice(1), loop]).status, 0);
        mkdirSync(join(work, "by-id"), { recursive: true });
        symlinkSync(loop, join(work, "by-id", name));
        return loop;
    };

    /** Runs ensure_data_volume in its own mount namespace; the mount (if any) vanishes with it. */
    const ensure = (opts: { premount?: boolean; check?: string } = {}) => {
        const mountpoint = join(work, "mnt");
        const script = [
            "set -euo pipefail",
            "ISPMAIL_STEP=test",
            readFileSync(join(FILES_DIR, "common", "prelude.sh"), "utf8"),
            readFileSync(join(FILES_DIR, "base", "data-volume.sh"), "utf8"),
            opts.premount ? `mkdir -p ${mountpoint} && mount -t tmpfs lab-bind ${mountpoint}` : "",
            `ensure_data_volume ${mountpoint} ${label} '${work}/by-id/scsi-0HC_Volume_*' ${work}/fstab`,
            'printf "ACTION %s\\n" "${ISPMAIL_ACTIONS[@]+"${ISPMAIL_ACTIONS[@]}"}"',
            opts.check ?? "",
        ].join("\n");
        const r = spawnSync("unshare", ["-m", "--propagation", "private", "bash", "-s"], { input: script, encoding: "utf8", timeout: 60_000 });
        const actions = r.stdout.split("\n").filter((l) => l.startsWith("ACTION ") && l.length > 7).map((l) => l.slice(7));
        return { code: r.status, actions, stdout: r.stdout, stderr: r.stderr };
    };

    before(() => {
        work = mkdtempSync(join(tmpdir(), "ispmail-volume-"));
        writeFileSync(join(work, "fstab"), "# test fstab\nUUID=1234 / ext4 defaults 0 1\n");
    });
    after(() => {
        for (const l of loops) spawnSync("losetup", ["-d", l]);
        rmSync(work, { recursive: true, force: true });
    });

    it("volume: an existing mountpoint (the lab's bind mount) is left alone", () => {
        const r = ensure({ premount: true });
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(r.actions, []);
        assert.equal(readFileSync(join(work, "fstab"), "utf8"), "# test fstab\nUUID=1234 / ext4 defaults 0 1\n");
    });

    it("volume: no volume attached is an error that says so", () => {
        const r = ensure();
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /not exactly one device matching/);
    });

    it("volume: a foreign filesystem is never formatted", () => {
        newDevice("scsi-0HC_Volume_1", ["mkfs.ext2", "-q", "-L", "somethingelse"]);
        const r = ensure();
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /holds a ext2 filesystem not labelled/);
        spawnSync("losetup", ["-d", loops.pop()!]);
        rmSync(join(work, "by-id", "scsi-0HC_Volume_1"));
    });

    it("volume: a blank volume is formatted once, added to fstab by label and mounted; data survives re-runs", () => {
        const loop = newDevice("scsi-0HC_Volume_2");
        const first = ensure({ check: `echo keep > ${work}/mnt/marker` });
        assert.equal(first.code, 0, first.stderr);
        assert.ok(first.actions.some((a) => a.startsWith(`formatted the blank data volume ${loop}`)), first.actions.join("\n"));
        assert.ok(first.actions.includes(`mounted the data volume on ${work}/mnt`));
        const fstab = readFileSync(join(work, "fstab"), "utf8");
        assert.match(fstab, new RegExp(`^LABEL=${label} ${work}/mnt ext4 defaults,nofail,noatime 0 2$`, "m"));
        assert.match(fstab, /^UUID=1234 \/ ext4 defaults 0 1$/m, "other fstab lines stay");

        // Next boot / next run: the label is found, nothing is formatted, the marker is still there.
        const second = ensure({ check: `cat ${work}/mnt/marker` });
        assert.equal(second.code, 0, second.stderr);
        assert.deepEqual(second.actions, [`mounted the data volume on ${work}/mnt`]);
        assert.match(second.stdout, /^keep$/m);
        assert.equal(readFileSync(join(work, "fstab"), "utf8"), fstab, "fstab unchanged");
    });
});
