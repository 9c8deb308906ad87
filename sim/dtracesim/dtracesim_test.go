package dtracesim

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	ldprobe "github.com/livedump/livedump/internal/probe" // this package has a type probe
	"github.com/livedump/livedump/sim"
)

// captureScript is a script in the shape internal/probe renders, written
// out literally so that this package's tests pin the contract even if the
// renderer changes.
func captureScript(limit int, quiet, destructive, kstack bool, lkd string) string {
	var b strings.Builder
	b.WriteString("/*\n * livedump capture abc: rendered from the capture spec; do not edit.\n * processes: ms-teams.exe, SearchIndexer.exe\n * statuses: 0xC000000D, 0xC0000022\n */\n")
	if quiet {
		b.WriteString("#pragma D option quiet\n")
	}
	if destructive {
		b.WriteString("#pragma D option destructive\n")
	}
	b.WriteString("\nint livedump_hits;\n\n")
	probes := "syscall::NtCreateFile:return,\nsyscall::NtOpenFile:return\n"
	b.WriteString(probes)
	fmt.Fprintf(&b, "/(execname == \"ms-teams.exe\" || execname == \"SearchIndexer.\") && ((uint32_t)arg0 == 0xC000000D || (uint32_t)arg0 == 0xC0000022) && livedump_hits < %d/\n", limit)
	b.WriteString("{\n\tlivedump_hits++;\n")
	b.WriteString("\tprintf(\"@@livedump begin %d %d %d %d %s:%s 0x%08x %s\\n\", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);\n")
	b.WriteString("\tprintf(\"@@livedump ustack\");\n\tustack(10);\n")
	if kstack {
		b.WriteString("\tprintf(\"\\n@@livedump kstack\");\n\tstack();\n")
	}
	b.WriteString("\tprintf(\"\\n@@livedump end %d\\n\", livedump_hits);\n")
	if lkd != "" {
		fmt.Fprintf(&b, "\tlkd(%s);\n", lkd)
	}
	b.WriteString("}\n\n")
	b.WriteString(probes)
	fmt.Fprintf(&b, "/livedump_hits >= %d/\n{\n\texit(0);\n}\n", limit)
	return b.String()
}

var beginLine = regexp.MustCompile(`^@@livedump begin (\d+) (\d+) (\d+) (\d+) (\w+):(\w+) 0x([0-9a-f]{8}) (.*)$`)

// begins returns the fields of every begin line of dtrace's output.
func begins(t *testing.T, out string) [][]string {
	t.Helper()
	var recs [][]string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "@@livedump begin"); i >= 0 {
			m := beginLine.FindStringSubmatch(l[i:])
			if m == nil {
				t.Fatalf("malformed begin line %q", l)
			}
			recs = append(recs, m)
		}
	}
	return recs
}

func TestEnvHostIsSimulatedHostsVariable(t *testing.T) {
	if EnvHost != sim.EnvHost {
		t.Errorf("EnvHost = %q, sim.EnvHost = %q: the simulated host would not find its dtrace the machine", EnvHost, sim.EnvHost)
	}
}

func TestDeviceNotAvailable(t *testing.T) {
	const want = "dtrace: failed to initialize dtrace: DTrace device not available on system\n"
	script := captureScript(1, true, false, false, "")
	for _, tc := range []struct {
		name string
		o    machineOpts
		env  bool
	}{
		{"no machine", machineOpts{}, false},
		{"boot flag never set", machineOpts{noBCD: true}, true},
		{"boot flag set, no reboot since", machineOpts{noReboot: true}, true},
		{"DTrace not installed", machineOpts{noInstall: true}, true},
		// Memory integrity running: users report this very message until
		// Device Guard is off (DTrace-on-Windows issue #64); the
		// simulation takes the harsher reading.
		{"memory integrity (HVCI) running", machineOpts{hvci: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := newMachine(t, tc.o)
			env := fastEnv(dir)
			if !tc.env {
				env = env[1:]
			}
			r := runDTrace(t, []string{"-q", "-s", writeScript(t, script)}, env)
			if r.code != 1 || r.stderr != want || r.stdout != "" {
				t.Errorf("code %d, stdout %q, stderr %q; want 1, nothing, %q", r.code, r.stdout, r.stderr, want)
			}
			// The driver check provisioning runs fails alike.
			r = runDTrace(t, []string{"-ln", "syscall::NtClose:return"}, env)
			if r.code != 1 || r.stderr != want {
				t.Errorf("dtrace -ln: code %d, stderr %q; want 1, %q", r.code, r.stderr, want)
			}
		})
	}
}

// TestRenderedScript runs what internal/probe renders and reads the output
// with the agent's parser: the two ends of the contract meet here.
func TestRenderedScript(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script, err := ldprobe.Render(ldprobe.Spec{
		CaptureID:   "c1",
		Processes:   []string{"ms-teams.exe", "SearchIndexer.exe"},
		Syscalls:    []string{"NtCreateFile", "NtOpenFile"},
		Statuses:    []uint32{0xC000000D, 0xC0000022},
		UStack:      10,
		KStack:      true,
		PerAgentCap: 20,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := runDTrace(t, []string{"-q", "-s", writeScript(t, script)}, fastEnv(dir))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "FUNCTION:NAME") {
		t.Error("quiet output has the CPU/ID/FUNCTION:NAME header")
	}
	var p ldprobe.Parser
	var recs []*ldprobe.Record
	for _, l := range strings.SplitAfter(r.stdout, "\n") {
		rec, err := p.Line(l)
		if err != nil {
			t.Fatalf("agent parser: %v\noutput:\n%s", err, r.stdout)
		}
		if rec != nil {
			recs = append(recs, rec)
		}
	}
	if err := p.End(); err != nil || p.Ignored() != 0 {
		t.Fatalf("agent parser at the end: %v, %d lines ignored", err, p.Ignored())
	}
	if len(recs) != 20 {
		t.Fatalf("%d records, want 20 (the cap)", len(recs))
	}
	kinds := map[string]int{}
	for i, rec := range recs {
		if rec.Seq != i+1 || !slices.Contains([]string{"ms-teams.exe", "SearchIndexer."}, rec.Process) ||
			!slices.Contains([]uint32{0xC000000D, 0xC0000022}, rec.Status) ||
			!slices.Contains([]string{"NtCreateFile:return", "NtOpenFile:return"}, rec.Probe) {
			t.Errorf("record %d does not match the predicate: %+v", i+1, rec)
		}
		// User stacks are as poor as on Windows: from none to ten frames;
		// the kernel stack at a syscall probe is the dispatcher only.
		if len(rec.User) > 10 || len(rec.Kernel) != 1 || rec.Kernel[0].Raw != "nt`KiSystemServiceCopyEnd+0x25" {
			t.Errorf("record %d: %d user frames (want 0..10), kernel %v (want the dispatcher only)", i+1, len(rec.User), rec.Kernel)
		}
		kinds[stackKindOf(rec.User)]++
		if d := time.Since(rec.Time); d < 0 || d > time.Minute {
			t.Errorf("record %d: walltimestamp %v is not now", i+1, rec.Time)
		}
		if rec.PID < 1000 || rec.PID > 9999 || rec.PID%4 != 0 || rec.TID%4 != 0 {
			t.Errorf("record %d: pid %d tid %d are not Windows-like", i+1, rec.PID, rec.TID)
		}
	}
	if r.st.filtered == 0 || r.st.firings <= 20 {
		t.Errorf("%d firings, %d filtered by the predicate: the predicate was never put to work", r.st.firings, r.st.filtered)
	}
	if kinds["full"] == 0 || kinds["full"] == len(recs) {
		t.Errorf("user stacks by kind %v: want some full and some poor ones", kinds)
	}
}

// TestPredicateFilters checks every printed event against the predicate
// over many firings, and that the firings the predicate refused were many.
func TestPredicateFilters(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	r := runDTrace(t, []string{"-s", writeScript(t, captureScript(150, true, false, false, ""))}, fastEnv(dir))
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	recs := begins(t, r.stdout)
	if len(recs) != 150 {
		t.Fatalf("%d events, want 150", len(recs))
	}
	procs, statuses := map[string]int{}, map[string]int{}
	for _, m := range recs {
		procs[m[8]]++
		statuses[m[7]]++
		if m[6] != "return" || (m[5] != "NtCreateFile" && m[5] != "NtOpenFile") {
			t.Errorf("event from probe %s:%s", m[5], m[6])
		}
	}
	for p := range procs {
		if p != "ms-teams.exe" && p != "SearchIndexer." {
			t.Errorf("event from process %q, which the predicate excludes", p)
		}
	}
	for s := range statuses {
		if s != "c000000d" && s != "c0000022" {
			t.Errorf("event with status 0x%s, which the predicate excludes", s)
		}
	}
	if len(procs) != 2 || len(statuses) != 2 {
		t.Errorf("processes %v, statuses %v: want both of each", procs, statuses)
	}
	// About 40% of firings are built not to match.
	if r.st.filtered < r.st.firings/5 || r.st.firings < 150+r.st.filtered {
		t.Errorf("%d firings, %d filtered out", r.st.firings, r.st.filtered)
	}
}

// TestOutputFormat pins the bytes dtrace prints for one event: stacks after
// a newline, one frame per line indented 14 spaces, innermost first, and
// the newline of dtrace's last output at the end.
func TestOutputFormat(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	r := runDTrace(t, []string{"-s", writeScript(t, captureScript(1, true, false, true, ""))}, fastEnv(dir))
	// A frame is module`symbol+0xoff, module`0xaddr or a bare address;
	// module names may be ANSI code page bytes. The user stack may be
	// empty; the kernel stack at a syscall probe is the dispatcher only.
	frame := ` {14}(?:[^\s` + "`" + `]+` + "`" + `\S+|0x[0-9a-f]{1,16})\n`
	want := regexp.MustCompile(`^@@livedump begin 1 \d{19} \d{4} \d{4,5} Nt(?:Create|Open)File:return 0x(?:c000000d|c0000022) (?:ms-teams\.exe|SearchIndexer\.)\n` +
		`@@livedump ustack\n(?:` + frame + `){0,10}\n` +
		`@@livedump kstack\n {14}nt` + "`" + `KiSystemServiceCopyEnd\+0x25\n\n` +
		`@@livedump end 1\n\n$`)
	if r.code != 0 || r.stderr != "" || !want.MatchString(r.stdout) {
		t.Errorf("code %d, stderr %q, output:\n%s", r.code, r.stderr, r.stdout)
	}
}

func TestNonQuiet(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{reportsDir: `\??\C:\livedumps`})
	path := writeScript(t, captureScript(2, false, true, false, "0"))
	r := runDTrace(t, []string{"-s", path}, fastEnv(dir))
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	wantErr := "dtrace: script '" + path + "' matched 4 probes\ndtrace: allowing destructive actions\n"
	if r.stderr != wantErr {
		t.Errorf("stderr %q, want %q", r.stderr, wantErr)
	}
	lines := strings.Split(r.stdout, "\n")
	if lines[0] != "CPU     ID                    FUNCTION:NAME" {
		t.Fatalf("first line %q, want the header", lines[0])
	}
	prefix := regexp.MustCompile(`^[ 0-3]{2}[0-3] [ 0-9]{6} [ A-Za-z:]{32} `)
	var firstPrefixed []string
	for _, l := range lines[1:] {
		if prefix.MatchString(l) {
			firstPrefixed = append(firstPrefixed, l)
		}
	}
	// Each clause's first record of a firing carries the prefix: two
	// begin lines, and the exit clause of the last firing (a line of its
	// own: exit() prints nothing, and the consumer ends the record with a
	// newline).
	if len(firstPrefixed) != 3 || !strings.Contains(firstPrefixed[0], "File:return @@livedump begin 1 ") ||
		!strings.Contains(firstPrefixed[1], "File:return @@livedump begin 2 ") ||
		!regexp.MustCompile(`^[ 0-3]{2}[0-3] [ 0-9]{6} +Nt(Create|Open)File:return $`).MatchString(firstPrefixed[2]) {
		t.Errorf("prefixed lines %q\noutput:\n%s", firstPrefixed, r.stdout)
	}
	if strings.Count(r.stdout, "FUNCTION:NAME") != 1 {
		t.Error("header printed more than once")
	}
	// The probe IDs are stable: NtCreateFile's return probe is always the same.
	if !regexp.MustCompile(` +175 +NtCreateFile:return|` + ` +107 +NtOpenFile:return`).MatchString(r.stdout) {
		t.Errorf("unexpected probe IDs:\n%s", r.stdout)
	}
}

func TestExitAfterCap(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := strings.Replace(captureScript(3, true, false, false, ""), "exit(0)", "exit(3)", 1)
	r := runDTrace(t, []string{"-s", writeScript(t, script)}, fastEnv(dir))
	if r.code != 3 || len(begins(t, r.stdout)) != 3 {
		t.Errorf("code %d with %d events; want 3 and 3", r.code, len(begins(t, r.stdout)))
	}
	if !strings.HasSuffix(r.stdout, "@@livedump end 3\n\n") {
		t.Errorf("output does not end with the last event and dtrace's final newline:\n%s", r.stdout)
	}
}

func TestInterrupt(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := `#pragma D option quiet
int n;
syscall::NtCreateFile:return
{
	n++;
}
END
{
	printf("fired %d times\n", n);
}
`
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	var out, errb bytes.Buffer
	start := time.Now()
	code, st := run(ctx, []string{"-s", writeScript(t, script)}, fastEnv(dir), &out, &errb)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("dtrace took %v to stop after the interrupt", d)
	}
	want := fmt.Sprintf("\nfired %d times\n\n", st.firings)
	if code != 0 || out.String() != want || errb.String() != "" || st.firings == 0 {
		t.Errorf("code %d, stdout %q, stderr %q; want 0, %q", code, out.String(), errb.String(), want)
	}
}

func TestOutputFileAppends(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	ofile := filepath.Join(t.TempDir(), "out.txt")
	if err := os.WriteFile(ofile, []byte("earlier run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, captureScript(2, true, false, false, ""))
	for run := 1; run <= 2; run++ {
		r := runDTrace(t, []string{"-q", "-o", ofile, "-s", script}, fastEnv(dir))
		if r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("run %d: code %d, stdout %q, stderr %q", run, r.code, r.stdout, r.stderr)
		}
	}
	data, err := os.ReadFile(ofile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "earlier run\n@@livedump begin 1 ") || len(begins(t, string(data))) != 4 {
		t.Errorf("output file:\n%s", data)
	}
	r := runDTrace(t, []string{"-o", filepath.Join(t.TempDir(), "missing", "out.txt"), "-s", script}, fastEnv(dir))
	if r.code != 1 || !strings.HasPrefix(r.stderr, "dtrace: failed to open output file '") || !strings.HasSuffix(r.stderr, "': No such file or directory\n") {
		t.Errorf("unwritable -o: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestDestructiveRequired(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	path := writeScript(t, captureScript(1, true, false, false, "0"))
	r := runDTrace(t, []string{"-s", path}, fastEnv(dir))
	want := "dtrace: failed to enable '" + path + "': Destructive actions not allowed\n"
	if r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Errorf("code %d, stdout %q, stderr %q; want 1, nothing, %q", r.code, r.stdout, r.stderr, want)
	}
	// -w permits it.
	r = runDTrace(t, []string{"-w", "-s", path}, fastEnv(dir))
	if r.code != 0 || r.stderr != "" || len(r.st.dumps) != 1 {
		t.Errorf("with -w: code %d, stderr %q, dumps %v", r.code, r.stderr, r.st.dumps)
	}
}

var dumpName = regexp.MustCompile(`^DTRACE-\d{8}-\d{4}(-\d+)?\.dmp$`)

// TestLiveDump runs a capture that takes a dump and watches the file grow
// in the configured LiveKernelReports folder; dtrace exits only once it is
// complete.
func TestLiveDump(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{reportsDir: `\??\C:\livedumps`})
	folder := filepath.Join(dir, sim.DriveDir, "livedumps")
	if _, err := os.Stat(folder); !os.IsNotExist(err) {
		t.Fatalf("the dump folder exists before the first dump: %v", err)
	}
	const size = 1 << 20
	env := append(fastEnv(dir), EnvDumpBytes+"=1m", EnvDumpSeconds+"=1")
	done := make(chan result, 1)
	script := writeScript(t, captureScript(1, true, true, true, "0"))
	go func() {
		var out, errb bytes.Buffer
		code, st := run(context.Background(), []string{"-s", script}, env, &out, &errb)
		done <- result{code: code, stdout: out.String(), stderr: errb.String(), st: st}
	}()
	var sizes []int64
	var r result
	deadline := time.After(20 * time.Second)
poll:
	for {
		select {
		case r = <-done:
			break poll
		case <-deadline:
			t.Fatal("dtrace did not exit")
		case <-time.After(20 * time.Millisecond):
			ents, _ := os.ReadDir(folder)
			for _, e := range ents {
				if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
					if n := len(sizes); n == 0 || sizes[n-1] != info.Size() {
						sizes = append(sizes, info.Size())
					}
				}
			}
		}
	}
	if r.code != 0 || r.stderr != "" || len(begins(t, r.stdout)) != 1 {
		t.Fatalf("code %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	ents, err := os.ReadDir(folder)
	if err != nil || len(ents) != 1 || !dumpName.MatchString(ents[0].Name()) || dumpName.FindStringSubmatch(ents[0].Name())[1] != "" {
		t.Fatalf("dump folder: %v, %v", ents, err)
	}
	data, err := os.ReadFile(filepath.Join(folder, ents[0].Name()))
	if err != nil || len(data) != size || !bytes.HasPrefix(data, []byte("PAGEDU64")) {
		t.Fatalf("dump: %d bytes, starts %q, %v", len(data), data[:min(8, len(data))], err)
	}
	if len(sizes) < 3 || !slices.IsSorted(sizes) {
		t.Errorf("sizes seen while dtrace ran: %v; want the file to grow in steps to %d before dtrace exits", sizes, size)
	}
	if want := time.Now().Format("20060102"); !strings.HasPrefix(ents[0].Name(), "DTRACE-"+want) &&
		!strings.HasPrefix(ents[0].Name(), "DTRACE-"+time.Now().Add(-time.Minute).Format("20060102")) {
		t.Errorf("dump %s is not named after today's date", ents[0].Name())
	}
}

// TestDumpPlacement checks names and folders with a fixed clock: full
// dumps in the root, minidumps in DTRACE\, a suffix for a second dump in
// the same minute, and %SystemRoot%\LiveKernelReports when nothing is
// configured.
func TestDumpPlacement(t *testing.T) {
	for _, tc := range []struct {
		reports string
		folder  []string
	}{
		{"", []string{"WINDOWS", "LiveKernelReports"}},
		{`\??\C:\livedumps`, []string{"livedumps"}},
		{`C:\dumps\live`, []string{"dumps", "live"}},
		{`%SystemRoot%\LKR`, []string{"WINDOWS", "LKR"}},
	} {
		t.Run(tc.reports, func(t *testing.T) {
			dir, _ := newMachine(t, machineOpts{reportsDir: tc.reports})
			m, err := loadMachine(dir)
			if err != nil {
				t.Fatal(err)
			}
			clock := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
			d := newDumper(m, 3*dumpHeaderSize/2, 0, 1, func() time.Time { return clock })
			// One live dump at a time: each request waits for the last
			// (TestConcurrentLKDDropped covers requests that do not).
			for _, mode := range []int64{0, 2, 0, 4} {
				d.request(mode)
				d.wait()
			}
			files, errs := d.written()
			if len(errs) != 0 {
				t.Fatal(errs)
			}
			root := filepath.Join(append([]string{dir, sim.DriveDir}, tc.folder...)...)
			want := []string{
				filepath.Join(root, "DTRACE-20250102-0304.dmp"),
				filepath.Join(root, "DTRACE", "DTRACE-20250102-0304.dmp"),
				filepath.Join(root, "DTRACE-20250102-0304-2.dmp"),
				filepath.Join(root, "DTRACE-20250102-0304-3.dmp"),
			}
			if !slices.Equal(files, want) {
				t.Errorf("dumps %q\nwant %q", files, want)
			}
			for _, f := range files {
				if st, err := os.Stat(f); err != nil || st.Size() != 3*dumpHeaderSize/2 {
					t.Errorf("%s: %v, %v", f, st, err)
				}
			}
		})
	}
}

func TestLKDModeOneNeedsKernelDebugger(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	r := runDTrace(t, []string{"-s", writeScript(t, captureScript(1, true, true, false, "1"))}, fastEnv(dir))
	want := regexp.MustCompile(`^dtrace: error on enabled probe ID \d+ \(ID \d+: syscall::Nt(Create|Open)File:return\): illegal operation in action #5\n$`)
	if r.code != 0 || !want.MatchString(r.stderr) || len(r.st.dumps) != 0 || len(begins(t, r.stdout)) != 0 {
		t.Errorf("code %d, stderr %q, dumps %v, stdout %q", r.code, r.stderr, r.st.dumps, r.stdout)
	}
}

func TestCompileErrors(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	for _, tc := range []struct{ src, want string }{
		{"BEGIN\n{\n\tx = ;\n}\n", `line 3: syntax error near ";"`},
		{"syscall::NtCreateFile:return\n/foo == 1/\n{\n}\n", "line 2: failed to resolve foo: Unknown variable name"},
		{"syscall::NtCreateFile:return\n{\n\t@c[execname] = count();\n}\n", "line 3: aggregations are not supported by the simulated dtrace"},
		{"syscall::NtCreateFile:return\n{\n\tprintf(\"%s\\n\", pid);\n}\n",
			"line 3: printf( ) argument #2 is incompatible with conversion #1 prototype:\n\tconversion: %s\n\t prototype: char [] or string (or use stringof)\n\t  argument: pid_t"},
		{"syscall::NtCreateFile:return\n{\n\tprintf(\"%d %d\\n\", pid);\n}\n", "line 3: printf( ) prototype mismatch: conversion #2 (%d) is missing a corresponding value argument"},
		{"syscall::NtCreateFile:return { trace(copyinstr(arg0)); }", "line 1: copyinstr( ) is not supported by the simulated dtrace in an expression"},
		{"syscall::open:entry\n{\n}\n", "line 1: probe description syscall::open:entry does not match any probes"},
		{"fbt:nt:NtCreateFile:entry\n{\n}\n", "line 1: probe description fbt:nt:NtCreateFile:entry does not match any probes"},
		{"#define X 1\nBEGIN {}\n", "line 1: invalid control directive: #define"},
		{"syscall::NtCreateFile:return\n/execname == 1/\n{\n}\n", `line 2: operator == operands have incompatible types: "string" == "int"`},
		{"BEGIN\n{\n\tustack(0);\n}\n", "line 3: ustack( ) argument #1 must be a non-zero positive integral constant expression"},
		{"BEGIN\n{\n\texit();\n}\n", "line 3: exit( ) prototype mismatch: 0 args passed, 1 expected"},
		{"BEGIN\n{\n\tprintf(\"unterminated);\n}\n", "line 3: newline encountered in string literal"},
		{"BEGIN\n{\n\tprintf(\"x\")\n\tprintf(\"y\");\n}\n", `line 4: syntax error near "printf"`},
		{"BEGIN\n{\n", "line 3: syntax error near end of input"},
		{"int x;\nstring x;\n", "line 2: failed to declare x: identifier redeclared"},
	} {
		path := writeScript(t, tc.src)
		r := runDTrace(t, []string{"-s", path}, fastEnv(dir))
		want := "dtrace: failed to compile script " + path + ": " + tc.want + "\n"
		if r.code != 1 || r.stderr != want || r.stdout != "" {
			t.Errorf("%q:\ncode %d, stderr %q\nwant 1, %q", tc.src, r.code, r.stderr, want)
		}
	}
	r := runDTrace(t, []string{"-s", filepath.Join(t.TempDir(), "none.d")}, fastEnv(dir))
	if r.code != 1 || !strings.HasSuffix(r.stderr, "none.d: No such file or directory\n") || !strings.HasPrefix(r.stderr, "dtrace: failed to open ") {
		t.Errorf("missing script: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsage(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage: dtrace [-32|-64]"},
		{[]string{"-k", "-s", "x.d"}, 2, "dtrace: illegal option -- k\nUsage: dtrace "},
		{[]string{"-q", "-s"}, 2, "dtrace: option requires an argument -- s\nUsage: dtrace "},
		{[]string{"-V"}, 1, "dtrace: -V is not supported by the simulated dtrace\n"},
	} {
		r := runDTrace(t, tc.args, fastEnv(dir))
		if r.code != tc.code || !strings.HasPrefix(r.stderr, tc.want) {
			t.Errorf("dtrace %q: code %d, stderr %q; want %d, %q...", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	r := runDTrace(t, []string{"-s", writeScript(t, "BEGIN { exit(0); }")}, append(fastEnv(dir), EnvRate+"=5000"))
	if r.code != 1 || !strings.Contains(r.stderr, EnvRate) {
		t.Errorf("rate out of range: code %d, stderr %q", r.code, r.stderr)
	}
}

// TestSignatures checks that each syscall's events group into two to four
// stack signatures per process, the same for the same seed.
func TestSignatures(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := writeScript(t, captureScript(300, true, false, true, ""))
	stacks := func() (map[string]map[string]bool, []string) {
		r := runDTrace(t, []string{"-s", script}, fastEnv(dir))
		sigs := map[string]map[string]bool{}
		var seq []string
		for _, rec := range strings.Split(r.stdout, "@@livedump begin ")[1:] {
			f := strings.Fields(rec)
			key := f[4] + " " + f[6] // probe, process
			body := rec[strings.Index(rec, "\n"):strings.Index(rec, "@@livedump end")]
			if sigs[key] == nil {
				sigs[key] = map[string]bool{}
			}
			sigs[key][body] = true
			seq = append(seq, strings.Join(f[2:7], " ")+body) // all but the time
		}
		return sigs, seq
	}
	sigs, seq1 := stacks()
	// A call path prints the same way each time for one kind of user
	// stack (full, one frame, empty, unsymbolized, exited), so each kind
	// has at most 4 distinct stacks per process and syscall.
	kinds := map[string]bool{}
	for key, set := range sigs {
		byKind := map[string]int{}
		for body := range set {
			byKind[stackKindOfText(body)]++
		}
		for kind, n := range byKind {
			kinds[kind] = true
			if n > 4 {
				t.Errorf("%s: %d %s stacks, want at most 4", key, n, kind)
			}
		}
	}
	if len(kinds) != 5 {
		t.Errorf("user stack kinds %v, want all five", kinds)
	}
	full := 0
	for body := range sigs["NtCreateFile:return ms-teams.exe"] {
		if stackKindOfText(body) == "full" {
			full++
		}
	}
	if full < 2 {
		t.Errorf("NtCreateFile in ms-teams.exe: %d full stack signatures, want 2 to 4", full)
	}
	if _, seq2 := stacks(); !slices.Equal(seq1, seq2) {
		t.Error("the same seed gave different events")
	}
}

// TestWildcardSyscalls runs syscall:::return, which matches 1881 probes
// and fires in several syscalls.
func TestWildcardSyscalls(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	path := writeScript(t, `syscall:::return
/execname == "ms-teams.exe" && (uint32_t)arg0 == 0xC000000D/
{
	printf("%s %s 0x%x\n", probefunc, execname, arg0);
}
`)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	var out, errb bytes.Buffer
	code, _ := run(ctx, []string{"-s", path}, fastEnv(dir), &out, &errb)
	if code != 0 || errb.String() != "dtrace: script '"+path+"' matched 1881 probes\n" {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
	funcs := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] == "CPU" {
			continue
		}
		if len(f) != 6 || f[4] != "ms-teams.exe" || f[5] != "0xc000000d" || !strings.HasPrefix(f[2], "Nt") {
			t.Fatalf("line %q", l)
		}
		funcs[f[3]] = true
	}
	if len(funcs) < 4 {
		t.Errorf("events from syscalls %v; want the busy ones", funcs)
	}
}

// TestWindowsPaths runs a script named by its Windows path on the
// simulated drive, as an agent running on the simulated machine names it.
func TestWindowsPaths(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("on Windows, C: is the real drive")
	}
	dir, _ := newMachine(t, machineOpts{})
	hp, _ := hostPath(dir, `C:\ProgramData\livedump\x.d`)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hp, []byte(captureScript(1, true, false, false, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runDTrace(t, []string{"-s", `C:\ProgramData\livedump\x.d`, "-o", `C:\ProgramData\livedump\out.txt`}, fastEnv(dir))
	out, err := os.ReadFile(filepath.Join(filepath.Dir(hp), "out.txt"))
	if r.code != 0 || err != nil || len(begins(t, string(out))) != 1 {
		t.Errorf("code %d, stderr %q, out %q, %v", r.code, r.stderr, out, err)
	}
}

func TestListAndDescriptions(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	r := runDTrace(t, []string{"-l", "-n", "syscall::NtCreateFile:"}, fastEnv(dir))
	want := "   ID   PROVIDER            MODULE                          FUNCTION NAME\n" +
		"  174    syscall                                        NtCreateFile entry\n" +
		"  175    syscall                                        NtCreateFile return\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("dtrace -l: code %d, stderr %q, stdout:\n%s\nwant:\n%s", r.code, r.stderr, r.stdout, want)
	}
	r = runDTrace(t, []string{"-n", `BEGIN { printf("%d|%5s|%-5s|%u|%x|%08X|%%|%c\t%i\n", 0xC000000D, "ab", "cd", (uint32_t)0xC000000D, -1, 255, 65, (uint32_t)-1 > 0); exit(0); }`}, fastEnv(dir))
	wantOut := "CPU     ID                    FUNCTION:NAME\n  0      1                           :BEGIN " +
		"-1073741811|   ab|cd   |3221225485|ffffffff|000000FF|%|A\t1\n\n\n"
	if r.code != 0 || r.stdout != wantOut || r.stderr != "dtrace: description 'BEGIN ' matched 1 probe\n" {
		t.Errorf("dtrace -n: code %d, stderr %q, stdout %q\nwant %q", r.code, r.stderr, r.stdout, wantOut)
	}
	r = runDTrace(t, []string{"-n", "BEGIN { x = ; }"}, fastEnv(dir))
	if r.code != 1 || r.stderr != "dtrace: invalid probe specifier BEGIN { x = ; }: syntax error near \";\"\n" {
		t.Errorf("bad -n: code %d, stderr %q", r.code, r.stderr)
	}
	r = runDTrace(t, []string{"-e", "-s", writeScript(t, "BEGIN { exit(0); }")}, nil)
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Errorf("dtrace -e without a machine: code %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
}

// TestInterpreter runs expressions and formats through BEGIN.
func TestInterpreter(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	for _, tc := range []struct{ body, want string }{
		{`printf("%d %d %d", 7/2, -7/2, (uint32_t)-7/2);`, "3 -3 2147483644"},
		{`printf("%d %d", 1 < 2 && 2 <= 2, 3 > 4 || 0 >= 1);`, "1 0"},
		{`printf("%d", "abc" < "abd");`, "1"},
		{`printf("%d %d", (int8_t)200, (uint8_t)-1);`, "-56 255"},
		{`printf("%d", 0xffffffffc000000DUL == (uint32_t)0xC000000D);`, "0"},
		{`printf("%d", (int64_t)0xC000000D == 0xC000000D);`, "1"},
		{`printf("%x %o %#x", 1 << 4 | 1, 8, 255);`, "11 10 0xff"},
		{`printf("%s", 1 ? "yes" : "no");`, "yes"},
		{`x = 5; x += 2; x *= 3; printf("%d", x);`, "21"},
		{`if (1 == 2) { printf("a"); } else printf("b");`, "b"},
		{`trace(12); trace("s"); trace((int64_t)3);`, "12s3"},
		{`printf("%s %s %d", probeprov, probename, pid > 0);`, "dtrace BEGIN 1"},
		{`printf("a\tb\\c\"d\x");`, ""}, // \x is not an escape in D: a compile error
	} {
		src := "#pragma D option quiet\nBEGIN\n{\n\t" + tc.body + "\n\texit(0);\n}\n"
		r := runDTrace(t, []string{"-s", writeScript(t, src)}, fastEnv(dir))
		if tc.want == "" {
			if r.code != 1 || !strings.Contains(r.stderr, "invalid escape sequence") {
				t.Errorf("%s: code %d, stderr %q", tc.body, r.code, r.stderr)
			}
			continue
		}
		if r.code != 0 || r.stdout != tc.want+"\n" || r.stderr != "" {
			t.Errorf("%s: code %d, stdout %q, stderr %q; want %q", tc.body, r.code, r.stdout, r.stderr, tc.want+"\n")
		}
	}
	// trace() in non-quiet mode pads by size, and divide-by-zero is a
	// runtime fault that drops the clause's data.
	r := runDTrace(t, []string{"-n", `BEGIN { trace(12); trace("s"); } BEGIN { x = 0; trace(1 / x); } BEGIN { exit(0); }`}, fastEnv(dir))
	if !strings.Contains(r.stdout, ":BEGIN        12  s                                \n") ||
		!regexp.MustCompile(`dtrace: error on enabled probe ID 2 \(ID 1: dtrace:::BEGIN\): divide-by-zero in action #1\n$`).MatchString(r.stderr) {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// TestCRLF checks the Windows build's text-mode line endings (forced here
// on any OS) and that the agent's parser reads them.
func TestCRLF(t *testing.T) {
	old := crlf
	crlf = true
	defer func() { crlf = old }()
	dir, _ := newMachine(t, machineOpts{})
	path := writeScript(t, captureScript(2, false, false, true, ""))
	r := runDTrace(t, []string{"-q", "-s", path}, fastEnv(dir))
	if r.code != 0 || strings.Count(r.stdout, "\n") != strings.Count(r.stdout, "\r\n") || !strings.HasSuffix(r.stdout, "@@livedump end 2\r\n\r\n") {
		t.Fatalf("code %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	var p ldprobe.Parser
	n := 0
	for _, l := range strings.SplitAfter(r.stdout, "\n") {
		rec, err := p.Line(l)
		if err != nil {
			t.Fatal(err)
		}
		if rec != nil {
			n++
		}
	}
	if n != 2 {
		t.Errorf("the agent's parser read %d records, want 2", n)
	}
	r = runDTrace(t, []string{"-s", path}, fastEnv(dir))
	if want := "dtrace: script '" + path + "' matched 4 probes\r\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
}

// TestExecnameCase: the kernel keeps the case an image was launched with
// (SearchIndexer.exe), so a rendered script, which compares
// tolower(execname), matches whatever case the operator typed, and a
// case-sensitive comparison in another case never does.
func TestExecnameCase(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script, err := ldprobe.Render(ldprobe.Spec{
		CaptureID: "c1", Processes: []string{"SEARCHINDEXER.EXE"}, Syscalls: []string{"NtOpenFile"},
		Statuses: []uint32{0xC0000022}, UStack: 5, PerAgentCap: 5,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := runDTrace(t, []string{"-q", "-s", writeScript(t, script)}, fastEnv(dir))
	recs := begins(t, r.stdout)
	if r.code != 0 || len(recs) != 5 {
		t.Fatalf("code %d, %d records, stderr %q", r.code, len(recs), r.stderr)
	}
	for _, m := range recs {
		if m[8] != "SearchIndexer." {
			t.Errorf("execname %q, want the launched case SearchIndexer.", m[8])
		}
	}

	path := writeScript(t, `syscall::NtOpenFile:return
/execname == "searchindexer." && (uint32_t)arg0 == 0xC0000022/
{
	printf("%s\n", execname);
}
`)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	var out, errb bytes.Buffer
	if code, _ := run(ctx, []string{"-q", "-s", path}, fastEnv(dir), &out, &errb); code != 0 || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("a case-sensitive comparison in the wrong case matched: code %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
