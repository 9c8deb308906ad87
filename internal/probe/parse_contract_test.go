package probe

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// firing is one probe firing fed to runClause.
type firing struct {
	hits           int
	wall           int64
	pid, tid       int
	fn, name       string
	status         uint32
	execname       string
	ustack, kstack []string
}

// runClause executes the first clause of a rendered script the way dtrace
// would print it, statement by statement: it reads the printf formats and
// arguments from the script itself, so a change of the script's framing
// that the parser does not follow fails here.
func runClause(t *testing.T, script string, f firing) string {
	t.Helper()
	_, body, ok := strings.Cut(script, "\n{\n")
	if !ok {
		t.Fatalf("no clause in\n%s", script)
	}
	body, _, _ = strings.Cut(body, "\n}\n")
	var out strings.Builder
	stack := func(frames []string, depth int) {
		out.WriteString("\n")
		for i, fr := range frames {
			if i == depth {
				break
			}
			out.WriteString("              " + fr + "\n")
		}
	}
	for stmt := range strings.Lines(body) {
		stmt = strings.TrimSpace(stmt)
		switch {
		case stmt == "livedump_hits++;":
			f.hits++
		case strings.HasPrefix(stmt, "printf("):
			args := strings.Split(strings.TrimSuffix(strings.TrimPrefix(stmt, "printf("), ");"), ", ")
			format, err := strconv.Unquote(args[0])
			if err != nil {
				t.Fatalf("printf format %s: %v", args[0], err)
			}
			var vals []any
			for _, a := range args[1:] {
				switch a {
				case "livedump_hits":
					vals = append(vals, f.hits)
				case "walltimestamp":
					vals = append(vals, f.wall)
				case "pid":
					vals = append(vals, f.pid)
				case "tid":
					vals = append(vals, f.tid)
				case "probefunc":
					vals = append(vals, f.fn)
				case "probename":
					vals = append(vals, f.name)
				case "(uint32_t)arg0":
					vals = append(vals, f.status)
				case "execname":
					vals = append(vals, f.execname)
				default:
					t.Fatalf("unknown printf argument %q", a)
				}
			}
			fmt.Fprintf(&out, format, vals...)
		case strings.HasPrefix(stmt, "ustack("):
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(stmt, "ustack("), ");"))
			if err != nil {
				t.Fatal(err)
			}
			stack(f.ustack, n)
		case stmt == "stack();":
			stack(f.kstack, 20)
		case strings.HasPrefix(stmt, "lkd("):
		default:
			t.Fatalf("unknown statement %q", stmt)
		}
	}
	return out.String()
}

func TestParsesRenderedScripts(t *testing.T) {
	user := []string{"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileW+0x66", "0x7ff6a1b2c3d4"}
	kernel := []string{"nt`IofCallDriver+0x55", "Ntfs.sys`NtfsCreateFcb+0x388"}
	for _, s := range []Spec{
		{CaptureID: "stacks", Processes: []string{"ms-teams.exe"}, Syscalls: []string{"NtCreateFile"}, Statuses: []uint32{0xC000000D}},
		{CaptureID: "dump", Processes: []string{"Code - Insiders.exe"}, Statuses: []uint32{0xC0000022}, UStack: 2, KStack: true, Action: ActionDump, LKDMode: 2},
	} {
		t.Run(s.CaptureID, func(t *testing.T) {
			script, err := Render(s, 0)
			if err != nil {
				t.Fatal(err)
			}
			execname, _ := ExecName(s.Processes[0])
			wall := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			var output string
			for i := range 2 {
				output += runClause(t, script, firing{
					hits: i, wall: wall.UnixNano(), pid: 100, tid: 200 + i,
					fn: "NtCreateFile", name: "return", status: s.Statuses[0], execname: execname,
					ustack: user, kstack: kernel,
				})
			}
			var p Parser
			var recs []*Record
			for line := range strings.Lines(output) {
				rec, err := p.Line(line)
				if err != nil {
					t.Fatalf("%v in\n%s", err, output)
				}
				if rec != nil {
					recs = append(recs, rec)
				}
			}
			if err := p.End(); err != nil || p.Ignored() != 0 || len(recs) != 2 {
				t.Fatalf("End %v, ignored %d, %d records from\n%s", err, p.Ignored(), len(recs), output)
			}
			wantUser := user[:min(len(user), s.WithDefaults().UStack)]
			for i, r := range recs {
				if r.Seq != i+1 || !r.Time.Equal(wall) || r.PID != 100 || r.TID != 200+i || r.Probe != "NtCreateFile:return" ||
					r.Status != s.Statuses[0] || r.Process != execname {
					t.Errorf("record %d: %+v", i, r)
				}
				if got := frameRaws(r.User); !equal(got, wantUser) {
					t.Errorf("record %d user stack %q, want %q", i, got, wantUser)
				}
				switch {
				case s.KStack && !equal(frameRaws(r.Kernel), kernel):
					t.Errorf("record %d kernel stack %q, want %q", i, frameRaws(r.Kernel), kernel)
				case !s.KStack && r.Kernel != nil:
					t.Errorf("record %d has a kernel stack", i)
				}
			}
		})
	}
}

func frameRaws(fs []Frame) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n") && len(a) == len(b)
}
