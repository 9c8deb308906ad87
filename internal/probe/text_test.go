package probe

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"google.golang.org/protobuf/proto"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// event is what agent/capture's runner sends for rec (Manager.emit), with
// the identifiers at their longest.
func event(rec *Record) *livedumpv1.TriggerEvent {
	long := strings.Repeat("x", 64)
	ev := &livedumpv1.TriggerEvent{
		Id: long, CaptureId: long, AgentId: long, Pid: int32(rec.PID), Tid: int32(rec.TID),
		Process: rec.Process, Probe: rec.Probe, Status: rec.Status, StatusName: strings.Repeat("S", 64),
	}
	for _, f := range rec.User {
		ev.UserFrames = append(ev.UserFrames, &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address})
	}
	for _, f := range rec.Kernel {
		ev.KernelFrames = append(ev.KernelFrames, &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address})
	}
	return ev
}

// ControllerLimits are controller/capture's admission limits for an event
// (MaxEventString, MaxEventFrames, MaxEventBytes). controller_test.go sets
// them: only a test in package probe_test may import the controller, which
// imports this package.
var ControllerLimits struct{ String, Frames, Bytes int }

// storable reports why rec could not be sent and stored: a string that is
// not UTF-8 (proto.Marshal refuses it), or one over the controller's
// admission limits.
func storable(rec *Record) error {
	if ControllerLimits.String == 0 || ControllerLimits.Frames == 0 || ControllerLimits.Bytes == 0 {
		return fmt.Errorf("the controller's limits are not set: %+v", ControllerLimits)
	}
	ev := event(rec)
	if _, err := proto.Marshal(ev); err != nil {
		return fmt.Errorf("marshal: %v", err)
	}
	strs := map[string]string{"process": rec.Process, "probe": rec.Probe}
	for i, f := range append(append([]Frame(nil), rec.User...), rec.Kernel...) {
		strs[fmt.Sprintf("frame %d module", i)] = f.Module
		strs[fmt.Sprintf("frame %d function", i)] = f.Function
	}
	for k, v := range strs {
		if !utf8.ValidString(v) {
			return fmt.Errorf("%s %q is not UTF-8", k, v)
		}
		if len(v) > ControllerLimits.String {
			return fmt.Errorf("%s: %d bytes, the controller stores %d", k, len(v), ControllerLimits.String)
		}
	}
	if len(ev.GetUserFrames()) > ControllerLimits.Frames || len(ev.GetKernelFrames()) > ControllerLimits.Frames {
		return fmt.Errorf("%d+%d frames", len(ev.GetUserFrames()), len(ev.GetKernelFrames()))
	}
	if n := proto.Size(ev); n > ControllerLimits.Bytes {
		return fmt.Errorf("event of %d bytes, the controller stores %d", n, ControllerLimits.Bytes)
	}
	return nil
}

// TestTextFixtures: the records of the fixtures that real Windows prints
// and the old parser lost or had refused are all storable, with the names
// decoded and the long ones cut to the controller's limit, marked.
func TestTextFixtures(t *testing.T) {
	for _, file := range []string{"cpp_templates.txt", "empty_ustack.txt", "ansi_names.txt", "long_frame.txt", "windows_mix_crlf.txt", "unresolved.txt", "crlf.txt"} {
		recs, errs, endErr, _ := run(t, file)
		if len(recs) == 0 || len(errs) != 0 || endErr != nil {
			t.Fatalf("%s: %d records, errors %v, %v", file, len(recs), errs, endErr)
		}
		for _, r := range recs {
			if err := storable(r); err != nil {
				t.Errorf("%s record %d: %v", file, r.Seq, err)
			}
		}
	}

	recs, _, _, _ := run(t, "long_frame.txt")
	u := recs[0].User
	if len(u) != 4 {
		t.Fatalf("%d frames", len(u))
	}
	if f := u[1]; len(f.Function) != MaxString || !strings.HasSuffix(f.Function, TruncatedMark) || !strings.HasPrefix(f.Function, "NNNN") || f.Offset != 0x12 || f.Module != "app" {
		t.Errorf("519-byte function: %d bytes %q..., offset %#x", len(f.Function), f.Function[:8], f.Offset)
	}
	if f := u[2]; len(f.Raw) != 519 || len(f.Function) != 510 || strings.HasSuffix(f.Function, TruncatedMark) {
		t.Errorf("519-byte frame: raw %d bytes, function %d bytes", len(f.Raw), len(f.Function))
	}
	if f := u[3]; len(f.Module) != MaxString || !strings.HasSuffix(f.Module, TruncatedMark) || f.Address != 0x7ff7000012ab {
		t.Errorf("519-byte module: %d bytes, address %#x", len(f.Module), f.Address)
	}

	recs, _, _, _ = run(t, "ansi_names.txt")
	if r := recs[0]; r.Process != "Café Crème.e" || r.User[1].Module != "Bibliothèque" || r.User[1].Function != "OuvrirÉlément" || r.User[2].Function != "Grüße€" {
		t.Errorf("Windows-1252 names not decoded: %q %q %q %q", r.Process, r.User[1].Module, r.User[1].Function, r.User[2].Function)
	}

	recs, _, _, _ = run(t, "windows_mix_crlf.txt")
	if len(recs) != 3 || recs[0].Process != "Café.exe" || recs[0].User[3].Address != 0x7ffd4a2b10e4 || len(recs[2].User) != 0 || recs[2].User == nil {
		t.Errorf("mixed CRLF fixture: %+v", recs)
	}
}

// TestEncodings: names are decoded from the code page the parser is given;
// a double-byte code page whose second byte is a backtick does not split
// the frame there.
func TestEncodings(t *testing.T) {
	sjis, err := japanese.ShiftJIS.NewEncoder().String("表示") // 表 is 0x95 0x5C: a backslash trail byte
	if err != nil {
		t.Fatal(err)
	}
	// チ in Shift JIS is 0x83 0x60: its trail byte is the backtick.
	tick := "\x83\x60"
	for _, tc := range []struct {
		name     string
		cp       uint32
		process  string // bytes as dtrace prints them
		frame    string
		wantProc string
		wantMod  string
		wantFunc string
	}{
		{"1252", 1252, "Caf\xe9.exe", "Caf\xe9`f\xfcr+0x1", "Café.exe", "Café", "für"},
		{"1251", 1251, "\xcf\xf0\xe8\xec\xe5\xf0.exe", "mod`\xf4+0x1", "Пример.exe", "mod", "ф"},
		{"932", 932, sjis + ".exe", "m" + tick + "`f+0x1", "表示.exe", "mチ", "f"},
		{"65001 valid", 65001, "Café.exe", "mod`für+0x1", "Café.exe", "mod", "für"},
		{"65001 invalid", 65001, "Caf\xe9.exe", "mod`f\xff+0x1", "Caf\uFFFD.exe", "mod", "f\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := CodePage(tc.cp)
			if err != nil {
				t.Fatal(err)
			}
			p := Parser{Encoding: enc}
			var rec *Record
			for _, l := range []string{
				"@@livedump begin 1 0 4 8 NtOpenFile:return 0xc0000022 " + tc.process,
				"@@livedump ustack", "              " + tc.frame, "", "@@livedump end 1",
			} {
				r, err := p.Line(l)
				if err != nil {
					t.Fatal(err)
				}
				if r != nil {
					rec = r
				}
			}
			if rec == nil {
				t.Fatal("no record")
			}
			f := rec.User[0]
			if rec.Process != tc.wantProc || f.Module != tc.wantMod || f.Function != tc.wantFunc {
				t.Errorf("got %q %q %q, want %q %q %q", rec.Process, f.Module, f.Function, tc.wantProc, tc.wantMod, tc.wantFunc)
			}
			if err := storable(rec); err != nil {
				t.Error(err)
			}
		})
	}
	if _, err := CodePage(437); err == nil {
		t.Error("code page 437 (OEM, not ANSI) accepted")
	}
	if SystemEncoding() != charmap.Windows1252 {
		t.Error("the default off Windows is not Windows-1252")
	}
}

// TestRecordTextBudget: a record of many long names is cut to fit the
// controller's per-event limit, not refused there.
func TestRecordTextBudget(t *testing.T) {
	var p Parser
	lines := []string{"@@livedump begin 1 0 4 8 NtOpenFile:return 0xc0000022 a.exe", "@@livedump ustack"}
	long := "              " + strings.Repeat("m", 600) + "`" + strings.Repeat("\xe9", 700) + "+0x10" // é in Windows-1252
	for range MaxFrames {
		lines = append(lines, long)
	}
	lines = append(lines, "@@livedump kstack")
	for range MaxFrames {
		lines = append(lines, long)
	}
	lines = append(lines, "@@livedump end 1")
	var rec *Record
	for _, l := range lines {
		r, err := p.Line(l)
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			rec = r
		}
	}
	if rec == nil || len(rec.User) != MaxFrames || len(rec.Kernel) != MaxFrames {
		t.Fatalf("record %v", rec)
	}
	if err := storable(rec); err != nil {
		t.Fatal(err)
	}
	if f := rec.User[0]; !strings.HasSuffix(f.Function, TruncatedMark) || !strings.HasPrefix(f.Function, "éé") || f.Offset != 0x10 {
		t.Errorf("frame %q", f.Function)
	}
}
