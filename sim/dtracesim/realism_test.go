package dtracesim

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	ldprobe "github.com/livedump/livedump/internal/probe" // this package has a type probe
)

// stackKindOf names the kind of a parsed user stack (see ustackKind).
func stackKindOf(frames []ldprobe.Frame) string {
	switch len(frames) {
	case 0:
		return "empty"
	case 1:
		return "one frame"
	}
	modOnly, bare := 0, 0
	for _, f := range frames {
		switch {
		case f.Function != "":
		case f.Module != "":
			modOnly++
		default:
			bare++
		}
	}
	switch {
	case bare == len(frames):
		return "exited"
	case modOnly+bare == len(frames):
		return "unsymbolized" // JIT frames have no module either way
	}
	return "full"
}

// stackKindOfText is stackKindOf for the text of a record after its begin
// line.
func stackKindOfText(body string) string {
	_, u, _ := strings.Cut(body, "@@livedump ustack")
	u, _, _ = strings.Cut(u, "@@livedump")
	var frames []ldprobe.Frame
	for _, l := range strings.Split(u, "\n") {
		if strings.TrimSpace(l) != "" {
			frames = append(frames, ldprobe.ParseFrame(l))
		}
	}
	return stackKindOf(frames)
}

// allProcsScript prints every firing of NtCreateFile:return in any
// process: execname, then the user and kernel stacks, n times.
func allProcsScript(n int, pred string) string {
	if pred == "" {
		pred = "1"
	}
	return fmt.Sprintf(`#pragma D option quiet
int hits;

syscall::NtCreateFile:return
/(%s) && hits < %d/
{
	hits++;
	printf("@@ %%s\n", execname);
	ustack();
	stack();
}

syscall::NtCreateFile:return
/hits >= %d/
{
	exit(0);
}
`, pred, n, n)
}

// TestANSINames: module and symbol names and execname reach the output
// in the ANSI code page (Windows-1252 bytes such as 0xE9 for é) unless
// LIVEDUMP_SIM_DTRACE_ANSI is off; the same seed gives the same names
// either way, in UTF-8 when off.
func TestANSINames(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := writeScript(t, allProcsScript(400, ""))
	on := runDTrace(t, []string{"-s", script}, fastEnv(dir))
	off := runDTrace(t, []string{"-s", script}, append(fastEnv(dir), EnvANSI+"=off"))
	if on.code != 0 || off.code != 0 {
		t.Fatalf("codes %d %d, stderr %q %q", on.code, off.code, on.stderr, off.stderr)
	}
	for _, want := range []string{"S\xe9curit\xe9Agent`", "\xdcberwachungsDienst`", "Gr\xf6\xdfeBerechnen", "@@ caf\xe9.exe\n"} {
		if !strings.Contains(on.stdout, want) {
			t.Errorf("ANSI output lacks %q", want)
		}
	}
	if utf8.ValidString(on.stdout) {
		t.Error("ANSI output is valid UTF-8: no name was printed in the code page")
	}
	if !utf8.ValidString(off.stdout) || !strings.Contains(off.stdout, "SécuritéAgent`") || !strings.Contains(off.stdout, "@@ café.exe\n") {
		t.Error("with ANSI off, names are not UTF-8")
	}
	if strings.Count(on.stdout, "\n") != strings.Count(off.stdout, "\n") {
		t.Error("the ANSI setting changed more than the names")
	}
}

// TestANSIExecnameComparedAsBytes: execname is the ANSI name, and D
// compares strings byte by byte, so a predicate with the UTF-8 spelling
// never matches, as on Windows; a script written in the code page does.
func TestANSIExecnameComparedAsBytes(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	// The second clause ends the run after 300 firings of any process.
	src := allProcsScript(5, `execname == "café.exe"`) + "int all;\nsyscall::NtCreateFile:return\n{\n\tall++;\n}\nsyscall::NtCreateFile:return\n/all >= 300/\n{\n\texit(0);\n}\n"
	utf := runDTrace(t, []string{"-s", writeScript(t, src)}, fastEnv(dir))
	if utf.code != 0 || strings.Contains(utf.stdout, "@@") {
		t.Errorf("code %d: a UTF-8 literal matched the ANSI execname:\n%s", utf.code, utf.stdout)
	}
	off := runDTrace(t, []string{"-s", writeScript(t, allProcsScript(5, `execname == "café.exe"`))}, append(fastEnv(dir), EnvANSI+"=off"))
	if strings.Count(off.stdout, "@@ café.exe\n") != 5 {
		t.Errorf("ANSI off: the UTF-8 literal did not match:\n%q", off.stdout)
	}
	ansi := runDTrace(t, []string{"-s", writeScript(t, allProcsScript(5, "execname == \"caf\xe9.exe\""))}, fastEnv(dir))
	if ansi.code != 0 || strings.Count(ansi.stdout, "@@ caf\xe9.exe\n") != 5 {
		t.Errorf("ANSI literal: code %d, output:\n%q", ansi.code, ansi.stdout)
	}
}

// TestWOW64NeverFires: DTrace traces 64-bit processes only; a 32-bit
// process named by the predicate never fires, whatever the run's length.
func TestWOW64NeverFires(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	// ms-teams.exe is 64-bit and ends the run; AcroRd32.exe (default) and
	// legacy.exe (named in the environment) are 32-bit.
	src := `#pragma D option quiet
int teams;

syscall::NtCreateFile:return
/execname == "AcroRd32.exe" || execname == "legacy.exe"/
{
	printf("@@ %s\n", execname);
}

syscall::NtCreateFile:return
/execname == "ms-teams.exe"/
{
	teams++;
}

syscall::NtCreateFile:return
/teams >= 100/
{
	exit(0);
}
`
	r := runDTrace(t, []string{"-s", writeScript(t, src)}, append(fastEnv(dir), EnvWOW64+"=legacy.exe"))
	if r.code != 0 || strings.Contains(r.stdout, "@@") {
		t.Errorf("code %d: a 32-bit process fired:\n%s", r.code, r.stdout)
	}
	r = runDTrace(t, []string{"-s", writeScript(t, strings.Replace(src, "AcroRd32.exe", "Acro64.exe", 1))}, fastEnv(dir))
	if !strings.Contains(r.stdout, "@@ Acro64.exe") {
		t.Errorf("a 64-bit process never fired:\n%s", r.stdout)
	}
}

// TestRealisticStacks: user stacks come in all five kinds, addresses in
// both of dtrace's unresolved forms; kernel stacks at syscall probes are
// the dispatcher only; the same seed gives the same stacks.
func TestRealisticStacks(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := writeScript(t, allProcsScript(300, ""))
	r := runDTrace(t, []string{"-s", script}, fastEnv(dir))
	again := runDTrace(t, []string{"-s", script}, fastEnv(dir))
	if r.code != 0 || r.stdout != again.stdout {
		t.Fatalf("code %d; the same seed gave different output: %v", r.code, r.stdout != again.stdout)
	}
	kinds := map[string]int{}
	recs := strings.Split(r.stdout, "@@ ")[1:]
	for _, rec := range recs {
		// ustack() then stack(): each a newline then frames; the kernel
		// stack is the last frame line.
		lines := strings.Split(strings.TrimRight(rec, "\n"), "\n")
		if last := strings.TrimSpace(lines[len(lines)-1]); last != "nt`KiSystemServiceCopyEnd+0x25" || strings.Contains(rec, "nt`NtCreateFile") {
			t.Fatalf("kernel stack is not the dispatcher only:\n%s", rec)
		}
		var user []ldprobe.Frame
		for _, l := range lines[1 : len(lines)-1] {
			if strings.TrimSpace(l) != "" {
				user = append(user, ldprobe.ParseFrame(l))
			}
		}
		kinds[stackKindOf(user)]++
	}
	for _, k := range []string{"full", "one frame", "empty", "unsymbolized", "exited"} {
		if kinds[k] < len(recs)/20 {
			t.Errorf("%d %s user stacks of %d (%v)", kinds[k], k, len(recs), kinds)
		}
	}
	if kinds["full"] > len(recs)*2/3 {
		t.Errorf("%d of %d user stacks are full: kinder than Windows", kinds["full"], len(recs))
	}
	if !regexp.MustCompile("\n {14}[^\\s`]+`0x[0-9a-f]+\n").MatchString(r.stdout) || !regexp.MustCompile("\n {14}0x0000[0-9a-f]{12}\n").MatchString(r.stdout) ||
		!regexp.MustCompile("\n {14}0x1f[0-9a-f]{9}\n").MatchString(r.stdout) {
		t.Error("missing module`0xaddr, padded or unpadded bare address frames")
	}
}

// TestDropsUnderLoad: when a CPU's principal buffer fills within a
// switchrate interval, records are dropped, never printed, and dtrace
// says so on stderr; with the default 4m buffer nothing is dropped.
func TestDropsUnderLoad(t *testing.T) {
	dir, _ := newMachine(t, machineOpts{})
	script := writeScript(t, allProcsScript(300, ""))
	r := runDTrace(t, []string{"-b", "2k", "-s", script}, fastEnv(dir))
	lines := regexp.MustCompile(`(?m)^dtrace: (\d+) drops? on CPU (\d+)$`).FindAllStringSubmatch(r.stderr, -1)
	total := 0
	for _, m := range lines {
		var n int
		fmt.Sscan(m[1], &n)
		total += n
	}
	printed := strings.Count(r.stdout, "@@ ")
	if r.code != 0 || len(lines) == 0 || total != r.st.dropped || printed+total != 300 {
		t.Errorf("code %d, %d printed, %d dropped (%d counted), stderr:\n%s", r.code, printed, total, r.st.dropped, r.stderr)
	}
	r = runDTrace(t, []string{"-x", "bufsize=2k", "-s", script}, fastEnv(dir))
	if !strings.Contains(r.stderr, "drop") {
		t.Error("-x bufsize=2k dropped nothing")
	}
	r = runDTrace(t, []string{"-s", script}, append(fastEnv(dir), EnvBufsize+"=2k"))
	if !strings.Contains(r.stderr, "drop") {
		t.Errorf("%s=2k dropped nothing", EnvBufsize)
	}
	r = runDTrace(t, []string{"-s", script}, fastEnv(dir))
	if strings.Contains(r.stderr, "drop") || strings.Count(r.stdout, "@@ ") != 300 {
		t.Errorf("default buffer: stderr %q, %d printed", r.stderr, strings.Count(r.stdout, "@@ "))
	}
}
