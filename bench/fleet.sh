#!/usr/bin/env bash
# Fleet-scale figures for docs/benchmarks.md, measured with real processes on
# loopback: one livedump-controller and livedump-loadgen processes holding
# simulated agents, each a real mTLS gRPC peer with its own certificate.
#
#   bench/fleet.sh                 # sizes 1000 10000 19000
#   SIZES="1000 5000" bench/fleet.sh
#   PG=postgres://user:pw@127.0.0.1:5432/postgres?sslmode=disable bench/fleet.sh   # also ingest into PostgreSQL
#   PORT=35443 MPORT=35464 SOURCES=127.0.15 bench/fleet.sh   # other ports and loadgen sources
#   ONLY=fanout SIZES=10000 bench/fleet.sh   # the fan-out rows only (enroll, then fan out at each size)
#   ONLY=fanout SIZES=5000 BASE_BIN=/tmp/before/bin REPEAT=2 PROFILE_DIR=/tmp/prof bench/fleet.sh
#       # ... and the same fan-out with the controller and loadgen built in
#       # BASE_BIN (on the same data, base first, REPEAT times alternating),
#       # with CPU profiles of the controller (and of this tree's loadgen)
#       # taken during the rounds
#   ONLY=ingest bench/fleet.sh     # only the ingest rows (end to end and store layer)
#   BIN=/some/dir bench/fleet.sh   # use the binaries in that dir instead of building
#   PROFILE=/some/dir bench/fleet.sh  # CPU profiles of the controller and load generator during ingest
#
# The ingest rows enroll their own 1,000 agents (label fleet=ingest), then
# run the store-layer benchmark (go test -bench InsertEvents, 512 events per
# transaction) in the same run and print both figures and their ratio.
#   ONLY=idle SIZES=3000 bench/fleet.sh   # only the idle-hold rows (no fan-out, storm, ingest)
#   PORT=31443 MPORT=31464 SOURCES=127.0.11 ...  # other ports and loadgen sources
#   PROFILES=dir ...                      # save the controller's CPU, heap and goroutine
#                                         # profiles of each idle hold into dir
#   IDLE_SETTLE=70 IDLE_WINDOW=150 ...    # wait 70 s after all connect, measure idle CPU over
#                                         # 150 s (the defaults; 20 and 30 before the 2-min heartbeat): at least one
#                                         # heartbeat interval (2 min) and two keepalive pings
#                                         # (65 s) sees every idle message
#
# Prints a markdown table. One process may hold a little under the open-file
# limit (ulimit -n) in connections, so agents past 10,000 go to a second
# loadgen process, and each process dials from its own 127.0.x.1-8 sources.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"1000 10000 19000"}
only=${ONLY:-}
case "$only" in "" | fanout | ingest | idle) ;; *) echo "fleet: ONLY=$only: want fanout, ingest or idle (or unset for every row)" >&2; exit 2 ;; esac
base_bin=${BASE_BIN:-}
[ -n "$base_bin" ] && [ "$only" != fanout ] && { echo "fleet: BASE_BIN needs ONLY=fanout" >&2; exit 2; }
repeat=${REPEAT:-1}
prof=${PROFILE_DIR:-}
src0=${SOURCES:-127.0.1} # the first loadgen's sources are $src0.1-8, the second's 127.0.2.1-8
srcs=("$src0" 127.0.2)
[ -n "$prof" ] && mkdir -p "$prof"
per_proc=10000
port=${PORT:-27443}
mport=${MPORT:-29464}
profiles=${PROFILES:-}
settle=${IDLE_SETTLE:-70}
window=${IDLE_WINDOW:-150}
work=$(mktemp -d)
bin=$work/bin
cbin=$bin # the binaries the controller and the load generator run from
lbin=$bin
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
if [ -n "${BIN:-}" ]; then
	mkdir -p "$bin" && cp "$BIN/livedump-controller" "$BIN/livedump-loadgen" "$BIN/livedumpctl" "$bin/"
else
	go build -o "$bin/" ./cmd/livedump-controller ./cmd/livedump-loadgen ./cmd/livedumpctl
fi
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
		"$cbin/livedump-controller" --dev --dev-agents 0 --pprof --data-dir "$data" --listen "127.0.0.1:$port" \
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
	exec "$lbin/livedump-loadgen" --controller "127.0.0.1:$port" --ca "$data/ca.crt" \
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
		lg --agents "$count" --state "$work/ids-$i.json" --source-ips "${srcs[$i]}.1-${srcs[$i]}.8" \
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
if [ "$only" != ingest ]; then
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
# fanout N LABEL: the fan-out at N agents; sets $out to the 3rd round's line.
# With PROFILE_DIR, the controller's CPU profile covers the rounds
# (PROFILE_SECONDS from the last agent connected), and this tree's loadgen
# profiles itself.
fanout() {
	local n=$1 label=$2 extra=() pid ppid=""
	[ -n "$prof" ] && [ "$lbin" = "$bin" ] && extra=(--cpuprofile "$prof/loadgen-$n$label.pprof")
	: >"$work/fanout.err"
	lg --agents "$n" --state "$work/ids-0.json" --source-ips "$src0.1-$src0.8" --selector "size in ($sizes_so_far)" \
		fanout --rounds 3 "${extra[@]}" >"$work/fanout.out" 2>"$work/fanout.err" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null && ! grep -q 'agents connected' "$work/fanout.err"; do sleep 0.1; done
	local cpu0 cpu1
	cpu0=$(ticks "$cpid")
	if [ -n "$prof" ]; then
		curl -s -o "$prof/controller-$n$label.pprof" "127.0.0.1:$mport/debug/pprof/profile?seconds=${PROFILE_SECONDS:-15}" &
		ppid=$!
	fi
	wait "$pid" || true
	cpu1=$(ticks "$cpid")
	[ -n "$ppid" ] && wait "$ppid"
	cat "$work/fanout.err" >>"$work/loadgen.log"
	# The controller's CPU seconds from the last agent connected to the
	# end of the rounds, beside the load generator's own.
	out=$(tail -1 "$work/fanout.out" | jq -c --argjson c "$(awk -v a="$cpu0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / t }')" '. + {controller_cpu_s: $c}')
	say "fanout$label: $out"
}
fanout_row() { # n label
	rows+=("| $1 agents: capture create → arm directive received, p50 / p99 / max (3rd round)$2 | $(jq .p50_ms <<<"$out") / $(jq .p99_ms <<<"$out") / $(jq .max_ms <<<"$out") ms; controller CPU over the rounds $(jq .controller_cpu_s <<<"$out") s |")
}
table() {
	echo
	echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); open files per process: $(ulimit -n)"
	echo
	echo "| measurement | figure |"
	echo "|---|---|"
	printf '%s\n' "${rows[@]}"
}
if [ "$only" = fanout ]; then
	for n in $sizes; do
		sizes_so_far="${sizes_so_far:+$sizes_so_far,}$n"
		[ "$n" -le "$per_proc" ] || { say "fanout: $n agents: at most $per_proc (one loadgen process)"; exit 1; }
		for r in $(seq "$repeat"); do
			if [ -n "$base_bin" ]; then
				stop_controller TERM
				cbin=$base_bin lbin=$base_bin
				start_controller
				say "fanout at $n, base binaries ($base_bin)"
				fanout "$n" "-base$r"
				fanout_row "$n" " [base $base_bin]"
				stop_controller TERM
				cbin=$bin lbin=$bin
				start_controller
			fi
			say "fanout at $n"
			fanout "$n" "-$r"
			fanout_row "$n" ""
		done
	done
	table
	exit 0
fi
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
		fanout "$n" ""
		fanout_row "$n" ""
		if [ "$n" = 10000 ]; then
			say "reconnect storm at $n"
			lg --agents "$n" --state "$work/ids-0.json" --source-ips "$src0.1-$src0.8" storm --timeout 3m \
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
fi

# store_bench PKG: events/s of the store-layer benchmark at 512 events per
# transaction, run now, on the same machine load as the end-to-end figure.
store_bench() {
	local env=()
	[ "$1" = postgres ] && env=(LIVEDUMP_TEST_POSTGRES="$PG")
	env "${env[@]}" go test "./controller/store/$1" -run '^$' -bench '^BenchmarkInsertEvents$/^batch=512$' -benchtime 20000x -count 1 2>>"$work/bench.log" |
		awk '/events\/s/ {for (i = 1; i < NF; i++) if ($(i + 1) == "events/s") printf "%.0f", $i}'
}
# ingest LABEL PKG: 1,000 agents (enrolled for ingest) each offering 40
# events/s to a capture, then the store layer's figure in the same run.
ingest() {
	local tok out e2e sb
	if [ ! -s "$work/ids-ingest.json" ]; then
		tok=$("$bin/livedumpctl" tokens create --uses 1010 --ttl 1h --labels fleet=ingest -o json | jq -r .secret)
		(lg --agents 1000 --token "$tok" --state "$work/ids-ingest.json" --concurrency 32 enroll) >/dev/null # lg execs: a subshell
	fi
	local prof=() ppid=""
	if [ -n "${PROFILE:-}" ]; then
		mkdir -p "$PROFILE"
		prof=(--cpuprofile "$PROFILE/loadgen-$1.pprof")
		(sleep 6; curl -s "127.0.0.1:$mport/metrics" -o "$PROFILE/metrics0-$1.txt"
			curl -s "127.0.0.1:$mport/debug/pprof/profile?seconds=15" -o "$PROFILE/controller-$1.pprof"
			curl -s "127.0.0.1:$mport/metrics" -o "$PROFILE/metrics1-$1.txt") &
		ppid=$!
	fi
	out=$(lg "${prof[@]}" --agents 1000 --state "$work/ids-ingest.json" --source-ips "${INGEST_SOURCES:-$src0.1-$src0.8}" --event-rate 40 --selector "fleet=ingest" \
		ingest --duration 20s 2>>"$work/loadgen.log" | tail -1)
	say "ingest $1: $out"
	[ -n "$ppid" ] && wait "$ppid"
	e2e=$(printf '%.0f' "$(jq .stored_per_second <<<"$out")")
	sb=$(store_bench "$2")
	say "store layer $1: ${sb:-?} events/s"
	rows+=("| trigger events stored, $1, 1000 agents offering 40/s each, 10-frame stacks | $e2e/s (offered $(printf '%.0f' "$(jq .sent_per_second <<<"$out")")/s) |")
	if [ -n "$sb" ] && [ "$sb" -gt 0 ]; then
		rows+=("| trigger events, $1: store layer in the same run (512 per transaction) / end to end as a share of it | $sb/s / $((e2e * 100 / sb)) % |")
	fi
}
[ "$only" = idle ] || ingest SQLite sqlite
if [ -n "${PG:-}" ] && [ "$only" != idle ]; then
	stop_controller TERM
	pgdb="ldbench_$$"
	psql "$PG" -qc "CREATE DATABASE $pgdb" >/dev/null
	pgurl=$(sed -E "s#/[^/?]+(\?|$)#/$pgdb\1#" <<<"$PG")
	rm -f "$data/livedump.db"* "$work/ids-ingest.json"
	start_controller "$pgurl"
	ingest PostgreSQL postgres
	stop_controller TERM
	psql "$PG" -qc "DROP DATABASE $pgdb" >/dev/null || true
fi

table
