#!/usr/bin/env bash
# Agents held across three livedump-controller replicas on one PostgreSQL
# database, all on this machine: docs/scale-out.md's topology with loopback
# in place of the network. Three controller processes share the database, a
# blob directory and one CA; livedump-loadgen processes hold the simulated
# agents (each a real mTLS gRPC peer), each agent given the three replicas'
# addresses: agent i starts on replica i mod 3 and moves on to the next when
# an attempt fails, as a real agent with a list of controllers does.
#
#   PG=postgres://user:pw@127.0.0.1:5432/postgres?sslmode=disable bench/replicas.sh     # 50,000 agents
#   AGENTS=3000 PG=... bench/replicas.sh                                                 # a small run
#
# The role in PG must be allowed to CREATE DATABASE: the run uses its own
# database and drops it at the end. Other settings (environment):
#   PER_PROC=12500             agents per load-generator process (keep it well under ulimit -n)
#   ROUNDS=3                   fan-out rounds (captures created one after the other)
#   PROFILE_DIR=dir            CPU profiles of the three replicas over each round's first
#                              PROFILE_SECONDS (20)
#   IDLE_SETTLE=70 IDLE_WINDOW=150   seconds before and of the idle measurement
#   PORTS="27443 27444 27445"  gRPC ports of the replicas; MPORTS="29464 29465 29466" their metrics
#   SRC_NET=20                 load generator k dials from 127.0.(SRC_NET+k).1-16
#   CAP=N                      connections a replica accepts (default: the open-file limit less 256,
#                              the controller's own default); a small run with CAP < AGENTS/2
#                              shows what the full run meets: the survivors cannot hold everyone
#
# Steps: enroll every agent (one slice per load-generator process); hold
# them all, idle, and read per replica the agents connected, RSS and CPU over
# IDLE_WINDOW (150 s); create three captures for every agent, one after the other, and merge
# every agent's create → arm time; then hold them again, kill one replica
# with SIGKILL, count its agents that come back on the other two, restart it
# (as systemd's Restart=always would) and time until every agent is back.
# Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG:?set PG to a PostgreSQL URL whose role may CREATE DATABASE, e.g. postgres://livedump:livedump@127.0.0.1:5432/postgres?sslmode=disable}"
n=${AGENTS:-50000}
per_proc=${PER_PROC:-12500}
read -r -a ports <<<"${PORTS:-27443 27444 27445}"
read -r -a mports <<<"${MPORTS:-29464 29465 29466}"
src_net=${SRC_NET:-20}
nproc_lg=$(( (n + per_proc - 1) / per_proc ))
addrs="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
work=$(mktemp -d)
bin=$work/bin
pgdb="ldreplicas_$$"
pgurl=$(sed -E "s#/[^/?]+(\?|$)#/$pgdb\1#" <<<"$PG")
cpids=("" "" "")
lpids=()
dbmade=""
cleanup() {
	for p in "${lpids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${cpids[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "$dbmade" ] && psql "$PG" -qc "DROP DATABASE IF EXISTS $pgdb" >/dev/null 2>&1 || true
	if [ -n "${KEEP:-}" ]; then echo "replicas: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
say() { echo "replicas: $*" >&2; }
hz=$(getconf CLK_TCK)
limit=$(ulimit -n)
# What one replica can hold: the controller's default connection cap is
# the open-file limit less 256 kept for the store and blobs.
cap=${CAP:-$((limit - 256))}
if [ "$per_proc" -ge $((limit - 500)) ]; then say "PER_PROC=$per_proc is too close to the open-file limit ($limit)"; exit 1; fi

go build -o "$bin/" ./cmd/livedump-controller ./cmd/livedump-loadgen ./cmd/livedumpctl

# One CA for the three replicas (tls.ca_cert_file / tls.ca_key_file).
mkdir -p "$work/pki" "$work/blobs" "$work/op"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj "/O=livedump/CN=livedump bench CA" \
	-addext basicConstraints=critical,CA:TRUE,pathlen:0 -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
	-keyout "$work/pki/ca.key" -out "$work/pki/ca.crt" 2>/dev/null
psql "$PG" -qc "CREATE DATABASE $pgdb" >/dev/null
dbmade=1

start_replica() { # index 0-2
	local i=$1
	# As fleet.sh: the load generator enrolls from a few addresses, so the
	# per-source Enroll limit is off.
	LIVEDUMP_CONTROLLER_TRANSPORT_ENROLL_RATE=0 LIVEDUMP_CONTROLLER_TRANSPORT_ANONYMOUS_MAX_LIFETIME=1h \
		LIVEDUMP_CONTROLLER_TRANSPORT_MAX_CONNECTIONS=${CAP:-0} \
		"$bin/livedump-controller" --pprof --data-dir "$work/r$i" --listen "127.0.0.1:${ports[$i]}" \
		--metrics-listen "127.0.0.1:${mports[$i]}" --advertise "127.0.0.1:${ports[$i]}" --store "$pgurl" \
		--blobs "file://$work/blobs" --ca-cert-file "$work/pki/ca.crt" --ca-key-file "$work/pki/ca.key" \
		2>>"$work/replica-$i.log" >/dev/null &
	cpids[i]=$!
}
ready() { # index
	local i=$1
	for _ in $(seq 600); do
		curl -sf "127.0.0.1:${mports[$i]}/readyz" >/dev/null && return 0
		kill -0 "${cpids[$i]}" 2>/dev/null || break
		sleep 0.2
	done
	say "replica $((i + 1)) did not start"; tail -5 "$work/replica-$i.log" >&2; exit 1
}
metric() { # index name
	curl -s "127.0.0.1:${mports[$1]}/metrics" | awk -v m="$2" '$1 == m {printf "%d", $2; f=1} END {if (!f) printf "0"}'
}
connected() { metric "$1" livedump_controller_agents_connected; }
total() { echo $(( $(connected 0) + $(connected 1) + $(connected 2) )); }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p"))); done; echo "$t"; }
now() { date +%s.%N; }
cpu() { printf '%.1f' "$(echo "($1) * 100 / $hz / $2" | bc -l)"; } # ticks seconds: % of a core
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
wait_total() { # count timeout_s: waits until the replicas hold count agents
	local deadline=$(( $(date +%s) + $2 ))
	while [ "$(total)" -lt "$1" ]; do
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.5
	done
}
wait_zero() { for _ in $(seq 600); do [ "$(total)" = 0 ] && return; sleep 0.2; done; }
lg() { # args...; exec, so that a backgrounded lg's $! is the load generator itself
	exec "$bin/livedump-loadgen" --controller "$addrs" --ca "$work/pki/ca.crt" \
		--operator-cert "$work/op/bench.crt" --operator-key "$work/op/bench.key" "$@"
}
slice() { # k: agents of load generator k
	local c=$(( n - $1 * per_proc ))
	echo $(( c < per_proc ? c : per_proc ))
}
srcs() { echo "127.0.$((src_net + $1)).1-127.0.$((src_net + $1)).16"; }
rows=()
row() { rows+=("| $1 | $2 |"); }

# measure LABEL SECONDS: per replica, agents connected, RSS (after a GC) and
# CPU over the same SECONDS; the load generators' and PostgreSQL's CPU beside.
# The idle window (IDLE_WINDOW, 150 s, after IDLE_SETTLE, 70 s) holds a
# heartbeat interval (2 min) and two of the controller's keepalive pings
# (65 s), so it sees every idle message.
settle=${IDLE_SETTLE:-70}
rounds=${ROUNDS:-3} # fan-out rounds
profile_dir=${PROFILE_DIR:-} # CPU profiles of the replicas during each round
window=${IDLE_WINDOW:-150}
base_rss=(0 0 0)
measure() {
	local label=$1 secs=$2 i c0=() c1=() l0=0 l1=0 p0 p1 el
	for i in 0 1 2; do curl -s "127.0.0.1:${mports[$i]}/debug/pprof/heap?gc=1" >/dev/null; done
	sleep 3
	for i in 0 1 2; do c0[i]=$(ticks "${cpids[$i]}"); done
	for p in "${lpids[@]}"; do l0=$((l0 + $(ticks "$p"))); done
	p0=$(pg_ticks)
	local t0; t0=$(now)
	sleep "$secs"
	for i in 0 1 2; do c1[i]=$(ticks "${cpids[$i]}"); done
	for p in "${lpids[@]}"; do l1=$((l1 + $(ticks "$p"))); done
	p1=$(pg_ticks)
	el=$(echo "$(now) - $t0" | bc)
	for i in 0 1 2; do
		local agents rss gor per c
		agents=$(connected "$i")
		rss=$(rss_kib "${cpids[$i]}")
		gor=$(metric "$i" go_goroutines)
		per="-"
		[ "$agents" -gt 0 ] && per="$(( (rss - base_rss[i]) / agents )) KiB per agent, $(( gor / agents )) goroutines per agent"
		c=$(cpu "${c1[$i]} - ${c0[$i]}" "$el")
		row "$label: replica $((i + 1))" "$agents agents; RSS $((rss / 1024)) MiB ($per); CPU over $secs s $c % of a core"
		say "$label: replica $((i + 1)): $agents agents, RSS $((rss / 1024)) MiB, CPU $c %"
	done
	row "$label: CPU of the load generators ($nproc_lg processes) / PostgreSQL (all its processes)" \
		"$(cpu "$l1 - $l0" "$el") % / $(cpu "$p1 - $p0" "$el") % of a core"
}
# online per PostgreSQL: presence rows whose replica's lease is live.
online_in_db() {
	psql "$pgurl" -Atc "SELECT r.addr, count(*) FROM presence p JOIN replicas r ON r.id = p.replica_id
		WHERE r.heartbeat >= (extract(epoch FROM now()) * 1000)::bigint - 15000 GROUP BY r.addr ORDER BY r.addr" | tr '|\n' '= ' | sed 's/ $//'
}

for i in 0 1 2; do start_replica "$i"; done
for i in 0 1 2; do ready "$i"; done
"$bin/livedump-controller" issue-operator --role admin --name bench --out "$work/op" --controller "127.0.0.1:${ports[0]}" \
	--store "$pgurl" --ca-cert-file "$work/pki/ca.crt" --ca-key-file "$work/pki/ca.key" >/dev/null
export LIVEDUMPCTL_CONFIG=$work/op/livedumpctl.yaml
say "3 replicas up on $pgdb; $n agents in $nproc_lg load generators of at most $per_proc"
sleep 2
for i in 0 1 2; do curl -s "127.0.0.1:${mports[$i]}/debug/pprof/heap?gc=1" >/dev/null; done
sleep 2
for i in 0 1 2; do base_rss[i]=$(rss_kib "${cpids[$i]}"); done

# Enroll, one slice per load generator, through the three replicas.
tok=$("$bin/livedumpctl" tokens create --uses $((n + 10)) --ttl 24h --labels "fleet=loadgen" -o json | jq -r .secret)
start=$(now)
for k in $(seq 0 $((nproc_lg - 1))); do
	out=$(lg --agents "$(slice "$k")" --token "$tok" --state "$work/ids-$k.json" --source-ips "$(srcs "$k")" --concurrency 32 enroll 2>>"$work/loadgen.log")
	say "enroll $k: $out"
done
took=$(since "$start")
row "enrollment, $n agents through 3 replicas, 32 in flight per slice" "$(printf '%.0f' "$(echo "$n / $took" | bc -l)")/s ($took s)"

# 1. Hold every agent, idle; then three captures fanned out to all of them.
say "holding $n agents (fan-out followers)"
lpids=()
start=$(now)
for k in $(seq 0 $((nproc_lg - 1))); do
	lg --agents "$(slice "$k")" --state "$work/ids-$k.json" --source-ips "$(srcs "$k")" \
		fanout --follow --rounds "$rounds" --latencies >"$work/fanout-$k.out" 2>>"$work/loadgen.log" &
	lpids+=($!)
done
wait_total "$n" 900 || { say "only $(total) of $n agents connected"; tail -5 "$work/loadgen.log" >&2; exit 1; }
row "$n idle agents: connected in" "$(since "$start") s"
sleep "$settle"
measure "$n idle agents" "$window"

p99s=()
merged=""
for r in $(seq "$rounds"); do
	if [ -n "$profile_dir" ]; then
		# CPU profiles of every replica over the round's first seconds.
		mkdir -p "$profile_dir"
		for i in 0 1 2; do
			curl -s -o "$profile_dir/replica$((i + 1))-round$r.pprof" "127.0.0.1:${mports[$i]}/debug/pprof/profile?seconds=${PROFILE_SECONDS:-20}" &
		done
	fi
	if ! id=$("$bin/livedumpctl" --timeout 2m capture create -l fleet=loadgen --process ms-teams.exe --status STATUS_INVALID_PARAMETER --force --expire 1h 2>>"$work/ctl.log"); then
		say "fan-out round $r: capture create failed: $(tail -1 "$work/ctl.log")"
		row "$n agents on 3 replicas: fan-out round $r" "capture create failed: $(tail -1 "$work/ctl.log")"
		for p in "${lpids[@]}"; do kill "$p" 2>/dev/null || true; done
		break
	fi
	for k in $(seq 0 $((nproc_lg - 1))); do
		for _ in $(seq 1800); do [ "$(wc -l <"$work/fanout-$k.out")" -ge "$r" ] && break; sleep 0.1; done
	done
	"$bin/livedumpctl" --timeout 2m capture cancel "$id" >/dev/null || say "cancel $id failed"
	merged=$(cat "$work"/fanout-*.out | jq -r --argjson r "$r" 'select(.round == $r) | .latencies_ms[]' | sort -n)
	armed=$(grep -c . <<<"$merged" || true)
	pct() { awk -v p="$1" '{a[NR]=$1} END {i=int(p/100*NR); if (i < p/100*NR) i++; if (i < 1) i=1; print a[i]}' <<<"$merged"; }
	say "fan-out round $r: $armed of $n armed, p50 $(pct 50) p99 $(pct 99) max $(pct 100) ms"
	row "$n agents on 3 replicas: capture create → arm received, round $r of $rounds: p50 / p99 / max" "$(pct 50) / $(pct 99) / $(pct 100) ms ($armed arms received)"
	sleep 2 # let the disarms settle, as loadgen fanout does
done
for p in "${lpids[@]}"; do wait "$p" 2>/dev/null || true; done
lpids=()
wait_zero

# 2. Hold them again; kill one replica; restart it.
say "holding $n agents again"
start=$(now)
for k in $(seq 0 $((nproc_lg - 1))); do
	lg --agents "$(slice "$k")" --state "$work/ids-$k.json" --source-ips "$(srcs "$k")" \
		hold --duration 24h >"$work/hold-$k.out" 2>>"$work/loadgen.log" &
	lpids+=($!)
done
wait_total "$n" 900 || { say "only $(total) of $n agents connected"; tail -5 "$work/loadgen.log" >&2; exit 1; }
row "$n idle agents, connected again in" "$(since "$start") s"
sleep 10
on1=$(connected 0)
before=$(( $(connected 1) + $(connected 2) ))
refused0=$(( $(metric 1 'livedump_controller_connections_refused_total{reason="max_connections"}') + $(metric 2 'livedump_controller_connections_refused_total{reason="max_connections"}') ))
room=$(( 2 * cap - before ))
say "killing replica 1 (SIGKILL), which holds $on1 agents; the other two hold $before and have room for $room more"
kill -KILL "${cpids[0]}"
wait "${cpids[0]}" 2>/dev/null || true
cpids[0]=""
killed=$(now)
# Wait until the survivors hold them all, or stop gaining agents: 30 s
# without a new one (the agents' reconnect backoff is at most 30 s).
best=$before
last=$(date +%s)
to_survivors=0
while :; do
	s=$(( $(connected 1) + $(connected 2) ))
	if [ "$s" -gt "$best" ]; then best=$s; last=$(date +%s); to_survivors=$(since "$killed"); fi
	[ "$best" -ge $((before + on1)) ] && break
	[ $(( $(date +%s) - last )) -ge 30 ] && break
	sleep 0.5
done
back=$((best - before))
refused=$(( $(metric 1 'livedump_controller_connections_refused_total{reason="max_connections"}') + $(metric 2 'livedump_controller_connections_refused_total{reason="max_connections"}') - refused0 ))
say "on the survivors: $back of $on1 back ($(connected 1) + $(connected 2)); $refused connections refused at their cap"
if [ "$back" -lt "$on1" ]; then
	if [ -n "${CAP:-}" ]; then why="set by CAP"; else why="$limit open files per process less 256"; fi
	note="the survivors are at their connection cap ($cap each: $why); two replicas hold at most $((2 * cap)) agents, fewer than $n"
else
	note="all fit on the survivors"
fi
row "replica 1 killed (SIGKILL) holding $on1 agents: back on replicas 2 and 3 / not back (until it restarts)" "$back / $((on1 - back)) after $to_survivors s; $note ($refused connections refused at the cap meanwhile)"
say "restarting replica 1 (as Restart=always would)"
restarted=$(now)
start_replica 0
ready 0
if wait_total "$n" 900; then
	row "replica 1 restarted: all $n agents back after / not back" "$(since "$restarted") s after the restart ($(since "$killed") s after the kill) / 0"
else
	row "replica 1 restarted: all $n agents back after / not back" "not within 15 min / $((n - $(total)))"
fi
sleep 20
measure "$n agents after recovery" 30
row "$n agents after recovery: online per PostgreSQL (presence with a live lease), by replica" "$(online_in_db)"
# The load generators' own count: every agent connected when stopped.
for p in "${lpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${lpids[@]}"; do wait "$p" 2>/dev/null || true; done
lpids=()
lgup=$(cat "$work"/hold-*.out | jq -s '[.[] | select(.scenario == "hold") | .connected] | add')
lgre=$(cat "$work"/hold-*.out | jq -s '[.[] | select(.scenario == "hold") | .reconnects] | add')
row "load generators at the end: agents connected / reconnections" "$lgup of $n / $lgre"

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); open files per process: $limit (a replica holds at most $cap agents${CAP:+, set by CAP}); PostgreSQL $(psql "$PG" -Atc 'SHOW server_version'); everything on this machine"
echo
echo "| measurement | figure |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
