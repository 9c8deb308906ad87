package capture

import (
	"reflect"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestArmRendersWhatTheSpecDoes: the probe an agent renders from the arm
// directive built from a capture spec is the one the spec describes, down
// to the D script, so what the operator sees is what runs.
func TestArmRendersWhatTheSpecDoes(t *testing.T) {
	statuses := []uint32{0xC000000D, 0xC0000022}
	for _, tc := range []struct {
		name string
		spec *livedumpv1.CaptureSpec
	}{
		{"stacks", &livedumpv1.CaptureSpec{Selector: "x=y", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}},
		{"everything", &livedumpv1.CaptureSpec{
			Selector: "x=y", Processes: []string{"Code - Insiders.exe", "notepad.exe"}, Syscalls: []string{"NtCreateFile", "NtOpenFile"},
			Statuses: []string{"STATUS_INVALID_PARAMETER", "STATUS_ACCESS_DENIED"}, Ustack: 20, Kstack: true,
			Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, LkdMode: 2, PerAgentCap: 4, MaxDumps: 3,
			Upload: livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY,
		}},
		{"on demand", &livedumpv1.CaptureSpec{Selector: "x=y", OnDemand: true, LkdMode: 5}},
		{"on demand, action stacks", &livedumpv1.CaptureSpec{Selector: "x=y", OnDemand: true, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS}},
		{"raw script", &livedumpv1.CaptureSpec{Selector: "x=y", Script: "syscall:::return { exit(0); }"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := statuses
			if tc.spec.GetOnDemand() || tc.spec.GetScript() != "" {
				values = nil
			}
			arm := armOf("c-1", tc.spec, values, time.Unix(1e9, 0))
			fromArm, fromSpec := probe.FromArm(arm), probe.FromCaptureSpec("c-1", tc.spec, values)
			if !reflect.DeepEqual(fromArm, fromSpec) {
				t.Fatalf("FromArm:\n %+v\nFromCaptureSpec:\n %+v", fromArm, fromSpec)
			}
			a, errA := probe.Render(fromArm, 0)
			s, errS := probe.Render(fromSpec, 0)
			if errA != nil || errS != nil || a != s || a == "" {
				t.Errorf("from the arm (%v):\n%s\nfrom the spec (%v):\n%s", errA, a, errS, s)
			}
		})
	}
}
