package capture

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// stackEvent builds an event from frames as dtrace prints them.
func stackEvent(probeName, process string, user, kernel []string) *livedumpv1.TriggerEvent {
	ev := &livedumpv1.TriggerEvent{Probe: probeName, Process: process}
	for _, l := range user {
		f := probe.ParseFrame(l)
		ev.UserFrames = append(ev.UserFrames, &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address})
	}
	for _, l := range kernel {
		f := probe.ParseFrame(l)
		ev.KernelFrames = append(ev.KernelFrames, &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address})
	}
	return ev
}

var dispatcher = []string{"nt`KiSystemServiceCopyEnd+0x25"}

func TestSignatureFullStackKeepsItsForm(t *testing.T) {
	ev := stackEvent("NtCreateFile:return", "ms-teams.exe", []string{
		"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66",
		"ms-teams`CFileCache::Open+0x1a", "ms-teams`ConfigStore::Load+0x2b", "ms-teams`Main+0x10",
	}, dispatcher)
	want := "ntdll!NtCreateFile < KERNELBASE!CreateFileInternal < KERNELBASE!CreateFileW < ms-teams!CFileCache::Open < ms-teams!ConfigStore::Load"
	if got := Signature(ev, 0); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := Signature(ev, 2); got != "ntdll!NtCreateFile < KERNELBASE!CreateFileInternal" {
		t.Errorf("2 frames: %q", got)
	}
}

// module`0xaddr keeps the module and the address within its 64 KiB
// alignment: the same code on two machines (different ASLR bases) signs
// alike, other code differently.
func TestSignatureModuleAndOffset(t *testing.T) {
	stack := func(addr string) *livedumpv1.TriggerEvent {
		return stackEvent("NtCreateFile:return", "ms-teams.exe", []string{
			"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileW+0x66", "ms-teams`" + addr, "KERNEL32`BaseThreadInitThunk+0x1d",
		}, dispatcher)
	}
	a, b, c := Signature(stack("0x7ff6a1b21234"), 0), Signature(stack("0x7ff7c0de1234"), 0), Signature(stack("0x7ff6a1b25678"), 0)
	if a != b || a == c {
		t.Errorf("machine 1 %q, machine 2 %q, other code %q", a, b, c)
	}
	if want := "ntdll!NtCreateFile < KERNELBASE!CreateFileW < ms-teams!?+0x1234 < KERNEL32!BaseThreadInitThunk"; a != want {
		t.Errorf("got %q, want %q", a, want)
	}
	// A stack with no symbol at all (no symbol path) is still signed by
	// its modules and offsets.
	nosym := stackEvent("NtCreateFile:return", "ms-teams.exe", []string{"ntdll`0x7ffb12340014", "KERNELBASE`0x7ffb0aa10066", "ms-teams`0x7ff6a1b21234"}, dispatcher)
	if got := Signature(nosym, 0); got != "ntdll!?+0x0014 < KERNELBASE!?+0x0066 < ms-teams!?+0x1234" {
		t.Errorf("unsymbolized: %q", got)
	}
}

// Bare addresses are <unresolved>, a run of them one token that does not
// use up the frames; a stack that starts unresolved is qualified by the
// probe, and the resolved frames after keep such stacks apart.
func TestSignatureUnresolved(t *testing.T) {
	jit := stackEvent("NtCreateFile:return", "ms-teams.exe", []string{
		"ntdll`NtCreateFile+0x14", "ms-teams`CFileCache::Open+0x1a", "0x1f012345678", "0x00007ffb12345678", "ms-teams`ConfigStore::Load+0x2b",
		"ms-teams`Main+0x10", "KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28",
	}, dispatcher)
	want := "ntdll!NtCreateFile < ms-teams!CFileCache::Open < <unresolved> < ms-teams!ConfigStore::Load < ms-teams!Main < KERNEL32!BaseThreadInitThunk"
	if got := Signature(jit, 0); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	top := func(fn string) *livedumpv1.TriggerEvent {
		return stackEvent("NtOpenFile:return", "ms-teams.exe", []string{"0x1f012345678", "ms-teams`" + fn + "+0x10", "KERNEL32`BaseThreadInitThunk+0x1d"}, dispatcher)
	}
	a, b := Signature(top("Load"), 0), Signature(top("Save"), 0)
	if a == b || !strings.HasPrefix(a, "NtOpenFile:return: <unresolved> < ms-teams!Load") {
		t.Errorf("unresolved top frames: %q, %q", a, b)
	}
	// Only addresses (the process exited): probe, process and kernel.
	exited := func(proc string) string {
		return Signature(stackEvent("NtCreateFile:return", proc, []string{"0x00007ffb12345678", "0x00007ff6a1b21234"}, dispatcher), 0)
	}
	if got := exited("ms-teams.exe"); got != "NtCreateFile:return in ms-teams.exe: <unresolved> | nt!KiSystemServiceCopyEnd" {
		t.Errorf("exited process: %q", got)
	}
	if exited("ms-teams.exe") == exited("SearchIndexer.") {
		t.Error("unresolved stacks of two processes share a signature")
	}
}

// Empty and one-frame user stacks sign by probe, process and kernel
// frames: never one bucket of "no frames" for everything.
func TestSignatureEmptyAndShortStacks(t *testing.T) {
	empty := func(probe, proc string, kernel []string) string {
		return Signature(stackEvent(probe, proc, nil, kernel), 0)
	}
	if got := empty("NtCreateFile:return", "MS-Teams.exe", dispatcher); got != "NtCreateFile:return in ms-teams.exe: no user frames | nt!KiSystemServiceCopyEnd" {
		t.Errorf("empty: %q", got)
	}
	seen := map[string]bool{}
	for _, s := range []string{
		empty("NtCreateFile:return", "ms-teams.exe", dispatcher),
		empty("NtCreateFile:return", "SearchIndexer.", dispatcher),
		empty("NtOpenFile:return", "ms-teams.exe", dispatcher),
		empty("NtOpenFile:return", "ms-teams.exe", []string{"Ntfs.sys`NtfsCommonCreate+0x43d", "nt`IofCallDriver+0x55"}),
	} {
		if seen[s] {
			t.Errorf("%q twice", s)
		}
		seen[s] = true
	}
	if empty("NtCreateFile:return", "ms-teams.exe", dispatcher) != empty("NtCreateFile:return", "MS-TEAMS.EXE", dispatcher) {
		t.Error("the process is not compared case-insensitively")
	}
	one := func(proc string) string {
		return Signature(stackEvent("NtCreateFile:return", proc, []string{"ntdll`NtCreateFile+0x14"}, dispatcher), 0)
	}
	if got := one("ms-teams.exe"); got != "NtCreateFile:return in ms-teams.exe: ntdll!NtCreateFile | nt!KiSystemServiceCopyEnd" || one("SearchIndexer.") == got {
		t.Errorf("one frame: %q, %q", got, one("SearchIndexer."))
	}
}

// Names in the ANSI code page (bytes that are not UTF-8) still give a
// signature that marshals.
func TestSignatureIsUTF8(t *testing.T) {
	ev := stackEvent("NtCreateFile:return", "caf\xe9.exe", []string{"ntdll`NtCreateFile+0x14"}, dispatcher)
	full := stackEvent("NtCreateFile:return", "ms-teams.exe", []string{"ntdll`NtCreateFile+0x14", "S\xe9curit\xe9Agent`Intercepteur::AvantAppel+0x3c"}, dispatcher)
	for _, e := range []*livedumpv1.TriggerEvent{ev, full} {
		sig := Signature(e, 0)
		if !utf8.ValidString(sig) {
			t.Errorf("%q is not UTF-8", sig)
		}
		if _, err := proto.Marshal(&livedumpv1.Bucket{Signature: sig}); err != nil {
			t.Error(err)
		}
	}
}

// TestSignatureBucketsOnPoorStacks buckets a stream shaped like the
// simulator's (and Windows'): per process and syscall, three call paths,
// each seen in full, as one frame, empty, unsymbolized and unresolved. No
// bucket may take the poor stacks of everything, and a per-signature
// quota of one still admits a dump per process and syscall.
func TestSignatureBucketsOnPoorStacks(t *testing.T) {
	procs := []string{"ms-teams.exe", "SearchIndexer.", "explorer.exe"}
	probes := []string{"NtCreateFile:return", "NtOpenFile:return"}
	buckets := map[string]int{}
	total := 0
	for pi, proc := range procs {
		mod := strings.TrimSuffix(strings.TrimSuffix(proc, ".exe"), ".")
		for qi, probe := range probes {
			fn := strings.Split(probe, ":")[0]
			for path := 0; path < 3; path++ {
				full := []string{"ntdll`" + fn + "+0x14", "KERNELBASE`CreateFileW+0x66",
					fmt.Sprintf("%s`Path%d+0x1a", mod, path), "0x1f012345678", fmt.Sprintf("%s`Caller%d+0x2b", mod, path),
					"KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28"}
				base := uint64(0x7ff600000000 + (pi*7+qi)<<16)
				var nosym, exited []string
				for i, f := range full {
					addr := base + uint64(0x1000*(i+1)+path*0x40)
					if m, _, ok := strings.Cut(f, "`"); ok {
						nosym = append(nosym, fmt.Sprintf("%s`0x%x", m, addr))
					} else {
						nosym = append(nosym, f)
					}
					exited = append(exited, fmt.Sprintf("0x%016x", addr))
				}
				for _, user := range [][]string{full, full[:1], nil, nosym, exited} {
					buckets[Signature(stackEvent(probe, proc, user, dispatcher), 0)]++
					total++
				}
			}
		}
	}
	for sig, n := range buckets {
		if n > 3 { // one-frame, empty and exited stacks of one process and syscall, at most
			t.Errorf("bucket %q holds %d of %d events", sig, n, total)
		}
	}
	pairs := len(procs) * len(probes)
	if len(buckets) < pairs*3*2 {
		t.Errorf("%d buckets for %d events", len(buckets), total)
	}
	admitted := map[string]bool{}
	for sig := range buckets {
		for _, proc := range procs {
			for _, probe := range probes {
				if strings.HasPrefix(sig, probe+" in "+strings.ToLower(proc)+":") {
					admitted[probe+" "+proc] = true
				}
			}
		}
	}
	if len(admitted) != pairs {
		t.Errorf("poor stacks sign %d of %d process and syscall pairs apart", len(admitted), pairs)
	}
}
