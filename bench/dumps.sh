#!/usr/bin/env bash
# bench/dumps.sh: the dump pipeline's numbers on this machine, measured side
# by side in one run (the machines are noisy: compare ratios).
#   1. SHA-256: the agent's HashFile vs `openssl dgst -sha256`, same size;
#   2. raw TLS loopback and zstd, for reference;
#   3. the agent process idle and connected: VmRSS and CPU (utime+stime from
#      /proc/<pid>/stat) over IDLE_SECS, before any dump;
#   4. end-to-end verified upload on loopback (a real controller process and
#      a real `livedump-agent --simulate` process, mTLS, resumable protocol,
#      SHA-256 verified by the controller), timed by the controller's
#      upload stream (livedump_controller_dump_upload_seconds), against the
#      reference pipeline (bench/refcopy: a TLS 1.3 copy of the same file
#      with SHA-256 on both ends, written and fsynced) run just before it;
#   5. the agent's peak RSS (VmHWM) after each dump.
# Usage: bench/dumps.sh [SIZES_MIB...]   (default: 256 4096)
# Environment:
#   BEFORE_BIN=DIR  also run 3-5 with the livedump-controller, livedump-agent
#                   and livedumpctl in DIR (built from an older commit), on
#                   the same files in the same run;
#   IDLE_SECS=60    length of the idle measurement (0: skip it);
#   REPEAT=1        uploads of each size (one row each);
#   PORT=17443 METRICS_PORT=19464   the controller's ports;
#   QUICK=1         skip 1 and 2.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
sizes=("$@")
[ $# -eq 0 ] && sizes=(256 4096)
idle_secs=${IDLE_SECS:-60}
repeat=${REPEAT:-1}
port=${PORT:-17443}
mport=${METRICS_PORT:-19464}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/bin/" ./cmd/livedump-controller ./cmd/livedump-agent ./cmd/livedumpctl
go build -o "$work/refcopy" ./bench/refcopy
hz=$(getconf CLK_TCK)

if [ -z "${QUICK:-}" ]; then
echo "## SHA-256 (256 MiB file)"
head -c $((256 << 20)) /dev/urandom >"$work/h.bin"
openssl dgst -sha256 "$work/h.bin" >/dev/null # warm the page cache
start=$(date +%s.%N); openssl dgst -sha256 "$work/h.bin" >/dev/null; end=$(date +%s.%N)
echo "openssl dgst -sha256: $(echo "256 / ($end - $start)" | bc -l | xargs printf '%.0f') MiB/s"
rm -f "$work/h.bin"
go test ./agent/dumps -run '^$' -bench 'BenchmarkHash$' -benchtime 5x | grep -E '^Benchmark'
echo
echo "## raw TLS 1.3 loopback"
go test ./tests/integration -run '^$' -bench TLSLoopback -benchtime 2048x | grep -E '^Benchmark'
echo
echo "## zstd"
go test ./agent/dumps -run '^$' -bench 'BenchmarkCompress$' -benchtime 5x | grep -E '^Benchmark'
echo
fi

# The dumps: dump-like, half zero pages, half random, in 1 MiB runs, with a
# header declaring the size (the agent's completeness check). Each run gets
# a hard link of the same file, so no copy competes with the upload.
for mib in "${sizes[@]}"; do
	src=$work/src-$mib.bin
	for i in $(seq "$mib"); do
		if [ $((i % 2)) = 0 ]; then head -c 1048576 /dev/zero; else head -c 1048576 /dev/urandom; fi
	done >"$src"
	.ci/fake-dump-header "$src"
done
sync

metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# run_set NAME BINDIR: a controller and an agent from BINDIR; the idle
# measurement, then each dump uploaded.
run_set() {
	local name=$1 bin=$2 d=$work/$1
	mkdir -p "$d"
	"$bin/livedump-controller" --dev --dev-agents 0 --data-dir "$d/c" --listen "127.0.0.1:$port" \
		--metrics-listen "127.0.0.1:$mport" >"$d/c.out" 2>"$d/c.log" &
	local ctl=$!
	pids+=($ctl)
	export LIVEDUMPCTL_CONFIG=$d/c/livedumpctl.yaml
	for _ in $(seq 100); do [ -f "$LIVEDUMPCTL_CONFIG" ] && "$bin/livedumpctl" agents list >/dev/null 2>&1 && break; sleep 0.2; done
	local tok
	tok=$("$bin/livedumpctl" tokens create --uses 1 --ttl 10m -o json | jq -r .secret)
	"$bin/livedump-agent" --simulate --controller "127.0.0.1:$port" --token "$tok" --ca "$d/c/ca.crt" \
		--state-dir "$d/a" --metrics-listen - 2>"$d/a.log" &
	local agent=$!
	pids+=($agent)
	for _ in $(seq 100); do [ "$("$bin/livedumpctl" agents list -o json | jq '.agents | length')" = 1 ] && break; sleep 0.2; done
	local dir=$d/a/host/drive_c/WINDOWS/LiveKernelReports
	mkdir -p "$dir"

	if [ "$idle_secs" -gt 0 ]; then
		sleep 5 # past enrollment and the first reports
		local t0 t1 rss0 rss1 peak r
		t0=$(awk '{print $14 + $15}' "/proc/$agent/stat")
		rss0=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
		peak=$rss0
		for _ in $(seq "$idle_secs"); do
			sleep 1
			r=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
			[ "$r" -gt "$peak" ] && peak=$r
		done
		t1=$(awk '{print $14 + $15}' "/proc/$agent/stat")
		rss1=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
		local anon file
		anon=$(awk '/RssAnon/ {print $2}' "/proc/$agent/status")
		file=$(awk '/RssFile/ {print $2}' "/proc/$agent/status")
		printf '%s: agent idle, connected, %d s: VmRSS %d → %d KiB (max %.1f MiB; private RssAnon %d KiB, the binary'"'"'s pages RssFile %d KiB), CPU %.3f %% of a core (%d ticks of 1/%d s)\n' \
			"$name" "$idle_secs" "$rss0" "$rss1" "$(echo "$peak / 1024" | bc -l)" "$anon" "$file" \
			"$(echo "($t1 - $t0) * 100 / $hz / $idle_secs" | bc -l)" $((t1 - t0)) "$hz"
	fi

	local n=0 mib src f st done0 sum0 sum1 secs comp hwm ref1 ref2 ref
	for mib in "${sizes[@]}"; do
		for _ in $(seq "$repeat"); do
			n=$((n + 1))
			src=$work/src-$mib.bin
			# The reference runs just before and just after the upload: the
			# machine's load changes by the second.
			ref1=$("$work/refcopy" -in "$src" -out "$d/refcopy.out" | awk '{print $5}')
			sync
			sum0=$(metric livedump_controller_dump_upload_seconds_sum)
			f=$dir/DTRACE-20261126-$(printf %04d $n).dmp
			ln "$src" "$f"
			done0=""
			for _ in $(seq 6000); do
				st=$("$bin/livedumpctl" dumps list -o json | jq -r --arg f "$(basename "$f")" '.dumps[]? | select(.file_name==$f) | .state')
				[ "$st" = DUMP_STATE_UPLOADED ] && { done0=1; break; }
				sleep 0.1
			done
			[ -n "$done0" ] || { echo "$name: upload of $mib MiB did not finish" >&2; exit 1; }
			sum1=$(metric livedump_controller_dump_upload_seconds_sum)
			rm -f "$d/c/blobs/sha256/"*/* 2>/dev/null || true # room for the next
			sync
			ref2=$("$work/refcopy" -in "$src" -out "$d/refcopy.out" | awk '{print $5}')
			ref=$(echo "($ref1 + $ref2) / 2" | bc -l)
			secs=$(echo "$sum1 - $sum0" | bc -l)
			comp=$("$bin/livedumpctl" dumps list -o json | jq -r --arg f "$(basename "$f")" '.dumps[] | select(.file_name==$f) | .compressed')
			hwm=$(awk '/VmHWM/ {print $2, $3}' "/proc/$agent/status")
			printf '| %s | %d MiB | %d MiB (ratio %.2f) | %.2f s | %.0f MiB/s | %.0f MiB/s (%.0f, %.0f) | %.0f %% | %s |\n' "$name" "$mib" \
				$((comp >> 20)) "$(echo "$mib * 1048576 / $comp" | bc -l)" "$secs" "$(echo "$mib / $secs" | bc -l)" "$ref" "$ref1" "$ref2" \
				"$(echo "100 * $mib / $secs / $ref" | bc -l)" "$hwm" | tee -a "$work/rows"
		done
	done
	kill "$agent" "$ctl"
	wait "$agent" "$ctl" 2>/dev/null || true
	rm -rf "$d"
}

echo "## agent idle; end-to-end verified upload (agent and controller processes, loopback mTLS) vs the reference"
echo "(upload: the controller's upload stream, from the header to the verified, published dump;"
echo " reference: bench/refcopy on the same file just before and just after (their mean; both in brackets):"
echo " TLS 1.3 loopback copy, SHA-256 on both ends, written and fsynced)"
echo
sets=("after:$work/bin")
[ -n "${BEFORE_BIN:-}" ] && sets=("before:$BEFORE_BIN" "${sets[@]}")
for s in "${sets[@]}"; do run_set "${s%%:*}" "${s#*:}"; done
echo
echo "| binaries | dump | compressed on the wire | upload | throughput | reference (before, after) | upload / reference | agent VmHWM |"
echo "|---|---|---|---|---|---|---|---|"
cat "$work/rows"
