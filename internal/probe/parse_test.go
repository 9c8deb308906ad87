package probe

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFrame(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Frame
	}{
		{"              ntdll`NtCreateFile+0x14", Frame{Module: "ntdll", Function: "NtCreateFile", Offset: 0x14, Raw: "ntdll`NtCreateFile+0x14"}},
		{"              KERNELBASE`CreateFileW+0x66", Frame{Module: "KERNELBASE", Function: "CreateFileW", Offset: 0x66, Raw: "KERNELBASE`CreateFileW+0x66"}},
		{"              0x7ff6a1b2c3d4", Frame{Address: 0x7ff6a1b2c3d4, Raw: "0x7ff6a1b2c3d4"}},
		{"              nt`IofCallDriver+0x55", Frame{Module: "nt", Function: "IofCallDriver", Offset: 0x55, Raw: "nt`IofCallDriver+0x55"}},
		{"              Ntfs.sys`NtfsCreateFcb+0x388", Frame{Module: "Ntfs.sys", Function: "NtfsCreateFcb", Offset: 0x388, Raw: "Ntfs.sys`NtfsCreateFcb+0x388"}},
		{"              nt`KiDispatchInterruptContinue", Frame{Module: "nt", Function: "KiDispatchInterruptContinue", Raw: "nt`KiDispatchInterruptContinue"}},
		{"              msedge.dll`0x7ffd3c1a9e20", Frame{Module: "msedge.dll", Address: 0x7ffd3c1a9e20, Raw: "msedge.dll`0x7ffd3c1a9e20"}},
		{"ms-teams`0xFFFFFFFFFFFFFFFF\r", Frame{Module: "ms-teams", Address: 0xFFFFFFFFFFFFFFFF, Raw: "ms-teams`0xFFFFFFFFFFFFFFFF"}},
		{"mssrch`CSearchCrawlScopeManager::Open+0x1a  ", Frame{Module: "mssrch", Function: "CSearchCrawlScopeManager::Open", Offset: 0x1a, Raw: "mssrch`CSearchCrawlScopeManager::Open+0x1a"}},
		{"app`operator+", Frame{Module: "app", Function: "operator+", Raw: "app`operator+"}},
		{"app`operator+0x+0x10", Frame{Module: "app", Function: "operator+0x", Offset: 0x10, Raw: "app`operator+0x+0x10"}},
		{"app`f+0xzz", Frame{Module: "app", Function: "f+0xzz", Raw: "app`f+0xzz"}},
		{"0x10000000000000000", Frame{Function: "0x10000000000000000", Raw: "0x10000000000000000"}},
		{"<unknown>", Frame{Function: "<unknown>", Raw: "<unknown>"}},
		{"a`b`c+0x1", Frame{Module: "a", Function: "b`c", Offset: 1, Raw: "a`b`c+0x1"}},
	} {
		if got := ParseFrame(tc.line); got != tc.want {
			t.Errorf("ParseFrame(%q) = %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

// summary is what the fixture tests compare: a record with its frames as
// printed (ParseFrame is tested on its own).
type summary struct {
	Seq      int
	Time     string
	PID, TID int
	Probe    string
	Status   uint32
	Process  string
	User     []string
	Kernel   []string // nil: no kernel stack
}

func summarize(r *Record) summary {
	raws := func(fs []Frame) []string {
		if fs == nil {
			return nil
		}
		out := []string{}
		for _, f := range fs {
			out = append(out, f.Raw)
		}
		return out
	}
	return summary{r.Seq, r.Time.Format(time.RFC3339Nano), r.PID, r.TID, r.Probe, r.Status, r.Process, raws(r.User), raws(r.Kernel)}
}

// run feeds a fixture to a parser, line by line as dtrace prints them.
func run(t *testing.T, name string) (recs []*Record, errs []error, endErr error, p *Parser) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p = &Parser{}
	for line := range strings.Lines(string(data)) {
		rec, err := p.Line(line)
		if rec != nil && err != nil {
			t.Fatalf("both a record and an error for %q", line)
		}
		if rec != nil {
			recs = append(recs, rec)
		}
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			errs = append(errs, err)
		}
	}
	return recs, errs, p.End(), p
}

func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		file    string
		want    []summary
		errs    []string // substrings, in order
		endErr  string
		ignored int
	}{
		{
			file: "two_records.txt",
			want: []summary{{
				1, "2026-01-01T12:02:03.123456789Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "ms-teams.exe",
				[]string{"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileInternal+0x2f6", "KERNELBASE`CreateFileW+0x66", "msedge.dll`0x7ffd3c1a9e20", "ms-teams`0x7ff6a1b2c3d4", "KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28"},
				[]string{"nt`KiSystemServiceCopyEnd+0x25", "nt`IofCallDriver+0x55", "FLTMGR.SYS`FltpCreate+0x2f4", "Ntfs.sys`NtfsCreateFcb+0x388"},
			}, {
				2, "2026-01-01T12:02:04.987654321Z", 7788, 7792, "NtOpenFile:return", 0xC0000022, "SearchIndexer.",
				[]string{"ntdll`NtOpenFile+0x14", "KERNELBASE`CreateFileInternal+0x1b4", "mssrch`CSearchCrawlScopeManager::Open", "0x7ff7c0de1000"},
				[]string{"nt`KiSystemServiceCopyEnd"},
			}},
		},
		{
			file: "unresolved.txt",
			want: []summary{{
				3, "2026-01-01T12:03:20.000000001Z", 4004, 4010, "NtDeviceIoControlFile:return", 0x80000005, "Code - Insider",
				[]string{"0x7ffd4a2b10e4", "0x7ffd47c3a5f1", "KERNELBASE`0x7ffd47c3a5f1", "Code - Insiders`0x7ff7000012ab", "ntdll`RtlUserThreadStart"},
				nil,
			}},
		},
		{
			file: "crlf.txt",
			want: []summary{{
				1, "2026-01-01T12:02:03Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "ms-teams.exe",
				[]string{"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileW+0x66"},
				[]string{"nt`IofCallDriver+0x55"},
			}, {
				2, "2026-01-01T12:02:03.5Z", 10236, 4413, "NtOpenFile:return", 0xC0000034, "ms-teams.exe",
				[]string{"ntdll`NtOpenFile+0x14"},
				nil,
			}},
		},
		{
			file: "cutoff.txt",
			want: []summary{{
				2, "2026-01-01T12:02:03.223456789Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "ms-teams.exe",
				[]string{"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileW+0x66"},
				nil,
			}},
			errs:   []string{"line 5: record 1: cut off by a new begin line"},
			endErr: "record 3: cut off by the end of the output",
		},
		{
			file: "cpp_templates.txt",
			want: []summary{{
				1, "2026-01-01T12:02:03Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "app.exe",
				[]string{"ntdll`NtCreateFile+0x14", "msvcp140`std::basic_filebuf<char,std::char_traits<char> >::open+0x5c",
					"app`std::vector<int,std::allocator<int> >::push_back+0x12", "app`std::_Func_impl_no_alloc<<lambda_1>,void>::_Do_call+0x2b",
					"app``anonymous namespace'::Worker::Run+0x40", "app`operator<<+0x9", "app`Foo::operator+",
					"app`std::map<std::basic_string<char,std::char_traits<char>,std::allocator<char> >,int,std::less<std::basic_string<char,std::char_traits<char>,std::allocator<char> > >,std::allocator<std::pair<std::basic_string<char,std::char_traits<char>,std::allocator<char> > const ,int> > >::operator[]+0x1f"},
				nil,
			}},
		},
		{
			file: "empty_ustack.txt",
			want: []summary{
				{1, "2026-01-01T12:02:03Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "ms-teams.exe", []string{}, []string{"nt`KiSystemServiceCopyEnd+0x25"}},
				{2, "2026-01-01T12:02:03.000000001Z", 10236, 4412, "NtOpenFile:return", 0xC0000022, "ms-teams.exe", []string{}, nil},
			},
		},
		{
			file: "ansi_names.txt",
			want: []summary{{
				1, "2026-01-01T12:02:03Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "Café Crème.e",
				[]string{"ntdll`NtCreateFile+0x14", "Bibliothèque`OuvrirÉlément+0x20", "Müller`Grüße€+0x8", "odd\uFFFD`f\uFFFD+0x1"},
				[]string{"nt`IofCallDriver+0x55"},
			}},
		},
		{
			file: "garbage.txt",
			want: []summary{{
				1, "2026-01-01T12:02:03.123456789Z", 10236, 4412, "NtCreateFile:return", 0xC000000D, "ms-teams.exe",
				[]string{"ntdll`NtCreateFile+0x14"},
				nil,
			}, {
				3, "2026-01-01T12:02:05Z", 10236, 4414, "NtWriteFile:return", 0xC000007F, "ms-teams.exe",
				[]string{"ntdll`NtWriteFile+0x14", "KERNELBASE`WriteFile+0x7a"},
				nil,
			}},
			errs:    []string{`line 14: begin: sequence "x"`, `line 19: record 2: "garbage in the middle of a record" where @@livedump ustack was expected`},
			ignored: 13,
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			recs, errs, endErr, p := run(t, tc.file)
			var got []summary
			for _, r := range recs {
				if r.Time.Location() != time.UTC {
					t.Errorf("record %d: time not in UTC", r.Seq)
				}
				got = append(got, summarize(r))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d records %+v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if !reflect.DeepEqual(got[i], tc.want[i]) {
					t.Errorf("record %d:\n got %#v\nwant %#v", i, got[i], tc.want[i])
				}
			}
			if len(errs) != len(tc.errs) {
				t.Fatalf("errors %v, want %d", errs, len(tc.errs))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.errs[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e, tc.errs[i])
				}
			}
			switch {
			case tc.endErr == "" && endErr != nil:
				t.Errorf("End = %v", endErr)
			case tc.endErr != "" && (endErr == nil || !strings.Contains(endErr.Error(), tc.endErr)):
				t.Errorf("End = %v, want %q", endErr, tc.endErr)
			}
			if p.Ignored() != tc.ignored {
				t.Errorf("Ignored = %d, want %d", p.Ignored(), tc.ignored)
			}
		})
	}
}

func TestRecordErrors(t *testing.T) {
	const begin = "@@livedump begin 1 1767268923123456789 10 11 NtCreateFile:return 0xc000000d a.exe"
	frame := "              ntdll`NtCreateFile+0x14"
	frames := func(n int) []string {
		var out []string
		for range n {
			out = append(out, frame)
		}
		return out
	}
	lines := func(parts ...any) []string {
		var out []string
		for _, p := range parts {
			switch v := p.(type) {
			case string:
				out = append(out, v)
			case []string:
				out = append(out, v...)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		lines  []string
		reason string // empty: the record is accepted
	}{
		{"100 user frames", lines(begin, "@@livedump ustack", frames(100), "@@livedump end 1"), ""},
		{"101 user frames", lines(begin, "@@livedump ustack", frames(101), "@@livedump end 1"), "more than 100 user frames"},
		{"101 kernel frames", lines(begin, "@@livedump ustack", "@@livedump kstack", frames(101), "@@livedump end 1"), "more than 100 kernel frames"},
		{"empty stacks", lines(begin, "@@livedump ustack", "", "@@livedump kstack", "", "@@livedump end 1"), ""},
		{"long frame", lines(begin, "@@livedump ustack", "              a`"+strings.Repeat("x", MaxLineLen), "@@livedump end 1"), "longer than 4096"},
		{"line at the limit", lines(begin, "@@livedump ustack", "              a`"+strings.Repeat("x", MaxLineLen-16), "@@livedump end 1"), ""},
		{"long begin", lines(begin+strings.Repeat("x", MaxLineLen), "@@livedump ustack", "@@livedump end 1"), ""}, // ignored outside a record: no error, no record
		{"end mismatch", lines(begin, "@@livedump ustack", "@@livedump end 2"), "does not match begin 1"},
		{"end garbage", lines(begin, "@@livedump ustack", "@@livedump end 1x"), "does not match"},
		{"end first", lines(begin, "@@livedump end 1"), "end before @@livedump ustack"},
		{"kstack first", lines(begin, "@@livedump kstack"), "unexpected @@livedump kstack"},
		{"two ustacks", lines(begin, "@@livedump ustack", "@@livedump ustack"), "unexpected @@livedump ustack"},
		{"two kstacks", lines(begin, "@@livedump ustack", "@@livedump kstack", "@@livedump kstack"), "unexpected @@livedump kstack"},
		{"unknown marker", lines(begin, "@@livedump ustack", "@@livedump foo"), "unknown marker"},
		{"unindented line", lines(begin, "@@livedump ustack", "ntdll`NtCreateFile+0x14"), "unexpected line"},
		{"seq zero", lines(strings.Replace(begin, "begin 1", "begin 0", 1)), "sequence"},
		{"negative time", lines(strings.Replace(begin, "1767268923123456789", "-1", 1)), "walltimestamp"},
		{"bad pid", lines(strings.Replace(begin, " 10 ", " ten ", 1)), "pid"},
		{"bad tid", lines(strings.Replace(begin, " 11 ", " -11 ", 1)), "tid"},
		{"bad probe", lines(strings.Replace(begin, "NtCreateFile:return", "NtCreateFile", 1)), "probe"},
		{"status without 0x", lines(strings.Replace(begin, "0xc000000d", "c000000d", 1)), "status"},
		{"status too big", lines(strings.Replace(begin, "0xc000000d", "0x1c000000d", 1)), "status"},
		{"no process", lines(strings.TrimSuffix(begin, " a.exe")), "fewer than 7 fields"},
		{"blank process", lines(strings.TrimSuffix(begin, "a.exe") + "   "), "fewer than 7 fields"},
		{"short begin", lines("@@livedump begin 1 2 3"), "fewer than 7 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Parser
			var recs []*Record
			var errs []error
			for _, l := range tc.lines {
				rec, err := p.Line(l)
				if rec != nil {
					recs = append(recs, rec)
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
			if tc.reason == "" {
				if len(errs) != 0 {
					t.Fatalf("errors: %v", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.reason) || len(recs) != 0 {
				t.Fatalf("got records %v errors %v, want one error with %q", recs, errs, tc.reason)
			}
			// The parser resynchronises at the next begin.
			for _, l := range lines(begin, "@@livedump ustack", frame, "@@livedump end 1") {
				rec, err := p.Line(l)
				if err != nil {
					t.Fatalf("after the error: %v", err)
				}
				if rec != nil {
					recs = append(recs, rec)
				}
			}
			if len(recs) != 1 || len(recs[0].User) != 1 {
				t.Fatalf("did not resynchronise: %v", recs)
			}
		})
	}
}

func TestProcessWithSpaces(t *testing.T) {
	var p Parser
	for _, l := range []string{
		"@@livedump begin 4 0 1 2 NtReadFile:return 0x00000103 My  App (x86)\n",
		"@@livedump ustack\n",
		"@@livedump end 4\n",
	} {
		rec, err := p.Line(l)
		if err != nil {
			t.Fatal(err)
		}
		if rec != nil {
			if rec.Process != "My  App (x86)" || rec.Status != 0x103 || !rec.Time.Equal(time.Unix(0, 0)) || rec.User == nil || rec.Kernel != nil {
				t.Fatalf("record %+v", rec)
			}
			return
		}
	}
	t.Fatal("no record")
}

func FuzzParser(f *testing.F) {
	for _, name := range []string{"two_records.txt", "unresolved.txt", "crlf.txt", "cutoff.txt", "garbage.txt",
		"cpp_templates.txt", "empty_ustack.txt", "ansi_names.txt", "long_frame.txt", "windows_mix_crlf.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, data string) {
		var p Parser
		check := func(rec *Record, err error) {
			if rec != nil && err != nil {
				t.Fatal("both a record and an error")
			}
			if err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("error %v is not a *ParseError", err)
				}
			}
			if rec == nil {
				return
			}
			if rec.Seq <= 0 || len(rec.User) > MaxFrames || len(rec.Kernel) > MaxFrames || rec.Process == "" || rec.User == nil {
				t.Fatalf("bad record %+v", rec)
			}
			// Whatever bytes dtrace printed, the record can be sent and
			// the controller stores it.
			if err := storable(rec); err != nil {
				t.Fatalf("record %d cannot be sent: %v", rec.Seq, err)
			}
		}
		for line := range strings.Lines(data) {
			check(p.Line(line))
		}
		check(nil, p.End())
		if p.End() != nil {
			t.Fatal("End did not reset the parser")
		}
	})
}
