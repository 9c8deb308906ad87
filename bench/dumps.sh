#!/usr/bin/env bash
# bench/dumps.sh: the dump pipeline's numbers on this machine, measured side
# by side in one run (the machines are noisy: compare ratios).
#   1. SHA-256: the agent's HashFile vs `openssl dgst -sha256`, same size;
#   2. end-to-end verified upload on loopback (a real controller process and
#      a real `livedump-agent --simulate` process, mTLS, zstd, resumable
#      protocol, SHA-256 verified by the controller) vs raw TLS loopback;
#   3. the agent's peak RSS (VmHWM) for a 256 MiB and a 4 GiB dump;
#   4. zstd ratio and cost.
# Usage: bench/dumps.sh [SIZES_MIB...]   (default: 256 4096)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-256 4096}")
[ $# -eq 0 ] && sizes=(256 4096)
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/bin/" ./cmd/livedump-controller ./cmd/livedump-agent ./cmd/livedumpctl
bin=$work/bin

echo "## SHA-256 (256 MiB file)"
head -c $((256 << 20)) /dev/urandom >"$work/h.bin"
openssl dgst -sha256 "$work/h.bin" >/dev/null # warm the page cache
start=$(date +%s.%N); openssl dgst -sha256 "$work/h.bin" >/dev/null; end=$(date +%s.%N)
echo "openssl dgst -sha256: $(echo "256 / ($end - $start)" | bc -l | xargs printf '%.0f') MiB/s"
go test ./agent/dumps -run '^$' -bench 'BenchmarkHash$' -benchtime 5x | grep -E '^Benchmark'
echo
echo "## raw TLS 1.3 loopback"
go test ./tests/integration -run '^$' -bench TLSLoopback -benchtime 2048x | grep -E '^Benchmark'
echo
echo "## zstd"
go test ./agent/dumps -run '^$' -bench 'BenchmarkCompress$' -benchtime 5x | grep -E '^Benchmark'
echo

"$bin/livedump-controller" --dev --dev-agents 0 --data-dir "$work/c" --listen 127.0.0.1:17443 \
	--metrics-listen 127.0.0.1:19464 >"$work/c.out" 2>"$work/c.log" &
pids+=($!)
export LIVEDUMPCTL_CONFIG=$work/c/livedumpctl.yaml
for _ in $(seq 100); do [ -f "$LIVEDUMPCTL_CONFIG" ] && "$bin/livedumpctl" agents list >/dev/null 2>&1 && break; sleep 0.2; done
tok=$("$bin/livedumpctl" tokens create --uses 1 --ttl 10m -o json | jq -r .secret)
"$bin/livedump-agent" --simulate --controller 127.0.0.1:17443 --token "$tok" --ca "$work/c/ca.crt" \
	--state-dir "$work/a" --metrics-listen 127.0.0.1:19465 2>"$work/a.log" &
agent=$!
pids+=($agent)
for _ in $(seq 100); do [ "$("$bin/livedumpctl" agents list -o json | jq '.agents | length')" = 1 ] && break; sleep 0.2; done
dir=$work/a/host/drive_c/WINDOWS/LiveKernelReports
mkdir -p "$dir"

echo "## end-to-end verified upload (agent and controller processes, loopback mTLS)"
echo "| dump | compressed on the wire | upload (hashed → verified on the controller) | throughput | agent VmHWM |"
echo "|---|---|---|---|---|"
n=0
for mib in "${sizes[@]}"; do
	n=$((n + 1))
	f=$dir/DTRACE-20261126-000$n.dmp
	# Dump-like: half zero pages, half random, in 1 MiB runs.
	: >"$f.tmp"
	for i in $(seq "$mib"); do
		if [ $((i % 2)) = 0 ]; then head -c 1048576 /dev/zero; else head -c 1048576 /dev/urandom; fi
	done >>"$f.tmp"
	"$(dirname "$0")/../.ci/fake-dump-header" "$f.tmp" # a header declaring the size: the agent's completeness check
	mv "$f.tmp" "$f"
	t_hashed="" t_done=""
	for _ in $(seq 3000); do
		st=$("$bin/livedumpctl" dumps list -o json | jq -r --arg f "$(basename "$f")" '.dumps[]? | select(.file_name==$f) | .state')
		now=$(date +%s.%N)
		case "$st" in
		DUMP_STATE_HASHED | DUMP_STATE_UPLOADING) [ -z "$t_hashed" ] && t_hashed=$now ;;
		DUMP_STATE_UPLOADED) t_done=$now; break ;;
		esac
		sleep 0.1
	done
	[ -n "$t_done" ] || { echo "upload of $mib MiB did not finish" >&2; exit 1; }
	[ -n "$t_hashed" ] || t_hashed=$t_done
	comp=$("$bin/livedumpctl" dumps list -o json | jq -r --arg f "$(basename "$f")" '.dumps[] | select(.file_name==$f) | .compressed')
	secs=$(echo "$t_done - $t_hashed" | bc -l)
	hwm=$(awk '/VmHWM/ {print $2, $3}' "/proc/$agent/status")
	printf '| %d MiB | %d MiB (ratio %.2f) | %.1f s | %.0f MiB/s | %s |\n' "$mib" $((comp >> 20)) "$(echo "$mib * 1048576 / $comp" | bc -l)" \
		"$secs" "$(echo "$mib / $secs" | bc -l)" "$hwm"
done
