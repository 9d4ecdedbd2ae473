#!/bin/bash
# Builds the lab's guest root file system: a minimal Debian 13 (trixie) like the one Hetzner boots
# from its debian-13 image, with what our steps and the lab's SSH transport assume to be there.
# Service steps install their own packages; nothing mail-specific belongs here.
#
# Usage: build.sh TARGET_DIR MIRROR
# The lab caches the result under .lab/rootfs/<sha256 of this file and the mirror>, so changing the package list
# below (or anything else in this file) rebuilds it.
set -euo pipefail
target=$1
mirror=$2

packages=(
  # boot with real systemd inside systemd-nspawn; networkd configures the static lab address
  systemd-sysv dbus libpam-systemd
  # the deploy transport: the steps arrive as `ssh root@host bash -s`
  openssh-server
  # what a Hetzner debian-13 image has and scripts take for granted
  iproute2 netbase ca-certificates openssl curl gnupg procps less cron logrotate sudo python3
  # a Hetzner debian-13 image boots through cloud-init (host key and root's keys from the user
  # data); the lab's guests can do the same from a NoCloud seed (createGuest with userData) and
  # have it disabled otherwise. About 35 packages with its dependencies (python3-*, dhcpcd-base,
  # fdisk, gdisk, locales); ds-identify needs nothing beyond them and the essential set.
  cloud-init
)

# --variant=minbase: essential + apt only; everything else is listed above on purpose.
mmdebstrap \
  --variant=minbase \
  --components=main \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='truncate -s 0 "$1"/etc/machine-id' \
  trixie "$target" \
  "deb $mirror trixie main" \
  "deb $mirror trixie-updates main" \
  "deb ${mirror%/debian}/debian-security trixie-security main"
