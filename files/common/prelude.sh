# Helpers shared by every apply script (components/steps.ts renderApplyScript prepends this file).
# Step scripts rely on: log, mark_changed, changed PATH..., reload SERVICE, restart SERVICE, secret_file NAME.
# Runs under `set -euo pipefail` and `umask 077`.
ISPMAIL_CHANGED_FILES=()
ISPMAIL_ACTIONS=()
ISPMAIL_DIRTY=0
log() { printf '[%s] %s\n' "$ISPMAIL_STEP" "$*" >&2; }
mark_changed() { ISPMAIL_DIRTY=1; }
ispmail_action() { ISPMAIL_ACTIONS+=("$1"); ISPMAIL_DIRTY=1; log "$1"; }
# changed PATH...: did any of these files, or any file below these directories, change in this run?
changed() {
  local want f
  for want in "$@"; do
    for f in "${ISPMAIL_CHANGED_FILES[@]+"${ISPMAIL_CHANGED_FILES[@]}"}"; do
      [[ "$f" == "$want" || "$f" == "${want%/}/"* ]] && return 0
    done
  done
  return 1
}
reload() { systemctl reload-or-restart "$1"; ispmail_action "reloaded $1"; }
restart() { systemctl restart "$1"; ispmail_action "restarted $1"; }
secret_file() { printf '/etc/ispmail/secrets/%s' "$1"; }
# ispmail_debconf < selections: preseed debconf when the wanted selections differ from the last ones set.
ispmail_debconf() {
  local stamp=/var/lib/ispmail/debconf/$ISPMAIL_STEP want
  want=$(cat)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  printf '%s\n' "$want" | debconf-set-selections
  install -d -m 0700 /var/lib/ispmail/debconf
  printf '%s' "$want" > "$stamp"
  ispmail_action "preseeded debconf"
}
ispmail_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n1)" ]; then
    apt-get update -q >&2
  fi
  apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" >&2
  ispmail_action "installed ${missing[*]}"
}
# ispmail_file PATH OWNER GROUP MODE < base64: install only when content, owner or mode differ.
ispmail_file() {
  local path=$1 owner=$2 group=$3 mode=$4 dir tmp
  dir=$(dirname "$path")
  [ -d "$dir" ] || install -d -m 0755 "$dir"
  tmp=$(mktemp "$dir/.ispmail.XXXXXX")
  # The file gets its final owner and mode while still empty; then the content goes in.
  chown "$owner:$group" "$tmp"; chmod "$mode" "$tmp"
  base64 -d > "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" \
     && [ "$(stat -c '%U:%G %a' "$path")" = "$owner:$group $(printf '%o' "0$mode")" ]; then
    rm -f "$tmp"
    return 0
  fi
  mv -f "$tmp" "$path"
  ISPMAIL_CHANGED_FILES+=("$path")
  ISPMAIL_DIRTY=1
  log "wrote $path"
}
ispmail_json_list() {
  local first=1 x
  printf '['
  for x in "$@"; do
    x=${x//\\/\\\\}; x=${x//\"/\\\"}
    [ $first -eq 1 ] || printf ','
    printf '"%s"' "$x"; first=0
  done
  printf ']'
}
ispmail_result() {
  local r=unchanged
  [ "$ISPMAIL_DIRTY" -eq 1 ] && r=changed
  printf 'ispmail-step-result:{"result":"%s","files":%s,"actions":%s}\n' "$r" \
    "$(ispmail_json_list "${ISPMAIL_CHANGED_FILES[@]+"${ISPMAIL_CHANGED_FILES[@]}"}")" \
    "$(ispmail_json_list "${ISPMAIL_ACTIONS[@]+"${ISPMAIL_ACTIONS[@]}"}")"
}
