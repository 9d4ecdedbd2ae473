# Helpers shared by every apply script (components/steps.ts renderApplyScript prepends this file).
# Step scripts rely on: log, mark_changed, changed PATH..., reload SERVICE, restart SERVICE, is_active UNIT,
# ensure_enabled UNIT..., enabled_now UNIT, reload_when_changed SERVICE PATH... [-- CHECK...],
# mark_pending SERVICE, secret_file NAME, step_input NAME.
# Runs under `set -euo pipefail` and `umask 077`, after ISPMAIL_STEP, ISPMAIL_SECRETS_DIR and
# ISPMAIL_STATE_DIR are set (components/steps.ts, from components/paths.ts).
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
reload() { systemctl reload-or-restart "$1"; ISPMAIL_ACTIVE[$1]=active; ispmail_action "reloaded $1"; }
restart() { systemctl restart "$1"; ISPMAIL_ACTIVE[$1]=active; ispmail_action "restarted $1"; }
# is_active UNIT: is it running (active, or reloading)? The first question of a step asks systemd
# about the units given to ensure_enabled too, in one `systemctl is-active` (a line per unit, in
# order), and the step's own restart and reload keep the answers current: each systemctl is ~20 ms
# of a small server's CPU, and a no-op apply of every step asked 15 times.
declare -A ISPMAIL_ACTIVE=()
ISPMAIL_UNITS=()
is_active() {
  if [ -z "${ISPMAIL_ACTIVE[$1]+x}" ]; then
    local units=("$1") states=() u i
    for u in "${ISPMAIL_UNITS[@]+"${ISPMAIL_UNITS[@]}"}"; do
      [ -n "${ISPMAIL_ACTIVE[$u]+x}" ] || [ "$u" = "$1" ] || units+=("$u")
    done
    mapfile -t states < <(systemctl is-active -- "${units[@]}" 2>/dev/null)
    # Lines that do not pair up (systemd unreachable): this unit alone, unremembered.
    [ ${#states[@]} -eq ${#units[@]} ] || { systemctl is-active --quiet "$1"; return; }
    for i in "${!units[@]}"; do ISPMAIL_ACTIVE[${units[i]}]=${states[i]}; done
  fi
  case ${ISPMAIL_ACTIVE[$1]} in active | reloading | refreshing) return 0 ;; esac
  return 1
}
# started_before UNIT PATH...: did UNIT's running process start before one of the files last changed
# (so it may still run with their old content)? For a file the packages step writes before its
# packages, whose postinst then starts the daemon with it: on a fresh server the step need not
# restart it, and when the packages step rewrites the file later, this says so. Whole seconds from
# systemd: a change in the second the process started counts as after it (a restart too many at
# worst). Not running, or no start time: yes.
started_before() {
  local unit=$1 since mtime
  shift
  since=$(systemctl show -P ExecMainStartTimestamp --timestamp=unix -- "$unit" 2>/dev/null) || return 0
  since=${since#@}
  [[ "$since" =~ ^[0-9]+$ ]] || return 0
  for mtime in $(stat -c %Y -- "$@"); do
    [ "$mtime" -lt "$since" ] || return 0
  done
  return 1
}
secret_file() { printf '%s/%s' "$ISPMAIL_SECRETS_DIR" "$1"; }
# ispmail_input NAME < base64: keeps a step input in a variable (never in a file); step_input NAME
# prints it, through a pipe (printf is a builtin: no temporary file either).
declare -A ISPMAIL_INPUTS=()
ispmail_input() { ISPMAIL_INPUTS[$1]=$(cat); }
step_input() { printf '%s\n' "${ISPMAIL_INPUTS[$1]}" | base64 -d; }
# A changed configuration is remembered on disk until its daemon has reloaded it, so a run that
# failed after installing the files still reloads on the next one (which sees no file change).
mark_pending() { install -d -m 0700 "$ISPMAIL_STATE_DIR/pending-reload"; touch "$ISPMAIL_STATE_DIR/pending-reload/$1"; }
# reload_when_changed SERVICE PATH... [-- CHECK...]: when any PATH changed in this run or a reload
# is pending, run CHECK (a configuration the daemon finds broken never replaces the running one:
# under `set -e` a failing check ends the step) and reload SERVICE; otherwise start it if it is
# not running. Without a change and with the daemon up it does nothing.
# restart_when_changed: the same with a restart, for what a daemon takes in only when it starts.
reload_when_changed() { ispmail_when_changed reload "$@"; }
restart_when_changed() { ispmail_when_changed restart "$@"; }
ispmail_when_changed() {
  local action=$1 service=$2 paths=() marker
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do paths+=("$1"); shift; done
  [ $# -eq 0 ] || shift
  marker=$ISPMAIL_STATE_DIR/pending-reload/$service
  if [ ${#paths[@]} -gt 0 ] && changed "${paths[@]}"; then mark_pending "$service"; fi
  if [ -e "$marker" ]; then
    [ $# -eq 0 ] || "$@"
    "$action" "$service"
    rm -f "$marker"
  elif ! is_active "$service"; then
    restart "$service"
  fi
}
# ensure_enabled UNIT...: enables the units that are not enabled yet, as symlinks only
# (--no-reload); daemon_reload_when_changed then reloads systemd once for the whole step. A plain
# `systemctl enable` reloads the manager itself (~0.4 s of PID 1 on a small server), so a step that
# wrote a unit and enabled it reloaded twice. One is-enabled asks for all of them: its exit status
# says whether ANY is enabled, its lines (one per unit, in order) say which.
ISPMAIL_UNITS_ENABLED=0
declare -A ISPMAIL_ENABLED_NOW=()
ensure_enabled() {
  local units=("$@") states=() i
  ISPMAIL_UNITS+=("$@")
  mapfile -t states < <(systemctl is-enabled "$@" 2>/dev/null)
  # A unit systemctl cannot find prints no line: then the lines do not pair up, so ask one by one.
  [ ${#states[@]} -eq ${#units[@]} ] || states=()
  for i in "${!units[@]}"; do
    case ${states[i]:-$(systemctl is-enabled "${units[i]}" 2>/dev/null || true)} in
      enabled | enabled-runtime | static | indirect | generated | alias) continue ;;
    esac
    systemctl enable --quiet --no-reload "${units[i]}"
    ispmail_action "enabled ${units[i]}"
    ISPMAIL_ENABLED_NOW[${units[i]}]=1
    ISPMAIL_UNITS_ENABLED=1
  done
}
# enabled_now UNIT: did ensure_enabled enable UNIT in this run (so it may need a first start)?
enabled_now() { [ -n "${ISPMAIL_ENABLED_NOW[$1]+x}" ]; }
# daemon_reload_when_changed PATH...: one `systemctl daemon-reload` when a unit file or drop-in among
# the PATHs changed in this run or ensure_enabled enabled a unit, before the step (re)starts them.
daemon_reload_when_changed() {
  if [ $ISPMAIL_UNITS_ENABLED = 1 ] || changed "$@"; then
    systemctl daemon-reload
    ISPMAIL_UNITS_ENABLED=0
    mark_changed
  fi
}
# ispmail_debconf < selections: preseed debconf when the wanted selections differ from the last ones set.
# The packages step sets every step's answers first (components/services/packages.ts refuses two
# different answers to one question), so a step whose lines are all in the packages step's stamp
# has nothing to set: debconf-set-selections is Perl under the apt lock, a second or two on a
# fresh server.
ispmail_debconf() {
  local dir=$ISPMAIL_STATE_DIR/debconf stamp want have=
  stamp=$dir/$ISPMAIL_STEP
  # `read -d ''` takes all of it without a fork (as $(cat) would, less the trailing newlines).
  IFS= read -r -d '' want || true
  while [[ "$want" == *$'\n' ]]; do want=${want%$'\n'}; done
  [ -f "$stamp" ] && { IFS= read -r -d '' have < "$stamp" || true; } && [ "$have" = "$want" ] && return 0
  install -d -m 0700 "$dir"
  if [ "$ISPMAIL_STEP" != packages ] && [ -f "$dir/packages" ] && ! grep -qvxF -f "$dir/packages" <<< "$want"; then
    printf '%s' "$want" > "$stamp"
    return 0
  fi
  printf '%s\n' "$want" | ispmail_apt_locked debconf-set-selections
  printf '%s' "$want" > "$stamp"
  ispmail_action "preseeded debconf"
}
# Package operations of steps that run at the same time (`pulumi up` starts independent steps at
# once) wait for each other on one lock, and apt itself waits for apt-daily/unattended-upgrades
# (DPkg::Lock::Timeout) instead of failing at once on a held lock. debconf's database is behind the
# same lock: debconf-set-selections fails while a package's postinst holds it.
ISPMAIL_APT_LOCK=/run/lock/ispmail-apt.lock
ispmail_apt_locked() { flock -w 1800 "$ISPMAIL_APT_LOCK" "$@"; }
ispmail_apt_get() { ispmail_apt_locked apt-get -o DPkg::Lock::Timeout=900 "$@"; }
# `apt-get update` cannot wait for the lists lock (DPkg::Lock::Timeout covers dpkg's locks only):
# apt-daily's own update holds it for a while after boot, so retry for up to two minutes.
ispmail_apt_update() {
  local try
  for try in 1 2 3 4 5 6 7 8 9 10 11 12; do
    ispmail_apt_get update -q >&2 && return 0
    log "apt-get update failed (try $try; the lists lock may be held by apt-daily), retrying in 10 s"
    sleep 10
  done
  ispmail_apt_get update -q >&2
}
# ispmail_packages ENTRY...: installs what is missing, in one apt run. An ENTRY is a package or
# alternatives `a|b|c` (any one of them will do; `a` is installed when none is). One dpkg-query for
# all of them: a no-op apply of every step asks dpkg once per step, not once per package.
# dpkg rewrites its status file whenever a package is installed, removed or reconfigured, so a stamp
# of the same list written after they were all found installed, and newer than that file, answers
# without dpkg-query (25 ms of a small server's CPU per step, every apply).
ispmail_packages() {
  local missing=() entry alt ok line stamp=$ISPMAIL_STATE_DIR/packages/$ISPMAIL_STEP
  local -A installed=()
  if [ "$stamp" -nt /var/lib/dpkg/status ] && IFS= read -r line < "$stamp" && [ "$line" = "$*" ]; then return 0; fi
  while IFS= read -r line; do
    # "ii  name": wanted install (or hold), status installed: the first two letters of
    # db:Status-Abbrev, as `dpkg -l` shows them.
    if [[ "$line" == [ih]i* ]]; then installed[${line##* }]=1; fi
  done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' ${*//|/ } 2>/dev/null)
  for entry in "$@"; do
    ok=0
    for alt in ${entry//|/ }; do if [ -n "${installed[$alt]+x}" ]; then ok=1; fi; done
    [ $ok -eq 1 ] || missing+=("${entry%%|*}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n1)" ]; then
      ispmail_apt_update
    fi
    ispmail_apt_get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" >&2
    ispmail_action "installed ${missing[*]}"
  fi
  [ -d "${stamp%/*}" ] || install -d -m 0700 "${stamp%/*}"
  printf '%s\n' "$*" > "$stamp"
}
# ispmail_files_check < "SHA256 OWNER:GROUP MODE PATH" lines: which of the files that follow are
# already as wanted, with one stat and one sha256sum for all of them (a no-op apply checks some 120
# files; two forks per file were a large part of its time).
declare -A ISPMAIL_FILE_OK=()
ispmail_files_check() {
  local sum attrs mode path
  local -a paths=()
  local -A want=() have=()
  while read -r sum attrs mode path; do want[$path]="$sum $attrs $mode"; paths+=("$path"); done
  [ ${#paths[@]} -gt 0 ] || return 0
  # Missing files are simply absent from both listings (their errors dropped).
  # (A process substitution's status is never checked, and a plain command in it is exec'd in the
  # substitution's own process: `|| true` there cost one fork more each.)
  while read -r attrs mode path; do have[$path]="$attrs $mode"; done < <(stat -c '%U:%G %a %n' -- "${paths[@]}" 2>/dev/null)
  while read -r sum path; do
    if [ -n "${have[$path]+x}" ] && [ "${want[$path]}" = "$sum ${have[$path]}" ]; then ISPMAIL_FILE_OK[$path]=1; fi
  done < <(sha256sum -- "${paths[@]}" 2>/dev/null)
}
# ispmail_file PATH OWNER GROUP MODE < base64: install only when content, owner or mode differ.
ispmail_file() {
  local path=$1 owner=$2 group=$3 mode=$4 want dir tmp created_mask
  # Found as wanted by ispmail_files_check just before: nothing to read or compare. Once only, so
  # that a second ispmail_file of the same path in a script takes the careful path.
  if [ -n "${ISPMAIL_FILE_OK[$path]+x}" ]; then unset "ISPMAIL_FILE_OK[$path]"; return 0; fi
  # Not found as wanted: decide by the decoded content itself.
  printf -v want '%s:%s %o' "$owner" "$group" "$((8#$mode))"
  dir=${path%/*}; dir=${dir:-/}
  [ -d "$dir" ] || install -d -m 0755 "$dir"
  # The temporary file is created here, by the shell, under a fresh name (noclobber: never an
  # existing one) and with its final mode through the umask when that mode has no execute bit:
  # mktemp and chmod were a fork each for every file (~120 on a fresh server, ~10 ms each there).
  # It gets its final owner and mode while still empty; then the content goes in.
  if (( 8#$mode & 0111 )); then created_mask=077; else printf -v created_mask '%03o' $(( 0777 & ~8#$mode )); fi
  until tmp=$dir/.ispmail.$BASHPID.$SRANDOM; { set -C; umask "$created_mask"; : > "$tmp"; } 2>/dev/null; do
    set +C; umask 077
    [ -e "$tmp" ] || { echo "cannot create a file in $dir" >&2; return 1; }
  done
  set +C; umask 077
  # Its group is the directory's if that is setgid: a fork each only for what differs, and most
  # files are root's.
  if [ "$owner:$group" != root:root ] || [ -g "$dir" ]; then chown "$owner:$group" "$tmp"; fi
  # (An execute bit is the one thing the umask cannot give: such a file was created 0600.)
  [ "$created_mask" != 077 ] || chmod "$mode" "$tmp"
  # The content (base64) is this function's stdin, the here-document: base64 reads it in blocks,
  # where bash's `read` would take a here-document on a pipe one byte per read(2).
  base64 -d > "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" \
     && [ "$(stat -c '%U:%G %a' "$path")" = "$want" ]; then
    rm -f "$tmp"
    return 0
  fi
  mv -f "$tmp" "$path"
  ISPMAIL_CHANGED_FILES+=("$path")
  ISPMAIL_DIRTY=1
  log "wrote $path"
}
# ispmail_json_list VAR ITEM...: VAR becomes the ITEMs as a JSON list of strings (into a variable,
# not printed: a command substitution is a fork).
ispmail_json_list() {
  local -n list=$1
  local x sep=
  shift
  list='['
  for x in "$@"; do
    x=${x//\\/\\\\}; x=${x//\"/\\\"}
    list+="$sep\"$x\""; sep=,
  done
  list+=']'
}
ispmail_result() {
  local r=unchanged files actions
  [ "$ISPMAIL_DIRTY" -eq 1 ] && r=changed
  ispmail_json_list files "${ISPMAIL_CHANGED_FILES[@]+"${ISPMAIL_CHANGED_FILES[@]}"}"
  ispmail_json_list actions "${ISPMAIL_ACTIONS[@]+"${ISPMAIL_ACTIONS[@]}"}"
  printf 'ispmail-step-result:{"result":"%s","files":%s,"actions":%s}\n' "$r" "$files" "$actions"
}
