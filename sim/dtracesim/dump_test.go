package dtracesim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/kdump"
	"github.com/livedump/livedump/sim"
)

// dumpFiles lists the DTRACE dumps under a machine's default reports folder.
func dumpFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, sim.DriveDir, "WINDOWS", "LiveKernelReports", "*.dmp"))
	return m
}

// TestLKDInBeginDoesNothing: lkd() from BEGIN (and END) never dumps, since
// those probes do not fire at PASSIVE_LEVEL; dtrace says nothing about it.
// The on-demand script livedump used to render (`BEGIN { lkd(0); exit(0); }`)
// exits 0 with no dump.
func TestLKDInBeginDoesNothing(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	for _, src := range []string{
		"#pragma D option quiet\n#pragma D option destructive\n\nBEGIN\n{\n\tlkd(0);\n\texit(0);\n}\n",
		"#pragma D option quiet\n#pragma D option destructive\nBEGIN { exit(0); }\nEND { lkd(0); }\n",
	} {
		r := runDTrace(t, []string{"-s", writeScript(t, src)}, fastEnv(dir))
		if r.code != 0 || r.stderr != "" || len(r.st.dumps) != 0 || r.st.lkdIgnored != 1 || len(dumpFiles(t, dir)) != 0 {
			t.Fatalf("code %d, stderr %q, dumps %v, ignored %d, files %v", r.code, r.stderr, r.st.dumps, r.st.lkdIgnored, dumpFiles(t, dir))
		}
	}
}

// TestConcurrentLKDDropped: while a dump is being written, further lkd()
// calls are dropped, silently.
func TestConcurrentLKDDropped(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	src := "#pragma D option quiet\n#pragma D option destructive\nint n;\n" +
		"syscall::NtCreateFile:return /n < 20/ { n++; printf(\"lkd %d\\n\", n); lkd(0); }\n" +
		"syscall::NtCreateFile:return /n >= 20/ { exit(0); }\n"
	env := append(fastEnv(dir), EnvDumpSeconds+"=1")
	r := runDTrace(t, []string{"-s", writeScript(t, src)}, env)
	if r.code != 0 || r.stderr != "" || strings.Count(r.stdout, "lkd ") != 20 {
		t.Fatalf("code %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	if len(r.st.dumps) != 1 || r.st.lkdDropped != 19 || len(dumpFiles(t, dir)) != 1 {
		t.Fatalf("20 lkd() within one dump's write: dumps %v, dropped %d; want 1 dump and 19 dropped", r.st.dumps, r.st.lkdDropped)
	}
}

// TestLKDFromHelperProcess is the on-demand recipe: a syscall return in a
// process named by pid fires (and dumps) only while that process runs.
func TestLKDFromHelperProcess(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := func(pid int) string {
		return fmt.Sprintf("#pragma D option quiet\n#pragma D option destructive\n\n"+
			"syscall::NtDelayExecution:return\n/pid == %d/\n{\n\tlkd(0);\n\texit(0);\n}\n", pid)
	}
	r := runDTrace(t, []string{"-s", writeScript(t, script(os.Getpid()))}, fastEnv(dir))
	if r.code != 0 || r.stderr != "" || len(r.st.dumps) != 1 {
		t.Fatalf("live helper: code %d, stderr %q, dumps %v", r.code, r.stderr, r.st.dumps)
	}
	h, err := os.ReadFile(r.st.dumps[0])
	if err != nil {
		t.Fatal(err)
	}
	if hd, err := kdump.Parse(h); err != nil || hd.BugCheckCode != 0xE2 || hd.RequiredDumpSpace != 65536 || hd.DumpType != kdump.DumpTypeFull {
		t.Fatalf("header %+v, %v", hd, err)
	}

	// A pid that is no running process never fires.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var out, errb strings.Builder
	code, st := run(ctx, []string{"-s", writeScript(t, script(cmd.ProcessState.Pid()))}, fastEnv(dir), &out, &errb)
	if code != 0 || len(st.dumps) != 0 || st.firings < 100 {
		t.Fatalf("exited helper: code %d, dumps %v, firings %d, stderr %q", code, st.dumps, st.firings, errb.String())
	}
}

// TestKilledMidDumpLeavesTruncatedFile: a simulated dtrace killed while it
// writes a dump leaves a file shorter than its header declares (a real
// machine's equivalent is power loss), which the header shows.
func TestKilledMidDumpLeavesTruncatedFile(t *testing.T) {
	if os.Getenv("DTRACESIM_CHILD") != "" {
		os.Exit(Main(strings.Fields(os.Getenv("DTRACESIM_CHILD")), os.Environ(), os.Stdout, os.Stderr))
	}
	dir, _ := newMachine(t, machineOpts{})
	src := writeScript(t, "#pragma D option quiet\n#pragma D option destructive\nsyscall::NtCreateFile:return { lkd(0); exit(0); }\n")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledMidDumpLeavesTruncatedFile$")
	cmd.Env = append(append(os.Environ(), fastEnv(dir)...), EnvDumpBytes+"=8m", EnvDumpSeconds+"=5", "DTRACESIM_CHILD=-s "+src)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var file string
	deadline := time.Now().Add(10 * time.Second)
	for file == "" && time.Now().Before(deadline) {
		for _, f := range dumpFiles(t, dir) {
			if fi, err := os.Stat(f); err == nil && fi.Size() > 2<<20 {
				file = f
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if file == "" {
		t.Fatal("no dump grew past 2 MiB")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	h, err := kdump.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if ok, note := h.Verdict(int64(len(b))); ok || h.RequiredDumpSpace != 8<<20 {
		t.Fatalf("a dump cut at %d bytes passed its header check (declares %d): %q", len(b), h.RequiredDumpSpace, note)
	}
}
