#!/bin/sh
# A stand-in for dtrace.exe, run by the agent with --dtrace-path in
# TestDTracePathRunsFile. The compile-only run (-e) succeeds and prints
# nothing; the real run prints fake-dtrace.out (dtrace.exe's CRLF line ends,
# raw-address frames, an empty user stack, C++ template symbols, a 519-byte
# frame, ANSI code page bytes in a module and a process name) with @NOWn@
# replaced by a current walltimestamp, then exits 0 as after exit(0).
# Every command line is appended to $FAKE_DTRACE_LOG when it is set.
[ -n "${FAKE_DTRACE_LOG:-}" ] && echo "$*" >>"$FAKE_DTRACE_LOG"
for a in "$@"; do
	[ "$a" = "-e" ] && exit 0
done
now=$(date +%s)00000000
LC_ALL=C sed "s/@NOW\([0-9]\)@/$now\1/" "$(dirname "$0")/fake-dtrace.out"
exit 0
