package probe

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func validSpec() Spec {
	return Spec{
		CaptureID: "cap-1",
		Processes: []string{"ms-teams.exe"},
		Syscalls:  []string{"NtCreateFile"},
		Statuses:  []uint32{0xC000000D},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Spec)
		field string
	}{
		{"empty capture id", func(s *Spec) { s.CaptureID = "" }, "capture_id"},
		{"upper-case capture id", func(s *Spec) { s.CaptureID = "Cap" }, "capture_id"},
		{"capture id too long", func(s *Spec) { s.CaptureID = strings.Repeat("a", 65) }, "capture_id"},
		{"capture id comment", func(s *Spec) { s.CaptureID = "a*/b" }, "capture_id"},
		{"no process", func(s *Spec) { s.Processes = nil }, "process"},
		{"too many processes", func(s *Spec) {
			s.Processes = nil
			for i := range 17 {
				s.Processes = append(s.Processes, "p"+strings.Repeat("x", i)+".exe")
			}
		}, "process"},
		{"empty process", func(s *Spec) { s.Processes = []string{""} }, "process"},
		{"quote", func(s *Spec) { s.Processes = []string{`ms-teams".exe`} }, "process"},
		{"single quote", func(s *Spec) { s.Processes = []string{`ms-teams'.exe`} }, "process"},
		{"slash", func(s *Spec) { s.Processes = []string{"a/b.exe"} }, "process"},
		{"backslash", func(s *Spec) { s.Processes = []string{`C:\Program Files\a.exe`} }, "process"},
		{"comment close", func(s *Spec) { s.Processes = []string{"x*/y"} }, "process"},
		{"comment open", func(s *Spec) { s.Processes = []string{"x/*y"} }, "process"},
		{"newline", func(s *Spec) { s.Processes = []string{"a\nb"} }, "process"},
		{"second line of D", func(s *Spec) { s.Processes = []string{"ms-teams.exe\nBEGIN"} }, "process"},
		{"syscall newline", func(s *Spec) { s.Syscalls = []string{"NtCreateFile\nBEGIN"} }, "syscall"},
		{"carriage return", func(s *Spec) { s.Processes = []string{"a\rb"} }, "process"},
		{"tab", func(s *Spec) { s.Processes = []string{"a\tb"} }, "process"},
		{"nul", func(s *Spec) { s.Processes = []string{"a\x00b"} }, "process"},
		{"escape char", func(s *Spec) { s.Processes = []string{"a\x1bb"} }, "process"},
		{"non-ascii", func(s *Spec) { s.Processes = []string{"teamsé.exe"} }, "process"},
		{"leading dot", func(s *Spec) { s.Processes = []string{".exe"} }, "process"},
		{"leading space", func(s *Spec) { s.Processes = []string{" a.exe"} }, "process"},
		{"256 bytes", func(s *Spec) { s.Processes = []string{strings.Repeat("a", 252) + ".exe"} }, "process"},
		{"second process bad", func(s *Spec) { s.Processes = []string{"ok.exe", "a;b"} }, "process"},
		{"syscall semicolon", func(s *Spec) { s.Syscalls = []string{"NtFoo;"} }, "syscall"},
		{"zw syscall", func(s *Spec) { s.Syscalls = []string{"ZwCreateFile"} }, "syscall"},
		{"bare Nt", func(s *Spec) { s.Syscalls = []string{"Nt"} }, "syscall"},
		{"syscall too long", func(s *Spec) { s.Syscalls = []string{"Nt" + strings.Repeat("A", 64)} }, "syscall"},
		{"syscall probe injection", func(s *Spec) { s.Syscalls = []string{"NtCreateFile:return,fbt:::entry"} }, "syscall"},
		{"well-formed but unknown syscall", func(s *Spec) { s.Syscalls = []string{"Nt" + strings.Repeat("A", 63)} }, "syscall"},
		{"win32k NtUser", func(s *Spec) { s.Syscalls = []string{"NtCreateFile", "NtUserFindWindowEx"} }, "syscall"},
		{"win32k NtGdi", func(s *Spec) { s.Syscalls = []string{"NtGdiBitBlt"} }, "syscall"},
		{"syscall wrong case", func(s *Spec) { s.Syscalls = []string{"ntcreatefile"} }, "syscall"},
		{"syscall typo", func(s *Spec) { s.Syscalls = []string{"NtCreatFile"} }, "syscall"},
		{"too many syscalls", func(s *Spec) {
			s.Syscalls = nil
			for i := range MaxSyscalls + 1 {
				s.Syscalls = append(s.Syscalls, "NtX"+strings.Repeat("a", i%60)+string(rune('A'+i/60)))
			}
		}, "syscall"},
		{"no status", func(s *Spec) { s.Statuses = nil }, "status"},
		{"too many statuses", func(s *Spec) {
			s.Statuses = nil
			for i := range MaxStatuses + 1 {
				s.Statuses = append(s.Statuses, 0xC0000000+uint32(i))
			}
		}, "status"},
		{"ustack 101", func(s *Spec) { s.UStack = 101 }, "ustack"},
		{"ustack negative", func(s *Spec) { s.UStack = -1 }, "ustack"},
		{"unknown action", func(s *Spec) { s.Action = "crash" }, "action"},
		{"upper-case action", func(s *Spec) { s.Action = "Dump" }, "action"},
		{"lkd 1", func(s *Spec) { s.Action = ActionDump; s.LKDMode = 1 }, "lkd_mode"},
		{"lkd 3", func(s *Spec) { s.Action = ActionDump; s.LKDMode = 3 }, "lkd_mode"},
		{"lkd 6", func(s *Spec) { s.Action = ActionDump; s.LKDMode = 6 }, "lkd_mode"},
		{"lkd negative", func(s *Spec) { s.Action = ActionDump; s.LKDMode = -1 }, "lkd_mode"},
		{"lkd with stacks", func(s *Spec) { s.LKDMode = 2 }, "lkd_mode"},
		{"cap 1001", func(s *Spec) { s.PerAgentCap = 1001 }, "per_agent_cap"},
		{"cap negative", func(s *Spec) { s.PerAgentCap = -1 }, "per_agent_cap"},
		{"raw script and processes", func(s *Spec) {
			*s = Spec{CaptureID: "c", Processes: []string{"a.exe"}, RawScript: "BEGIN { exit(0); }"}
		}, "script"},
		{"raw script and statuses", func(s *Spec) { *s = Spec{CaptureID: "c", Statuses: []uint32{1}, RawScript: "BEGIN { exit(0); }"} }, "script"},
		{"raw script and syscalls", func(s *Spec) {
			*s = Spec{CaptureID: "c", Syscalls: []string{"NtOpenFile"}, RawScript: "BEGIN { exit(0); }"}
		}, "script"},
		{"raw script and ustack", func(s *Spec) { *s = Spec{CaptureID: "c", UStack: 5, RawScript: "BEGIN { exit(0); }"} }, "script"},
		{"raw script and kstack", func(s *Spec) { *s = Spec{CaptureID: "c", KStack: true, RawScript: "BEGIN { exit(0); }"} }, "script"},
		{"raw script and lkd", func(s *Spec) {
			*s = Spec{CaptureID: "c", Action: ActionDump, LKDMode: 2, RawScript: "BEGIN { lkd(2); exit(0); }"}
		}, "script"},
		{"raw script and cap", func(s *Spec) { *s = Spec{CaptureID: "c", PerAgentCap: 3, RawScript: "BEGIN { exit(0); }"} }, "script"},
		{"raw script too big", func(s *Spec) { *s = Spec{CaptureID: "c", RawScript: strings.Repeat("/", MaxRawScript+1)} }, "script"},
		{"raw script nul", func(s *Spec) { *s = Spec{CaptureID: "c", RawScript: "BEGIN {\x00}"} }, "script"},
		{"raw script blank", func(s *Spec) { *s = Spec{CaptureID: "c", RawScript: " \n\t"} }, "script"},
		{"raw script bad id", func(s *Spec) { *s = Spec{CaptureID: "C", RawScript: "BEGIN { exit(0); }"} }, "capture_id"},
		{"raw script bad action", func(s *Spec) { *s = Spec{CaptureID: "c", Action: "x", RawScript: "BEGIN { exit(0); }"} }, "action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.edit(&s)
			err := s.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate = %v, want a FieldError for %s", err, tc.field)
			}
			if !strings.HasPrefix(err.Error(), "capture."+tc.field+": ") {
				t.Fatalf("error %q does not name the field", err)
			}
			if _, rerr := Render(s, 0); rerr == nil || rerr.Error() != err.Error() {
				t.Fatalf("Render error = %v, want the validation error %v", rerr, err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Spec)
	}{
		{"minimal", func(*Spec) {}},
		{"no syscalls", func(s *Spec) { s.Syscalls = nil }},
		{"every allowed character", func(s *Spec) { s.Processes = []string{"Ab9 ._+()-z.exe"} }},
		{"255 bytes", func(s *Spec) { s.Processes = []string{strings.Repeat("a", 251) + ".exe"} }},
		{"16 processes", func(s *Spec) {
			s.Processes = nil
			for i := range 16 {
				s.Processes = append(s.Processes, "p"+strings.Repeat("x", i)+".exe")
			}
		}},
		{"64 statuses and duplicates", func(s *Spec) {
			s.Statuses = nil
			for i := range MaxStatuses {
				s.Statuses = append(s.Statuses, 0xC0000000+uint32(i), 0xC0000000+uint32(i))
			}
		}},
		{"status zero", func(s *Spec) { s.Statuses = []uint32{0} }},
		{"long real syscall", func(s *Spec) { s.Syscalls = []string{"NtAccessCheckByTypeResultListAndAuditAlarmByHandle"} }},
		{"several real syscalls", func(s *Spec) { s.Syscalls = []string{"NtClose", "NtAlpcSendWaitReceivePort", "NtDeviceIoControlFile"} }},
		{"ustack 100", func(s *Spec) { s.UStack = 100 }},
		{"ustack 1", func(s *Spec) { s.UStack = 1 }},
		{"dump modes", func(s *Spec) { s.Action = ActionDump; s.LKDMode = 5 }},
		{"dump mode 4", func(s *Spec) { s.Action = ActionDump; s.LKDMode = 4 }},
		{"cap 1000", func(s *Spec) { s.PerAgentCap = 1000 }},
		{"raw script", func(s *Spec) { *s = Spec{CaptureID: "c", Action: ActionDump, RawScript: "BEGIN { lkd(0); exit(0); }"} }},
		{"raw script at the limit", func(s *Spec) { *s = Spec{CaptureID: "c", RawScript: strings.Repeat("/", MaxRawScript)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.edit(&s)
			if err := s.Validate(); err != nil {
				t.Fatalf("valid spec refused: %v", err)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	s := validSpec()
	d := s.WithDefaults()
	if d.UStack != DefaultUStack || d.Action != ActionStacks || d.PerAgentCap != DefaultStacksCap || d.LKDMode != 0 {
		t.Fatalf("stacks defaults: %+v", d)
	}
	s.Action = ActionDump
	if d := s.WithDefaults(); d.PerAgentCap != DefaultDumpCap || d.UStack != 10 {
		t.Fatalf("dump defaults: %+v", d)
	}
	s.UStack, s.PerAgentCap = 7, 3
	if d := s.WithDefaults(); d.UStack != 7 || d.PerAgentCap != 3 {
		t.Fatalf("explicit values overridden: %+v", d)
	}

	s = validSpec()
	s.Statuses = []uint32{0xC0000022, 0xC000000D, 0xC0000022}
	s.Processes = []string{"a.exe", "b.exe", "a.exe"}
	s.Syscalls = []string{"NtOpenFile", "NtOpenFile"}
	d = s.WithDefaults()
	if !slices.Equal(d.Statuses, []uint32{0xC0000022, 0xC000000D}) ||
		!slices.Equal(d.Processes, []string{"a.exe", "b.exe"}) ||
		!slices.Equal(d.Syscalls, []string{"NtOpenFile"}) {
		t.Fatalf("not deduped in order: %+v", d)
	}
	d.Statuses[0] = 1
	if s.Statuses[0] != 0xC0000022 {
		t.Fatal("WithDefaults shares the caller's slice")
	}

	raw := Spec{CaptureID: "c", RawScript: "BEGIN { exit(0); }"}.WithDefaults()
	if raw.Action != ActionStacks || raw.UStack != 0 || raw.PerAgentCap != 0 {
		t.Fatalf("raw defaults: %+v", raw)
	}
	if err := raw.Validate(); err != nil {
		t.Fatalf("defaulted raw spec refused: %v", err)
	}
}

func TestExecName(t *testing.T) {
	for _, tc := range []struct {
		in, want  string
		truncated bool
	}{
		{"ms-teams.exe", "ms-teams.exe", false},
		{"SearchIndexer.exe", "SearchIndexer.", true},
		{"abcdefghij.exe", "abcdefghij.exe", false}, // exactly 14
		{"abcdefghijk.exe", "abcdefghijk.ex", true},
		{"MsMpEng.exe", "MsMpEng.exe", false},
		{"", "", false},
	} {
		got, tr := ExecName(tc.in)
		if got != tc.want || tr != tc.truncated {
			t.Errorf("ExecName(%q) = %q, %v; want %q, %v", tc.in, got, tr, tc.want, tc.truncated)
		}
	}
}

// TestValidateSyscallMessages: a syscall without a probe is refused with
// the field, the reason and, when one is close, the name meant.
func TestValidateSyscallMessages(t *testing.T) {
	for _, tc := range []struct{ syscall, want string }{
		{"NtUserFindWindowEx", "capture.syscall: \"NtUserFindWindowEx\" is a win32k syscall"},
		{"NtCreatFile", "did you mean NtCreateFile?"},
		{"ntopenfile", "did you mean NtOpenFile?"},
		{"ZwClose", "did you mean NtClose?"},
	} {
		s := validSpec()
		s.Syscalls = []string{tc.syscall}
		err := s.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "syscall" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate with syscall %q = %v, want a syscall FieldError containing %q", tc.syscall, err, tc.want)
		}
	}
}

func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		procs []string
		want  []string // substrings, one per warning, in order
	}{
		{[]string{"ms-teams.exe"}, nil},
		{[]string{"MS-Teams.EXE", "notepad.exe"}, nil},
		{[]string{"ms-teams"}, []string{"ms-teams has no extension; the kernel records ms-teams.exe"}},
		{[]string{"ms-teams."}, []string{"ms-teams. has no extension; the kernel records ms-teams.exe"}},
		{[]string{"SearchIndexer.exe"}, []string{`process "SearchIndexer.exe" matches as "SearchIndexer."`}},
		{[]string{"SearchIndexer"}, []string{`SearchIndexer has no extension; the kernel records SearchIndexer.exe (execname "SearchIndexer.")`}},
		{[]string{"Code - Insiders", "a.exe", "Code - Insiders"}, []string{`process "Code - Insiders" matches as "Code - Insider"`, "Code - Insiders has no extension"}},
		{[]string{"my.app"}, nil},
	} {
		s := validSpec()
		s.Processes = tc.procs
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		got := s.Warnings()
		if len(got) != len(tc.want) {
			t.Errorf("Warnings for %q = %q, want %d", tc.procs, got, len(tc.want))
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], tc.want[i]) {
				t.Errorf("warning %d for %q = %q, want it to contain %q", i, tc.procs, got[i], tc.want[i])
			}
		}
	}
	if w := (Spec{CaptureID: "c", RawScript: "BEGIN { exit(0); }"}).Warnings(); w != nil {
		t.Errorf("raw script warnings: %q", w)
	}
}
