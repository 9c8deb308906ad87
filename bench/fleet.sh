#!/usr/bin/env bash
# Fleet-scale figures for docs/benchmarks.md, measured with real processes on
# loopback: one livedump-controller and livedump-loadgen processes holding
# simulated agents, each a real mTLS gRPC peer with its own certificate.
#
#   bench/fleet.sh                 # sizes 1000 10000 19000
#   SIZES="1000 5000" bench/fleet.sh
#   PG=postgres://user:pw@127.0.0.1:5432/postgres?sslmode=disable bench/fleet.sh   # also ingest into PostgreSQL
#   ONLY=idle SIZES=3000 bench/fleet.sh   # only the idle-hold rows (no fan-out, storm, ingest)
#   PORT=31443 MPORT=31464 SRC=11 ...     # other ports; loadgen sources 127.0.11.1-8 (and .12 past 10k)
#   PROFILES=dir ...                      # save the controller's CPU, heap and goroutine
#                                         # profiles of each idle hold into dir
#   IDLE_SETTLE=70 IDLE_WINDOW=150 ...    # wait 70 s after all connect, measure idle CPU over
#                                         # 150 s (defaults 20 and 30): a window of at least one
#                                         # heartbeat interval (2 min) and two keepalive pings
#                                         # (65 s) sees every idle message
#
# Prints a markdown table. One process may hold a little under the open-file
# limit (ulimit -n) in connections, so agents past 10,000 go to a second
# loadgen process, and each process dials from its own 127.0.x.1-8 sources.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"1000 10000 19000"}
per_proc=10000
port=${PORT:-27443}
mport=${MPORT:-29464}
only=${ONLY:-}
src=${SRC:-1}
profiles=${PROFILES:-}
settle=${IDLE_SETTLE:-20}
window=${IDLE_WINDOW:-30}
work=$(mktemp -d)
bin=$work/bin
data=$work/data
cpid=""
lpids=()
cleanup() {
	for p in "${lpids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -n "$cpid" ] && kill "$cpid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
say() { echo "fleet: $*" >&2; }
go build -o "$bin/" ./cmd/livedump-controller ./cmd/livedump-loadgen ./cmd/livedumpctl
export LIVEDUMPCTL_CONFIG=$data/livedumpctl.yaml
metric() { curl -s "127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {printf "%d", $2}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_controller() { # [store URL]
	local store=()
	[ -n "${1:-}" ] && store=(--store "$1")
	# The enrollment figure is the controller's token + CSR rate from one
	# source over reused connections without a certificate: lift the
	# per-source Enroll limit and the lifetime of such connections.
	LIVEDUMP_CONTROLLER_TRANSPORT_ENROLL_RATE=0 LIVEDUMP_CONTROLLER_TRANSPORT_ANONYMOUS_MAX_LIFETIME=1h \
		"$bin/livedump-controller" --dev --dev-agents 0 --pprof --data-dir "$data" --listen "127.0.0.1:$port" \
		--metrics-listen "127.0.0.1:$mport" "${store[@]}" 2>>"$work/controller.log" >/dev/null &
	cpid=$!
	for _ in $(seq 600); do
		[ -f "$LIVEDUMPCTL_CONFIG" ] && curl -sf "127.0.0.1:$mport/readyz" >/dev/null && return 0
		sleep 0.2
	done
	say "controller did not start"; tail -5 "$work/controller.log" >&2; exit 1
}
stop_controller() { # signal
	kill "-${1:-TERM}" "$cpid" 2>/dev/null || true
	wait "$cpid" 2>/dev/null || true
	cpid=""
}
lg() { # args...; exec, so that a backgrounded lg's $! is the load generator itself
	exec "$bin/livedump-loadgen" --controller "127.0.0.1:$port" --ca "$data/ca.crt" \
		--operator-cert "$data/dev-admin.crt" --operator-key "$data/dev-admin.key" "$@"
}
# hold N: loadgen processes holding N agents (the first 10,000 from
# ids-0.json, the rest from ids-1.json); waits until all are connected.
hold() {
	local n=$1 i count
	lpids=()
	for i in 0 1; do
		count=$(( i == 0 ? (n < per_proc ? n : per_proc) : n - per_proc ))
		[ "$count" -le 0 ] && continue
		lg --agents "$count" --state "$work/ids-$i.json" --source-ips "127.0.$((i + src)).1-127.0.$((i + src)).8" \
			hold --duration 24h >"$work/hold-$i.out" 2>>"$work/loadgen.log" &
		lpids+=($!)
	done
	for i in $(seq 0 $((${#lpids[@]} - 1))); do
		for _ in $(seq 1200); do grep -q '"connected"' "$work/hold-$i.out" && break; sleep 0.5; done
		grep -q '"connected"' "$work/hold-$i.out" || { say "loadgen $i did not connect"; tail -5 "$work/loadgen.log" >&2; exit 1; }
	done
}
unhold() {
	for p in "${lpids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${lpids[@]}"; do wait "$p" 2>/dev/null || true; done
	lpids=()
	for _ in $(seq 600); do [ "$(metric livedump_controller_agents_connected)" = 0 ] && return; sleep 0.2; done
}
max_size=0
for n in $sizes; do [ "$n" -gt "$max_size" ] && max_size=$n; done

start_controller
# Agents are enrolled in slices whose label says the smallest size that
# uses them (size=1000, size=10000, ...), so a fan-out at N targets exactly
# the N agents connected, not every agent enrolled.
enrolled=0
prev=0
for n in $sizes; do
	tok=$("$bin/livedumpctl" tokens create --uses $((n - prev + 10)) --ttl 24h --labels "fleet=loadgen,size=$n" -o json | jq -r .secret)
	for i in 0 1; do
		count=$(( i == 0 ? (n < per_proc ? n : per_proc) : n - per_proc ))
		[ "$count" -le 0 ] && continue
		out=$(lg --agents "$count" --token "$tok" --state "$work/ids-$i.json" --concurrency 32 enroll)
		[ "$(jq .enrolled <<<"$out")" = 0 ] && continue
		enrolled=$((enrolled + $(jq .enrolled <<<"$out")))
		rate=$(jq .per_second <<<"$out")
		say "enroll: $out"
	done
	prev=$n
done
sizes_so_far=""
rows+=("| enrollment (token + CSR signing + certificate), $enrolled agents, 32 in flight | $(printf '%.0f' "$rate")/s |")

sleep 2
curl -s "127.0.0.1:$mport/debug/pprof/heap?gc=1" >/dev/null
sleep 2
base_rss=$(rss_kib "$cpid")
for n in $sizes; do
	say "holding $n agents"
	start=$(date +%s.%N)
	hold "$n"
	took=$(echo "$(date +%s.%N) - $start" | bc)
	sleep "$settle"
	curl -s "127.0.0.1:$mport/debug/pprof/heap?gc=1" >/dev/null
	sleep 5
	rss=$(rss_kib "$cpid")
	gor=$(metric go_goroutines)
	stack=$(metric go_memstats_stack_inuse_bytes)
	heap=$(metric go_memstats_heap_inuse_bytes)
	if [ -n "$profiles" ]; then
		mkdir -p "$profiles"
		curl -s "127.0.0.1:$mport/debug/pprof/heap" >"$profiles/heap-$n.pb.gz"
		curl -s "127.0.0.1:$mport/debug/pprof/goroutine" >"$profiles/goroutine-$n.pb.gz"
		curl -s "127.0.0.1:$mport/debug/pprof/profile?seconds=$window" >"$profiles/cpu-$n.pb.gz" &
	fi
	c0=$(ticks "$cpid"); l0=0; for p in "${lpids[@]}"; do l0=$((l0 + $(ticks "$p"))); done
	sleep "$window"
	c1=$(ticks "$cpid"); l1=0; for p in "${lpids[@]}"; do l1=$((l1 + $(ticks "$p"))); done
	hz=$(getconf CLK_TCK)
	ccpu=$(echo "scale=2; ($c1 - $c0) * 100 / $hz / $window" | bc)
	lcpu=$(echo "scale=2; ($l1 - $l0) * 100 / $hz / $window" | bc)
	per=$(( (rss - base_rss) * 1024 / n / 1024 ))
	rows+=("| $n idle agents: connected in | $(printf '%.1f' "$took") s |")
	rows+=("| $n idle agents: controller RSS, per agent | $((rss / 1024)) MiB, $per KiB (heap $((heap / n / 1024)) KiB, stacks $((stack / n / 1024)) KiB, $((gor / n)) goroutines) |")
	rows+=("| $n idle agents: CPU over $window s, controller / load generator | $ccpu % / $lcpu % of a core |")
	[ -n "$profiles" ] && wait $!
	sizes_so_far="${sizes_so_far:+$sizes_so_far,}$n"
	if [ "$only" = idle ]; then
		unhold
	elif [ "$n" -le 10000 ]; then
		unhold
		out=$(lg --agents "$n" --state "$work/ids-0.json" --source-ips "127.0.$src.1-127.0.$src.8" --selector "size in ($sizes_so_far)" \
			fanout --rounds 3 2>>"$work/loadgen.log" | tail -1)
		say "fanout: $out"
		rows+=("| $n agents: capture create → arm directive received, p50 / p99 / max (3rd round) | $(jq .p50_ms <<<"$out") / $(jq .p99_ms <<<"$out") / $(jq .max_ms <<<"$out") ms |")
		if [ "$n" = 10000 ]; then
			say "reconnect storm at $n"
			lg --agents "$n" --state "$work/ids-0.json" --source-ips "127.0.$src.1-127.0.$src.8" storm --timeout 3m \
				>"$work/storm.out" 2>>"$work/loadgen.log" &
			spid=$!
			for _ in $(seq 1200); do grep -q '"ready"' "$work/storm.out" && break; sleep 0.5; done
			stop_controller KILL
			start_controller
			wait "$spid" || true
			out=$(tail -1 "$work/storm.out")
			# A fresh controller for the next size, so its RSS baseline
			# holds no memory of the storm.
			for _ in $(seq 600); do [ "$(metric livedump_controller_agents_connected)" = 0 ] && break; sleep 0.2; done
			stop_controller TERM
			start_controller
			sleep 2
			base_rss=$(rss_kib "$cpid")
			say "storm: $out"
			rows+=("| $n agents, controller killed (SIGKILL) and restarted: all back after / not back | $(printf '%.1f' "$(jq .seconds <<<"$out")") s / $(jq .not_back <<<"$out") |")
		fi
	else
		unhold
	fi
done

ingest() { # label
	out=$(lg --agents 1000 --state "$work/ids-0.json" --source-ips "127.0.$src.1-127.0.$src.8" --event-rate 40 --selector "size in (1000)" \
		ingest --duration 20s 2>>"$work/loadgen.log" | tail -1)
	say "ingest $1: $out"
	rows+=("| trigger events stored, $1, 1000 agents offering 40/s each, 10-frame stacks | $(printf '%.0f' "$(jq .stored_per_second <<<"$out")")/s (offered $(printf '%.0f' "$(jq .sent_per_second <<<"$out")")/s) |")
}
[ "$only" = idle ] || ingest SQLite
if [ -n "${PG:-}" ] && [ "$only" != idle ]; then
	stop_controller TERM
	pgdb="ldbench_$$"
	psql "$PG" -qc "CREATE DATABASE $pgdb" >/dev/null
	pgurl=$(sed -E "s#/[^/?]+(\?|$)#/$pgdb\1#" <<<"$PG")
	rm -f "$data/livedump.db"*
	start_controller "$pgurl"
	tok=$("$bin/livedumpctl" tokens create --uses 1100 --ttl 1h --labels fleet=loadgen,size=1000 -o json | jq -r .secret)
	rm -f "$work/ids-0.json"
	out=$(lg --agents 1000 --token "$tok" --state "$work/ids-0.json" enroll)
	ingest PostgreSQL
	stop_controller TERM
	psql "$PG" -qc "DROP DATABASE $pgdb" >/dev/null || true
fi

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); open files per process: $(ulimit -n)"
echo
echo "| measurement | figure |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
