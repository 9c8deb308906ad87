package probe

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		file    string
		spec    Spec
		already int
	}{
		{"stacks_default.d", Spec{
			CaptureID: "c0ffee-01",
			Processes: []string{"ms-teams.exe"},
			Syscalls:  []string{"NtCreateFile"},
			Statuses:  []uint32{0xC000000D},
		}, 0},
		{"dump_kstack_lkd2.d", Spec{
			CaptureID: "dump-42",
			Processes: []string{"ms-teams.exe"},
			Syscalls:  []string{"NtCreateFile", "NtOpenFile"},
			Statuses:  []uint32{0xC000000D},
			UStack:    20,
			KStack:    true,
			Action:    ActionDump,
			LKDMode:   2,
		}, 0},
		{"no_syscalls.d", Spec{
			CaptureID: "every-syscall",
			Processes: []string{"notepad.exe"},
			Statuses:  []uint32{0xC0000022},
		}, 0},
		{"several.d", Spec{
			CaptureID:   "several",
			Processes:   []string{"ms-teams.exe", "SearchIndexer.exe", "Code - Insiders.exe", "SearchIndexer.exe", "SearchIndexer.old"},
			Syscalls:    []string{"NtCreateFile", "NtOpenFile", "NtDeviceIoControlFile"},
			Statuses:    []uint32{0xC000000D, 0xC0000022, 0x80000005, 0xC000000D, 0x00000103},
			UStack:      100,
			KStack:      true,
			Action:      ActionDump,
			LKDMode:     5,
			PerAgentCap: 3,
		}, 0},
		{"already_triggered.d", Spec{
			CaptureID:   "restarted",
			Processes:   []string{"ms-teams.exe"},
			Syscalls:    []string{"NtCreateFile"},
			Statuses:    []uint32{0xC000000D},
			PerAgentCap: 5,
		}, 3},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := Render(tc.spec, tc.already)
			if err != nil {
				t.Fatal(err)
			}
			checkScript(t, tc.spec, got)
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Render differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

func TestRenderCap(t *testing.T) {
	s := validSpec()
	s.Action = ActionDump // cap 1
	if _, err := Render(s, 1); !errors.Is(err, ErrCapReached) {
		t.Fatalf("Render with the cap reached = %v, want ErrCapReached", err)
	}
	s.PerAgentCap = 10
	if _, err := Render(s, 12); !errors.Is(err, ErrCapReached) {
		t.Fatalf("Render past the cap = %v, want ErrCapReached", err)
	}
	got, err := Render(s, 9)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "&& livedump_hits < 1/\n") || !strings.Contains(got, "/livedump_hits >= 1/\n") {
		t.Fatalf("cap not lowered to 1:\n%s", got)
	}
	if _, err := Render(s, -1); err == nil {
		t.Fatal("negative alreadyTriggered accepted")
	}
}

func TestRenderRaw(t *testing.T) {
	raw := "#pragma D option destructive\r\nBEGIN { lkd(0); exit(0); } /* \"x\" */"
	s := Spec{CaptureID: "raw", Action: ActionDump, RawScript: raw}
	for _, already := range []int{0, 5} {
		got, err := Render(s, already)
		if err != nil {
			t.Fatal(err)
		}
		if got != raw {
			t.Fatalf("raw script not verbatim: %q", got)
		}
	}
}

func TestRenderTruncatesExecName(t *testing.T) {
	s := validSpec()
	s.Processes = []string{"SearchIndexer.exe"}
	got, err := Render(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, `/(tolower(execname) == "searchindexer.") && `) {
		t.Fatalf("execname not truncated:\n%s", got)
	}
	if !strings.Contains(got, " * processes: SearchIndexer.exe\n") {
		t.Fatalf("header does not show the name as typed:\n%s", got)
	}
}

// TestRenderMatchesAnyCase: the kernel keeps the case an image was launched
// with, so the script lower-cases execname and compares it with the
// lower-cased name, whatever case the operator typed.
func TestRenderMatchesAnyCase(t *testing.T) {
	s := validSpec()
	s.Processes = []string{"MS-Teams.EXE", "ms-teams.exe", "SearchIndexer.exe"}
	got, err := Render(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, `/(tolower(execname) == "ms-teams.exe" || tolower(execname) == "searchindexer.") && `) {
		t.Fatalf("execname not compared in lower case (or not deduplicated):\n%s", got)
	}
	if strings.Contains(got, `(execname ==`) || strings.Contains(got, `|| execname ==`) {
		t.Fatalf("a case-sensitive execname comparison is left:\n%s", got)
	}
	if !strings.Contains(got, " * processes: MS-Teams.EXE, ms-teams.exe, SearchIndexer.exe\n") {
		t.Fatalf("header does not show the names as typed:\n%s", got)
	}
}

// fixedQuoteLines are the only lines of a rendered script, besides the
// predicate, that contain a double quote.
var fixedQuoteLines = map[string]bool{
	`	printf("@@livedump begin %d %d %d %d %s:%s 0x%08x %s\n", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);`: true,
	`	printf("@@livedump ustack");`:                    true,
	`	printf("\n@@livedump kstack");`:                  true,
	`	printf("\n@@livedump end %d\n", livedump_hits);`: true,
}

// checkScript asserts the injection-safety properties of a rendered
// script: the only comment is the header, and every string literal in the
// predicate is exactly the execname of one of the processes.
func checkScript(t *testing.T, s Spec, script string) {
	t.Helper()
	if !strings.HasPrefix(script, "/*\n") {
		t.Fatalf("script does not start with the header comment:\n%s", script)
	}
	if n := strings.Count(script, "/*"); n != 1 {
		t.Fatalf("%d comment openings:\n%s", n, script)
	}
	end := strings.Index(script, "\n */\n")
	if end < 0 || strings.Count(script, "*/") != 1 || strings.Index(script, "*/") != end+2 {
		t.Fatalf("*/ appears other than closing the header:\n%s", script)
	}
	if strings.ContainsAny(script, "\r\x00") {
		t.Fatalf("script has CR or NUL: %q", script)
	}
	want := map[string]bool{}
	for _, p := range s.Processes {
		n, _ := ExecName(p)
		want[strings.ToLower(n)] = true
	}
	predicates := 0
	for line := range strings.Lines(script[end+5:]) {
		line = strings.TrimSuffix(line, "\n")
		if !strings.Contains(line, `"`) || fixedQuoteLines[line] {
			continue
		}
		if !strings.HasPrefix(line, "/(tolower(execname) == \"") {
			t.Fatalf("unexpected line with a quote: %q", line)
		}
		predicates++
		// /(tolower(execname) == "a" || tolower(execname) == "b") && (...
		rest := strings.TrimPrefix(line, "/(")
		lits := 0
		for {
			rest, _ = strings.CutPrefix(rest, `tolower(execname) == "`)
			lit, after, ok := strings.Cut(rest, `"`)
			if !ok {
				t.Fatalf("unterminated literal in %q", line)
			}
			if !want[lit] {
				t.Fatalf("literal %q is not the execname of a process in %q", lit, line)
			}
			lits++
			if next, ok := strings.CutPrefix(after, " || "); ok {
				rest = next
				continue
			}
			if !strings.HasPrefix(after, ") && ((uint32_t)arg0 == 0x") {
				t.Fatalf("predicate continues unexpectedly after literal %q: %q", lit, after)
			}
			if strings.Contains(after, `"`) {
				t.Fatalf("quote after the execname literals: %q", line)
			}
			break
		}
		if lits != len(want) || strings.Count(line, `"`) != 2*lits {
			t.Fatalf("%d literals for %d execnames in %q", lits, len(want), line)
		}
	}
	if predicates != 1 {
		t.Fatalf("%d predicates with execname literals, want 1", predicates)
	}
}

func FuzzRender(f *testing.F) {
	f.Add("cap-1", "ms-teams.exe", "NtCreateFile", uint32(0xC000000D), uint32(0xC0000022), 0, false, false, 0, 0, 0)
	f.Add("x", "SearchIndexer.exe\x00a b (x86).exe\x00x*/y", "", uint32(0), uint32(0), 100, true, true, 2, 5, 2)
	f.Add("dump", "a\"b.exe\x00c.exe", "NtOpenFile\x00NtFoo;", uint32(1), uint32(1), 5, true, true, 4, 1, 0)
	f.Add("y", "Code - Insiders.exe", "NtReadFile\x00NtWriteFile", uint32(0x80000005), uint32(0x103), 1, false, false, 5, 1000, 999)
	f.Fuzz(func(t *testing.T, id, procs, syscalls string, st1, st2 uint32, ustack int, kstack, dump bool, lkd, limit, already int) {
		s := Spec{
			CaptureID:   id,
			Statuses:    []uint32{st1, st2},
			UStack:      ustack,
			KStack:      kstack,
			LKDMode:     lkd,
			PerAgentCap: limit,
		}
		if procs != "" {
			s.Processes = strings.Split(procs, "\x00")
		}
		if syscalls != "" {
			s.Syscalls = strings.Split(syscalls, "\x00")
		}
		if dump {
			s.Action = ActionDump
		}
		if s.Validate() != nil {
			if _, err := Render(s, already); err == nil {
				t.Fatalf("Render accepted a spec Validate refuses: %+v", s)
			}
			return
		}
		script, err := Render(s, already)
		if err != nil {
			if already < 0 || errors.Is(err, ErrCapReached) {
				return
			}
			t.Fatalf("Render of a valid spec: %v", err)
		}
		checkScript(t, s, script)
	})
}

// TestRenderOnDemand: the on-demand script dumps at a syscall return in the
// agent's helper process, never from BEGIN (lkd() does nothing there).
func TestRenderOnDemand(t *testing.T) {
	s := Spec{CaptureID: "c1", Action: ActionDump, OnDemand: true, HelperPID: 4242}
	got, err := Render(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#pragma D option destructive\n", "syscall::NtDelayExecution:return\n/pid == 4242/\n{\n\tlkd(0);\n\texit(0);\n}\n"} {
		if !strings.Contains(got, want) {
			t.Fatalf("script lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "BEGIN\n") {
		t.Fatalf("on-demand script uses BEGIN:\n%s", got)
	}
	s.HelperPID = 0
	if got, _ := Render(s, 0); !strings.Contains(got, "/pid == $target/") {
		t.Fatalf("without a helper pid the script should show $target:\n%s", got)
	}
	if _, err := Render(s, 1); !errors.Is(err, ErrCapReached) {
		t.Fatalf("second render: %v", err)
	}
}
