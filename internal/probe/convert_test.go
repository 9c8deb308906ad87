package probe

import (
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// checkFields fails when m's message has a field that is neither in mapped
// nor in other: a field added to the wire must be given to the probe or
// said not to concern it.
func checkFields(t *testing.T, m proto.Message, mapped, other []string) {
	t.Helper()
	fields := m.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		name := string(fields.Get(i).Name())
		if !slices.Contains(mapped, name) && !slices.Contains(other, name) {
			t.Errorf("%s.%s: neither mapped to the probe spec nor listed as outside it", m.ProtoReflect().Descriptor().Name(), name)
		}
	}
	for _, name := range append(slices.Clone(mapped), other...) {
		if fields.ByName(protoreflect.Name(name)) == nil {
			t.Errorf("%s has no field %s", m.ProtoReflect().Descriptor().Name(), name)
		}
	}
}

func TestFromArm(t *testing.T) {
	checkFields(t, &livedumpv1.ArmCapture{},
		[]string{"capture_id", "processes", "syscalls", "statuses", "ustack", "kstack", "action", "lkd_mode", "per_agent_cap", "script", "on_demand"},
		[]string{"expires", "upload"}) // the agent's, not the script's

	arm := &livedumpv1.ArmCapture{
		CaptureId: "c1", Processes: []string{"a.exe", "b.exe", "a.exe"}, Syscalls: []string{"NtOpenFile"},
		Statuses: []uint32{0xC0000022, 0xC000000D}, Ustack: 7, Kstack: true, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP,
		LkdMode: 2, PerAgentCap: 3, Script: "BEGIN {}", OnDemand: true,
		Expires: timestamppb.Now(), Upload: livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY,
	}
	want := Spec{
		CaptureID: "c1", Processes: []string{"a.exe", "b.exe"}, Syscalls: []string{"NtOpenFile"},
		Statuses: []uint32{0xC0000022, 0xC000000D}, UStack: 7, KStack: true, Action: ActionDump,
		LKDMode: 2, PerAgentCap: 3, RawScript: "BEGIN {}", OnDemand: true,
	}
	if got := FromArm(arm); !reflect.DeepEqual(got, want) {
		t.Errorf("FromArm:\n got %+v\nwant %+v", got, want)
	}

	// Defaults are filled in, as the agent and the controller render them.
	got := FromArm(&livedumpv1.ArmCapture{CaptureId: "c2", Processes: []string{"a.exe"}, Statuses: []uint32{1}})
	want = Spec{CaptureID: "c2", Processes: []string{"a.exe"}, Statuses: []uint32{1}, UStack: DefaultUStack, Action: ActionStacks, PerAgentCap: DefaultStacksCap}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromArm with defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestFromCaptureSpec(t *testing.T) {
	checkFields(t, &livedumpv1.CaptureSpec{},
		[]string{"processes", "syscalls", "statuses", "ustack", "kstack", "action", "lkd_mode", "per_agent_cap", "script", "on_demand"},
		// The controller's: which agents, how fast, how long, how many
		// dumps fleet-wide and how they are uploaded.
		[]string{"selector", "max_dumps", "rollout_rate", "expire", "upload", "dumps_per_signature"})

	spec := &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"a.exe"}, Syscalls: []string{"NtOpenFile", "NtCreateFile"},
		Statuses: []string{"STATUS_ACCESS_DENIED", "E_INVALIDARG"}, Ustack: 12, Kstack: true,
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, LkdMode: 4, PerAgentCap: 2, MaxDumps: 9,
		RolloutRate: 5, Expire: durationpb.New(60e9), Upload: livedumpv1.UploadMode_UPLOAD_MODE_FULL, DumpsPerSignature: 1,
	}
	// The statuses are the resolved values given, not the spec's names.
	want := Spec{
		CaptureID: "c1", Processes: []string{"a.exe"}, Syscalls: []string{"NtOpenFile", "NtCreateFile"},
		Statuses: []uint32{0xC0000022, 0x80070057}, UStack: 12, KStack: true, Action: ActionDump, LKDMode: 4, PerAgentCap: 2,
	}
	if got := FromCaptureSpec("c1", spec, []uint32{0xC0000022, 0x80070057}); !reflect.DeepEqual(got, want) {
		t.Errorf("FromCaptureSpec:\n got %+v\nwant %+v", got, want)
	}

	for _, tc := range []struct {
		name string
		spec *livedumpv1.CaptureSpec
		want Spec
	}{
		{"raw script", &livedumpv1.CaptureSpec{Script: "BEGIN { exit(0); }"},
			Spec{CaptureID: "c", RawScript: "BEGIN { exit(0); }", Action: ActionStacks}},
		// The controller arms an on-demand capture as a dump, whatever
		// action the request named.
		{"on demand", &livedumpv1.CaptureSpec{OnDemand: true, LkdMode: 2},
			Spec{CaptureID: "c", OnDemand: true, Action: ActionDump, LKDMode: 2, UStack: DefaultUStack, PerAgentCap: DefaultDumpCap}},
		{"on demand, action stacks", &livedumpv1.CaptureSpec{OnDemand: true, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS},
			Spec{CaptureID: "c", OnDemand: true, Action: ActionDump, UStack: DefaultUStack, PerAgentCap: DefaultDumpCap}},
		{"nil", nil, Spec{CaptureID: "c", Action: ActionStacks, UStack: DefaultUStack, PerAgentCap: DefaultStacksCap}},
	} {
		if got := FromCaptureSpec("c", tc.spec, nil); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

// TestActionOf maps every wire action: each named one to the Action of
// its name, which Validate accepts; the unspecified one and numbers the
// enum does not name to the default, ActionStacks.
func TestActionOf(t *testing.T) {
	want := map[livedumpv1.CaptureAction]Action{
		livedumpv1.CaptureAction_CAPTURE_ACTION_UNSPECIFIED: ActionStacks,
		livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS:      ActionStacks,
		livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP:        ActionDump,
		livedumpv1.CaptureAction(99):                        ActionStacks,
	}
	values := livedumpv1.CaptureAction(0).Descriptor().Values()
	for i := range values.Len() {
		a := livedumpv1.CaptureAction(values.Get(i).Number())
		if _, ok := want[a]; !ok {
			t.Errorf("%v: no expectation; add one", a)
		}
	}
	for a, w := range want {
		got := actionOf(a)
		if got != w {
			t.Errorf("actionOf(%v) = %q, want %q", a, got, w)
		}
		s := Spec{CaptureID: "c", Processes: []string{"a.exe"}, Statuses: []uint32{1}, Action: got}
		if err := s.Validate(); err != nil {
			t.Errorf("actionOf(%v): %v", a, err)
		}
	}
}
