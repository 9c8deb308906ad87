package dtracesim

import (
	"regexp"
	"strings"
	"testing"

	"github.com/livedump/livedump/internal/syscalls"
	"github.com/livedump/livedump/sim"
)

// TestCompileOnlyRejectsProbesWindowsDoesNotHave: `dtrace -e` compiles
// without enabling, and a script naming a syscall the syscall provider
// has no probe for fails as on Windows. win32k's NtUser*/NtGdi* have none
// (DTrace-on-Windows issue #23), nor has any Nt name ntdll does not export.
// Before, every name matching Nt[A-Za-z0-9]+ "existed", so these scripts
// compiled and ran, firing probes Windows does not have.
func TestCompileOnlyRejectsProbesWindowsDoesNotHave(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	for _, fn := range []string{"NtUserGetMessage", "NtGdiBitBlt", "NtUserCallOneParam", "NtCreateFileX", "NtFoo"} {
		src := "#pragma D option quiet\n\nsyscall::NtCreateFile:return,\nsyscall::" + fn + ":return\n{\n\ttrace(arg0);\n}\n"
		path := writeScript(t, src)
		for _, args := range [][]string{{"-e", "-q", "-s", path}, {"-q", "-s", path}} {
			r := runDTrace(t, args, fastEnv(dir))
			want := "dtrace: failed to compile script " + path + ": line 4: probe description syscall::" + fn + ":return does not match any probes\n"
			if r.code != 1 || r.stderr != want || r.stdout != "" {
				t.Errorf("dtrace %v with %s:\ncode %d, stderr %q\nwant 1, %q", args, fn, r.code, r.stderr, want)
			}
		}
	}
	// Real system services compile; -e then exits 0 without tracing.
	for _, fn := range []string{"NtCreateFile", "NtQuerySystemInformationEx", "NtAlpcSendWaitReceivePort", "NtTraceControl"} {
		path := writeScript(t, "syscall::"+fn+":return\n{\n\ttrace(arg0);\n\tustack();\n}\n")
		r := runDTrace(t, []string{"-e", "-s", path}, fastEnv(dir))
		if r.code != 0 || r.stdout != "" || r.stderr != "" || r.st.firings != 0 {
			t.Errorf("dtrace -e with %s: code %d, stdout %q, stderr %q, %d firings; want 0 and nothing", fn, r.code, r.stdout, r.stderr, r.st.firings)
		}
	}
	// A glob that matches nothing is the same error.
	path := writeScript(t, "syscall::NtUser*:return\n{\n}\n")
	r := runDTrace(t, []string{"-e", "-s", path}, fastEnv(dir))
	if r.code != 1 || !strings.Contains(r.stderr, "probe description syscall::NtUser*:return does not match any probes") {
		t.Errorf("NtUser* glob: code %d, stderr %q", r.code, r.stderr)
	}
	// dtrace -l lists none either.
	r = runDTrace(t, []string{"-l", "-n", "syscall::NtUserGetMessage:return"}, fastEnv(dir))
	if strings.Contains(r.stdout, "NtUserGetMessage") {
		t.Errorf("dtrace -l lists a win32k probe:\n%s", r.stdout)
	}
}

// TestNtdllTableIsGenerated: the table is mingw-w64's ntdll exports, not a
// hand-kept list.
func TestNtdllTableIsGenerated(t *testing.T) {
	ntdll := syscalls.Names()
	if len(ntdll) < 400 {
		t.Fatalf("%d system services; the generated table should hold mingw-w64's ~480", len(ntdll))
	}
	for _, n := range ntdll {
		if strings.HasPrefix(n, "NtUser") || strings.HasPrefix(n, "NtGdi") || n == "NtGetTickCount" {
			t.Errorf("%s is not an ntdll system service", n)
		}
	}
	for n := range syscallNumbers {
		if !knownSyscalls[n] {
			t.Errorf("numbered syscall %s is not in the generated table", n)
		}
	}
}

// TestSymbolPathOptionOnlyOnBuiltin: -y is the built-in dtrace's
// (Windows Server 2025) parameter; the simulated MSI build refuses it as an
// illegal option, as a build that does not know it would.
func TestSymbolPathOptionOnlyOnBuiltin(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	path := writeScript(t, "BEGIN { exit(0); }")
	r := runDTrace(t, []string{"-y", `srv*C:\symbols*https://msdl.microsoft.com/download/symbols`, "-q", "-s", path}, fastEnv(dir))
	if r.code != 2 || !strings.HasPrefix(r.stderr, "dtrace: illegal option -- y\nUsage: dtrace ") {
		t.Errorf("-y on the MSI build: code %d, stderr %q", r.code, r.stderr)
	}

	sdir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: sdir, Build: "26100", InstallationType: "Server"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.FileExists(`C:\WINDOWS\System32\dtrace.exe`); !ok {
		t.Fatal("Server 2025 has no built-in dtrace.exe")
	}
	// Built in, but not enabled: the driver is not loaded until bcdedit
	// /set dtrace on and a reboot.
	r = runDTrace(t, []string{"-y", "srv*C:\\symbols", "-q", "-s", path}, fastEnv(sdir))
	if r.code != 1 || !strings.Contains(r.stderr, "DTrace device not available") {
		t.Errorf("built-in dtrace before bcdedit: code %d, stderr %q", r.code, r.stderr)
	}
	if err := h.SetBCDDtrace(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if err := h.Boot(); err != nil {
		t.Fatal(err)
	}
	r = runDTrace(t, []string{"-y", "srv*C:\\symbols", "-q", "-s", path}, fastEnv(sdir))
	if r.code != 0 || r.stderr != "" {
		t.Errorf("built-in dtrace with -y: code %d, stderr %q", r.code, r.stderr)
	}
}

// TestDropsUnderLoadReportedOnStderr: when a CPU's principal buffer fills
// before the consumer switches it, the records are lost and dtrace says so
// on stderr in libdtrace's words; the records that were printed are whole.
func TestDropsUnderLoadReportedOnStderr(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := writeScript(t, captureScript(400, true, false, true, ""))
	env := append(fastEnv(dir), EnvBufsize+"=4k")
	r := runDTrace(t, []string{"-s", script}, env)
	drop := regexp.MustCompile(`(?m)^dtrace: (\d+) drops? on CPU (\d+)$`)
	lines := drop.FindAllStringSubmatch(r.stderr, -1)
	if r.st.dropped == 0 || len(lines) == 0 {
		t.Fatalf("no drops under load: %d dropped, stderr %q", r.st.dropped, r.stderr)
	}
	if strings.Count(r.stdout, "@@livedump begin") != strings.Count(r.stdout, "@@livedump end") {
		t.Fatalf("a record was cut in the middle:\n%s", r.stdout)
	}
	// A 16m buffer holds the same load: nothing is dropped.
	r = runDTrace(t, []string{"-b", "16m", "-s", script}, fastEnv(dir))
	if r.st.dropped != 0 || strings.Contains(r.stderr, "drop") {
		t.Fatalf("drops with a 16m buffer: %d, stderr %q", r.st.dropped, r.stderr)
	}
}
