#!/bin/bash
# How much CPU does Rspamd spend per message in Debian 13's rspamd (3.12.x) versus Debian sid's
# (4.1.x)? Measured side by side on this machine, so that a milter throughput target can be
# turned into "this many cores" for either version.
#
# What it does, from scratch:
#   1. Two throwaway container trees under $BASE/{trixie,sid}, copies of the lab's cached Debian 13
#      rootfs (.lab/rootfs, never modified). rspamd is installed from trixie into one and from sid
#      (`apt-get -t sid`, pulling sid's libc6/libicu/... into that copy only) into the other, at
#      nice 19, through the lab's apt-cacher-ng when it answers.
#   2. Two messages built exactly like bench/smtp-load.ts messageFile() (same headers, same
#      repeated line, LF line ends): bodyBytes 2000 and 1000000.
#   3. Per round and version: one `systemd-nspawn --private-network` run that starts rspamd with the
#      package's default configuration (plus only `dns { nameserver = ["127.0.0.1:53"]; }`), waits
#      until the normal worker answers, hyperscan is loaded and the processes are idle, sends warm-up
#      messages and then N messages of each size sequentially with rspamc to 127.0.0.1:11333, and
#      reads utime+stime of every rspamd process of that container from /proc before and after
#      each batch. Rounds alternate which version goes first.
#   4. A table: CPU ms and wall ms per message (min / median over rounds), the 3.12 / 4.1 ratio,
#      the system-time share, rspamd's own time_real for one scan of each size, and the idle
#      background CPU.
# Everything is removed at the end (and at the start, if a previous run left something).
#
# Usage (root): bench/rspamd-versions.sh
#   ROUNDS=4 N_SMALL=50 N_LARGE=20 WARMUP=3 override the defaults.
# The measurement itself runs at normal priority (it is what we measure); only the package
# installations run at nice 19. The machine is shared, so the load average is printed as well:
# CPU time (utime+stime) is far less sensitive to a busy neighbour than wall time.
set -euo pipefail

BASE=/var/tmp/ispmail-rspamd-versions
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOTFS_CACHE=$REPO/.lab/rootfs
PROXY=http://127.0.0.1:13142
ROUNDS=${ROUNDS:-4}
N_SMALL=${N_SMALL:-50}
N_LARGE=${N_LARGE:-20}
WARMUP=${WARMUP:-3}
VERSIONS=(trixie sid)
BENCH_DIR=/root/rspamd-bench # inside each container

die() { echo "rspamd-versions: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

[[ $EUID -eq 0 ]] || die "run as root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn is missing"
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------
# The PID of the systemd-nspawn currently running (in the background, so that the EXIT trap can
# stop it before removing its tree: only this one process, which we started).
NSPAWN_PID=
# --resolv-conf=off keeps the tree's resolv.conf (irrelevant: apt goes through the proxy by
# address, and rspamd gets its own nameserver); set to copy-host when apt must resolve directly.
RESOLV_CONF=off

# Runs a command in the container tree $1 (not booted: --pipe, the command is PID 2 under nspawn's
# stub init). --register=no/--keep-unit: this host has no systemd-machined nor systemd as PID 1.
# Machine names "rspamd-versions-*" on purpose: the lab treats "ispmail-*" nspawns as its own.
# SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 as the lab's guests use it (the host mounts hybrid cgroups;
# trixie/sid userlands expect the unified one). nspawn 252 warns that it "can't allow" removing its
# propagation directory when it exits; that line is noise and filtered out.
# NICE=19 nspawn ... runs the container at that niceness (inherited by everything inside).
# Never call it inside $(...): the EXIT trap must see NSPAWN_PID; callers redirect to files.
nspawn() {
	local dir=$1
	shift
	nice -n "${NICE:-0}" env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q --register=no --keep-unit \
		--resolv-conf="$RESOLV_CONF" --timezone=off --link-journal=no \
		--machine="rspamd-versions-$(basename "$dir")" --directory="$dir" --pipe "$@" \
		</dev/null 2> >(grep -v 'Attempted to remove disk file system' >&2) &
	NSPAWN_PID=$!
	local rc=0
	wait "$NSPAWN_PID" || rc=$?
	NSPAWN_PID=
	return "$rc"
}

remove_trees() {
	# nspawn mounts in its own namespace, so nothing should be mounted under $BASE; if something
	# is (an interrupted chroot, say), unmount it rather than delete through it.
	local m
	while read -r m; do
		if [[ -n $m ]]; then umount -R "$m" 2>/dev/null || true; fi
	done < <(findmnt -rn -o TARGET | grep "^$BASE/" | sort -r || true)
	rm -rf --one-file-system "$BASE"
}

cleanup() {
	local rc=$?
	if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		kill -TERM "$NSPAWN_PID" 2>/dev/null || true # nspawn stops its container on SIGTERM
		for _ in $(seq 1 20); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$NSPAWN_PID" 2>/dev/null || true
	fi
	remove_trees
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

remove_trees # leftovers of an interrupted run
mkdir -p "$BASE/files"

# The lab caches its rootfs as .lab/rootfs/<hash>/; take the newest Debian 13 one.
ROOTFS=
if [[ -f $ROOTFS_CACHE/etc/os-release ]]; then
	ROOTFS=$ROOTFS_CACHE
else
	while read -r d; do
		if grep -qs '^VERSION_CODENAME=trixie' "$d/etc/os-release"; then ROOTFS=$d; break; fi
	done < <(find "$ROOTFS_CACHE" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' 2>/dev/null | sort -rn | cut -d' ' -f2-)
fi
[[ -n $ROOTFS ]] || die "no Debian 13 rootfs under $ROOTFS_CACHE (let the lab build it first)"
log "rootfs: $ROOTFS"

# ---------------------------------------------------------------------------------------------
# Files copied into both containers: the messages, a DNS stub, the in-container benchmark
# ---------------------------------------------------------------------------------------------
# bench/smtp-load.ts messageFile() with throughput.ts's sender, recipient and subject: the header
# lines, ceil(bodyBytes / (line length + 2)) body lines, joined with "\n" plus a final "\n".
message() {
	local body_bytes=$1
	local line="The quick brown fox jumps over the lazy dog, again and again, for the benchmark."
	local lines=$(((body_bytes + ${#line} + 1) / (${#line} + 2)))
	((lines >= 1)) || lines=1
	printf '%s\n' "From: Bench Sender <bench@example.net>" "To: Carol <carol@example.com>" \
		"Subject: ispmail-bench throughput" "Date: Wed, 25 Nov 2026 10:00:00 +0000" \
		"Message-ID: <bench-${body_bytes}@example.net>" "MIME-Version: 1.0" \
		"Content-Type: text/plain; charset=us-ascii" ""
	yes "$line" | head -n "$lines" || true # yes dies of SIGPIPE: expected
}
message 2000 >"$BASE/files/msg-2000.eml"
message 1000000 >"$BASE/files/msg-1000000.eml"

# Inside --private-network, UDP to a closed 127.0.0.1:53 does NOT fail at once for rspamd: its
# resolver ignores the ICMP error and every lookup waits for its timeout (seen: "query timed out"
# for maps and DMARC), which would put seconds of waiting into each scan and keep tasks pending.
# This stub answers every query at once with SERVFAIL, identically for both versions: lookups fail
# immediately (DMARC_DNSFAIL etc.), and no packet leaves the container's loopback.
cat >"$BASE/files/dns-stub.py" <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    q, addr = s.recvfrom(4096)
    if len(q) < 12:
        continue
    # Same ID and question; QR=1, opcode and RD copied, RA=1, RCODE=2 (SERVFAIL), no records.
    flags = 0x8000 | (q[2] & 0x79) << 8 | 0x80 | 2
    s.sendto(q[:2] + flags.to_bytes(2, "big") + q[4:6] + b"\0\0\0\0\0\0" + q[12:], addr)
EOF

# One round in one container: prints "KEY value..." lines for the host to collect.
cat >"$BASE/files/inner.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
cd "$(dirname "$0")"
n_small=$1 n_large=$2 warmup=$3 profile=$4
hz=$(getconf CLK_TCK)
t0=$(date +%s%N)
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
fail() { echo "inner: $*" >&2; tail -n 20 /var/log/rspamd/rspamd.log >&2 2>/dev/null || true; exit 1; }

python3 dns-stub.py &
dns_pid=$!

# As the package's unit runs it: RuntimeDirectory=rspamd, User=_rspamd, LimitNOFILE, -f.
install -d -o _rspamd -g _rspamd -m 0755 /run/rspamd
ulimit -n 1048576 2>/dev/null || true
# A fresh log per round (the host reads this round's lines only). Stale hyperscan lock files must
# go: rspamd 4.x writes its PID into /var/lib/rspamd/*.lock, and in a new PID namespace that PID
# easily belongs to a live rspamd process again, so hs_helper would never compile (seen after an
# interrupted first start: workers stayed on PCRE). No rspamd runs at this point.
rm -f /var/log/rspamd/rspamd.log /var/lib/rspamd/*.lock
setpriv --reuid=_rspamd --regid=_rspamd --init-groups -- rspamd -c /etc/rspamd/rspamd.conf -f &
rspamd_pid=$!
stop() {
	kill -TERM "$rspamd_pid" 2>/dev/null || true
	for _ in $(seq 1 60); do kill -0 "$rspamd_pid" 2>/dev/null || break; sleep 0.5; done
	kill -KILL "$rspamd_pid" 2>/dev/null || true
	kill "$dns_pid" 2>/dev/null || true
}
trap stop EXIT

# utime+stime (clock ticks) of every rspamd process of this container: the container has its own
# PID namespace, so /proc lists only these. Fields 14 and 15 of /proc/PID/stat (counted after the
# "(comm)" field, which is "rspamd" for the main process and all its workers).
ticks_us() { # "utime stime"
	cat /proc/[0-9]*/stat 2>/dev/null |
		awk '$2 == "(rspamd)" { sub(/^.*\) /, ""); split($0, f, " "); u += f[12]; s += f[13] } END { print u + 0, s + 0 }'
}
ticks() { local u s; read -r u s < <(ticks_us); echo $((u + s)); }

# 1) The normal worker answers HTTP /ping (rspamc has no "ping" command in 3.12).
for i in $(seq 1 600); do
	curl -s -m 2 http://127.0.0.1:11333/ping 2>/dev/null | grep -q pong && break
	kill -0 "$rspamd_pid" 2>/dev/null || fail "rspamd exited during startup"
	((i < 600)) || fail "the normal worker did not answer within 120 s"
	sleep 0.2
done
echo "START_PING_MS $(ms_since "$t0")"
# 2) The full hyperscan database is loaded: on a first start hs_helper compiles it and the workers
# log "full hyperscan database ... has been loaded"; on later starts 3.12 loads it from the cache
# in the main process before forking (so only "(main)" logs it), 4.1 in the workers. Before that,
# scans run on PCRE, a different cost. (PCRE_REGEXPS_1MB below checks it for the measured scans.)
for i in $(seq 1 600); do
	grep -Eq '#[0-9]+\((main|normal)\).*full hyperscan database of [0-9]+ regexps.*has been loaded' /var/log/rspamd/rspamd.log 2>/dev/null && break
	kill -0 "$rspamd_pid" 2>/dev/null || fail "rspamd exited while loading hyperscan"
	((i < 600)) || fail "no full hyperscan database in a normal worker within 300 s"
	sleep 0.5
done
echo "START_HS_MS $(ms_since "$t0")"
# 3) Idle: three consecutive seconds with at most 3 ticks each (30 ms/s, all processes).
quiet=0 prev=$(ticks)
for i in $(seq 1 180); do
	sleep 1
	now=$(ticks)
	if ((now - prev <= 3)); then quiet=$((quiet + 1)); else quiet=0; fi
	prev=$now
	((quiet >= 3)) && break
	((i < 180)) || fail "rspamd did not become idle within 180 s"
done
echo "START_IDLE_MS $(ms_since "$t0")"

scan() { # one message, sequentially; refuse to count an error as a scan
	local out
	out=$(rspamc -h 127.0.0.1:11333 "$1") || fail "rspamc $1: $out"
	[[ $out == *"Action:"* ]] || fail "rspamc $1: no result: $out"
}
for f in msg-2000.eml msg-1000000.eml; do
	for ((i = 0; i < warmup; i++)); do scan "$f"; done
done
# Background CPU with no mail (timers, map checks): shows what the batch figures contain on top.
c0=$(ticks)
sleep 5
echo "IDLE_MS_PER_S $(awk -v t=$(($(ticks) - c0)) -v hz="$hz" 'BEGIN { printf "%.2f", t * 1000 / hz / 5 }')"

batch() { # label file n -> "BATCH label n cpu_ms wall_ms user_ms sys_ms"
	local label=$1 file=$2 n=$3 u0 s0 u1 s1 w0 w1 i
	read -r u0 s0 < <(ticks_us)
	w0=$(date +%s%N)
	for ((i = 0; i < n; i++)); do scan "$file"; done
	w1=$(date +%s%N)
	read -r u1 s1 < <(ticks_us)
	echo "BATCH $label $n $(((u1 + s1 - u0 - s0) * 1000 / hz)) $(((w1 - w0) / 1000000)) $(((u1 - u0) * 1000 / hz)) $(((s1 - s0) * 1000 / hz))"
}
batch 2KB msg-2000.eml "$n_small"
batch 1MB msg-1000000.eml "$n_large"

# rspamd's own view of one scan of each size: time_real of the JSON reply (seconds), and whether
# the regexps ran through hyperscan ("0 pcre regexps scanned" in the log's regexp statistics).
for size in 2KB:msg-2000.eml 1MB:msg-1000000.eml; do
	rspamc -h 127.0.0.1:11333 -j "${size#*:}" |
		python3 -c 'import json, sys; print("TIME_REAL_%s_MS %.1f" % (sys.argv[1], json.load(sys.stdin)["time_real"] * 1000))' "${size%%:*}"
done
pcre=$(grep 'regexp statistics' /var/log/rspamd/rspamd.log | tail -n 1 | sed -E 's/.*statistics: ([0-9]+) pcre regexps scanned.*/\1/')
echo "PCRE_REGEXPS_1MB $pcre"
if [[ $profile == yes ]]; then
	# rspamc --profile: the slowest symbols of one 1 MB scan, as rspamd reports them.
	rspamc -h 127.0.0.1:11333 --profile msg-1000000.eml |
		awk '/^Profile data:/ { p = 1; next } p && NF == 3 { printf "%s %s\n", $2, $1 }' |
		sort -g -r | head -n 5 | awk '{ sub(/:$/, "", $2); printf "PROFILE %s %.1f\n", $2, $1 }'
fi
echo "RSPAMD_VERSION $(rspamd --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1)"
EOF
chmod +x "$BASE/files/inner.sh"

# ---------------------------------------------------------------------------------------------
# 1. The two trees
# ---------------------------------------------------------------------------------------------
for v in "${VERSIONS[@]}"; do
	log "copying the rootfs to $BASE/$v"
	cp -a --reflink=auto "$ROOTFS" "$BASE/$v"
	mkdir -p "$BASE/$v$BENCH_DIR"
	cp "$BASE"/files/* "$BASE/$v$BENCH_DIR/"
	# The mirror (and so the proxy) serves a frozen snapshot: sid's InRelease is past its
	# Valid-Until on this machine's clock, and apt would refuse it ("Release file ... is expired").
	echo 'Acquire::Check-Valid-Until "false";' >"$BASE/$v/etc/apt/apt.conf.d/99rspamd-versions"
done
echo 'deb http://deb.debian.org/debian sid main' >"$BASE/sid/etc/apt/sources.list.d/sid.list"

# The install runs share the host's network, so the lab's apt-cacher-ng on 127.0.0.1 is reachable
# from inside if it is up; otherwise apt goes to deb.debian.org directly with the host's resolver.
if nspawn "$BASE/trixie" curl -fs -o /dev/null -m 10 "$PROXY/deb.debian.org/debian/dists/trixie/InRelease"; then
	log "apt through the proxy $PROXY"
	for v in "${VERSIONS[@]}"; do
		echo "Acquire::http::Proxy \"$PROXY\";" >>"$BASE/$v/etc/apt/apt.conf.d/99rspamd-versions"
	done
else
	log "proxy $PROXY not reachable from the container: apt goes to deb.debian.org directly"
	RESOLV_CONF=copy-host
fi

declare -A VERSION
for v in "${VERSIONS[@]}"; do
	target=()
	[[ $v == sid ]] && target=(-t sid)
	log "installing rspamd from $v (nice 19; log: $BASE/install-$v.log)"
	# --no-install-recommends: the only recommendation is valkey-server | redis-server, which the
	# default configuration does not use (no redis servers configured: those modules disable
	# themselves in both versions).
	if ! NICE=19 nspawn "$BASE/$v" env DEBIAN_FRONTEND=noninteractive bash -c \
		'apt-get -q update && apt-get -q -y --no-install-recommends install "$@"' apt "${target[@]}" rspamd \
		>"$BASE/install-$v.log" 2>&1; then
		tail -n 30 "$BASE/install-$v.log" >&2
		die "installing rspamd from $v failed (for sid: a debootstrap/mmdebstrap sid tree would be the fallback)"
	fi
	# Only the DNS setting differs from the packaged configuration (see the DNS stub above).
	printf 'dns {\n  nameserver = ["127.0.0.1:53"];\n}\n' >"$BASE/$v/etc/rspamd/local.d/options.inc"
	# shellcheck disable=SC2016 # dpkg-query's own ${...} format
	nspawn "$BASE/$v" dpkg-query -W -f='${Version}' rspamd >"$BASE/version-$v"
	VERSION[$v]=$(cat "$BASE/version-$v")
	log "$v: rspamd ${VERSION[$v]}"
	# The libraries that matter most for the comparison (libjemalloc2: only 4.x links it).
	# shellcheck disable=SC2016 # dpkg-query's own ${...} format
	nspawn "$BASE/$v" dpkg-query -W -f='${Package} ${Version}, ' rspamd libc6 libhyperscan5 \
		libluajit-5.1-2 libglib2.0-0t64 libicu76 libicu78 libjemalloc2 >"$BASE/packages-$v" 2>/dev/null || true
done

echo
echo "Installed (dpkg-query -W):"
for v in "${VERSIONS[@]}"; do
	printf '  %-7s %s\n' "$v" "$(sed 's/, $//' "$BASE/packages-$v")"
done

# ---------------------------------------------------------------------------------------------
# 2. Rounds: each version once per round, alternating which goes first
# ---------------------------------------------------------------------------------------------
RESULTS=$BASE/results.txt
: >"$RESULTS"
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then order=(trixie sid); else order=(sid trixie); fi
	for v in "${order[@]}"; do
		profile=no
		((r == 1)) && profile=yes
		log "round $r/$ROUNDS: $v (${VERSION[$v]})"
		nspawn "$BASE/$v" --private-network "$BENCH_DIR/inner.sh" "$N_SMALL" "$N_LARGE" "$WARMUP" "$profile" \
			>"$BASE/round.out" || { cat "$BASE/round.out" >&2; die "round $r, $v failed"; }
		sed "s/^/$v $r /" "$BASE/round.out" >>"$RESULTS"
		grep -E '^(START|BATCH|IDLE|TIME_REAL|PCRE)' "$BASE/round.out" | tr '\n' ' ' | sed 's/^/    /' >&2
		echo >&2
	done
done

# ---------------------------------------------------------------------------------------------
# 3. The table
# ---------------------------------------------------------------------------------------------
# "min median" of the numbers on stdin.
minmed() {
	sort -g | awk '{ a[NR] = $1 } END { if (!NR) { print "- -"; exit }
		m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f %.1f\n", a[1], m }'
}
# Per-message values of one version and size: field 6 = cpu ms, 7 = wall ms, 5 = n.
per_msg() { awk -v v="$1" -v s="$2" -v f="$3" '$1 == v && $3 == "BATCH" && $4 == s { print $f / $5 }' "$RESULTS"; }
metric() { awk -v v="$1" -v k="$2" '$1 == v && $3 == k { print $4 }' "$RESULTS"; }

echo
echo "rspamd CPU per message: utime+stime of all rspamd processes of the container, rspamc -> normal worker"
echo "(127.0.0.1:11333), sequential; $ROUNDS rounds x ($N_SMALL x 2 KB + $N_LARGE x 1 MB) per version after $WARMUP warm-ups each."
echo
printf '%-5s %-14s %16s %16s %14s %9s\n' size rspamd "CPU ms/msg" "wall ms/msg" "msg/s per core" "sys share"
printf '%-5s %-14s %16s %16s %14s %9s\n' "" "" "min / median" "min / median" "(1000/median)" "(all)"
declare -A MED
for s in 2KB 1MB; do
	for v in "${VERSIONS[@]}"; do
		read -r cmin cmed < <(per_msg "$v" "$s" 6 | minmed)
		read -r wmin wmed < <(per_msg "$v" "$s" 7 | minmed)
		MED[$v.$s.cpu]=$cmed MED[$v.$s.wall]=$wmed MED[$v.$s.cpumin]=$cmin
		printf '%-5s %-14s %7s / %-6s %7s / %-6s %14s %9s\n' "$s" "${VERSION[$v]}" "$cmin" "$cmed" "$wmin" "$wmed" \
			"$(awk -v m="$cmed" 'BEGIN { printf (m > 0 ? "%.1f" : "-"), 1000 / m }')" \
			"$(awk -v v="$v" -v s="$s" '$1 == v && $3 == "BATCH" && $4 == s { u += $8; y += $9 } END { printf (u + y > 0 ? "%.0f%%" : "-"), 100 * y / (u + y) }' "$RESULTS")"
	done
	printf '%-5s %-14s %16s %16s\n' "$s" "ratio 3.12/4.1" \
		"$(awk -v a="${MED[trixie.$s.cpumin]}" -v b="${MED[sid.$s.cpumin]}" -v c="${MED[trixie.$s.cpu]}" -v d="${MED[sid.$s.cpu]}" \
			'BEGIN { printf "%.2f / %.2f", (b > 0 ? a / b : 0), (d > 0 ? c / d : 0) }')" \
		"$(awk -v c="${MED[trixie.$s.wall]}" -v d="${MED[sid.$s.wall]}" 'BEGIN { printf "   - / %.2f", (d > 0 ? c / d : 0) }')"
done
echo
echo "rspamd's own time_real per scan (rspamc -j, one scan per round), idle background CPU, checks:"
printf '%-14s %16s %18s %16s %14s %22s\n' rspamd "time_real 2 KB" "time_real 1 MB" "idle CPU ms/s" "PCRE regexps" "first start to idle"
printf '%-14s %16s %18s %16s %14s %22s\n' "" "ms min / median" "ms min / median" "min / median" "(1 MB, last)" "(hyperscan compile)"
for v in "${VERSIONS[@]}"; do
	read -r smin smed < <(metric "$v" TIME_REAL_2KB_MS | minmed)
	read -r tmin tmed < <(metric "$v" TIME_REAL_1MB_MS | minmed)
	read -r imin imed < <(metric "$v" IDLE_MS_PER_S | minmed)
	printf '%-14s %7s / %-6s %8s / %-7s %7s / %-6s %14s %20s s\n' "${VERSION[$v]}" "$smin" "$smed" "$tmin" "$tmed" "$imin" "$imed" \
		"$(metric "$v" PCRE_REGEXPS_1MB | tail -n 1)" \
		"$(awk -v v="$v" '$1 == v && $2 == 1 && $3 == "START_IDLE_MS" { printf "%.1f", $4 / 1000 }' "$RESULTS")"
done
echo
# Both versions report near-identical coarse values for every symbol here (timer granularity), so
# this is no breakdown of the scan; printed because it is what rspamd itself offers.
echo "rspamc --profile, one 1 MB message (round 1), top symbols as reported (usec; coarse, not a breakdown):"
for v in "${VERSIONS[@]}"; do
	printf '  %-14s %s\n' "${VERSION[$v]}" "$(awk -v v="$v" '$1 == v && $3 == "PROFILE" { printf "%s %s  ", $4, $5 }' "$RESULTS")"
done
echo
echo "Per round (whole batch):"
awk '$3 == "BATCH" { printf "  round %s %-7s %s x%-3s cpu %6s ms (user %6s, sys %5s)  wall %6s ms\n", $2, $1, $4, $5, $6, $8, $9, $7 }' "$RESULTS"
echo
echo "load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) (2 CPUs, shared machine)"
echo "total runtime: $(($(date +%s) - T_START)) s"
