# ensure_data_volume MOUNTPOINT LABEL DEVICE_GLOB FSTAB
#
# Puts the data volume (mail, database, backups, DKIM keys) at MOUNTPOINT, mounted by filesystem
# LABEL through FSTAB, and never destroys data:
#   - MOUNTPOINT already a mountpoint (the lab bind-mounts a host directory there; a re-run): left alone;
#   - a filesystem labelled LABEL exists: only the fstab line and the mount are ensured;
#   - otherwise exactly one device must match DEVICE_GLOB (Hetzner: /dev/disk/by-id/scsi-0HC_Volume_*):
#     blank (blkid finds no filesystem) -> mkfs.ext4 -L LABEL; an unlabelled ext4 -> labelled;
#     anything else -> stop and say why.
# Uses the prelude's log and ispmail_action.
ensure_data_volume() {
  local mountpoint=$1 label=$2 device_glob=$3 fstab=$4 device candidates fstype
  if mountpoint -q "$mountpoint"; then
    return 0
  fi
  device=$(blkid -L "$label" 2>/dev/null || true)
  if [ -z "$device" ]; then
    # shellcheck disable=SC2206 # the glob is meant to expand
    candidates=($device_glob)
    if [ ${#candidates[@]} -ne 1 ] || [ ! -e "${candidates[0]}" ]; then
      log "no filesystem labelled $label and not exactly one device matching $device_glob (found: ${candidates[*]}); attach the data volume"
      return 1
    fi
    device=$(readlink -f "${candidates[0]}")
    # blkid -p probes the device itself (no cache); exit status 2 means "nothing found".
    fstype=$(blkid -p -s TYPE -o value "$device" 2>/dev/null || true)
    if [ -z "$fstype" ]; then
      if [ -n "$(blkid -p -o value "$device" 2>/dev/null || true)" ]; then
        log "$device carries something blkid recognises but no filesystem (a partition table?); refusing to format it"
        return 1
      fi
      mkfs.ext4 -q -L "$label" "$device"
      ispmail_action "formatted the blank data volume $device as ext4 ($label)"
    elif [ "$fstype" = ext4 ] && [ -z "$(blkid -p -s LABEL -o value "$device" 2>/dev/null || true)" ]; then
      e2label "$device" "$label"
      ispmail_action "labelled the existing ext4 filesystem on $device as $label"
    else
      log "$device holds a $fstype filesystem not labelled $label; refusing to touch it (label it $label if it is the data volume)"
      return 1
    fi
  fi
  # nofail: a missing volume must not stop the machine from booting (and SSH from coming up).
  local line="LABEL=$label $mountpoint ext4 defaults,nofail,noatime 0 2"
  if ! grep -qxF "$line" "$fstab"; then
    local tmp
    tmp=$(mktemp "$fstab.ispmail.XXXXXX")
    awk -v mp="$mountpoint" '$2 != mp' "$fstab" > "$tmp"
    printf '%s\n' "$line" >> "$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$fstab"
    ispmail_action "added $mountpoint (LABEL=$label) to $fstab"
    # systemd generates mount units from /etc/fstab; let it see the new line before the mount (a
    # unit generated from a replaced line would name another device).
    if [ "$fstab" = /etc/fstab ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi # own reload: before the mount
  fi
  install -d -m 0755 "$mountpoint"
  mount -T "$fstab" "$mountpoint"
  ispmail_action "mounted the data volume on $mountpoint"
}
