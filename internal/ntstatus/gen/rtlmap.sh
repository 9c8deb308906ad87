#!/bin/sh
# gen/rtlmap.sh [RAW-OUTPUT]: regenerate zz_generated_rtlmap.go by running
# gen/rtlmap (RtlNtStatusToDosError for every known NTSTATUS) under Wine, in
# a throw-away prefix made by .ci/wine/setup. Run from internal/ntstatus
# (go generate does) or from anywhere. With RAW-OUTPUT, keep rtlmap's output.
set -eu
cd "$(dirname "$0")/.."
repo=$(cd ../.. && pwd)
if ! command -v wine >/dev/null 2>&1; then
	echo "rtlmap.sh: wine is not installed; it is needed to call RtlNtStatusToDosError (see README.md)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'WINEPREFIX="$work/prefix" wineserver -k 2>/dev/null || true; rm -rf "$work"' EXIT
"$repo/.ci/wine/setup" "$work/prefix" >&2
GOOS=windows GOARCH=amd64 go build -trimpath -o "$work/rtlmap.exe" ./gen/rtlmap
LIVEDUMP_WINEPREFIX="$work/prefix" "$repo/.ci/wine/exec" "$work/rtlmap.exe" >"$work/rtlmap.txt"
if [ $# -ge 1 ]; then
	cp "$work/rtlmap.txt" "$1"
fi
go run ./gen -rtlmap "$work/rtlmap.txt"
echo "rtlmap.sh: wrote zz_generated_rtlmap.go" >&2
