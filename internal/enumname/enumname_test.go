package enumname

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/descriptorpb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestName(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{Name(livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED, "-"), "reboot-required"},
		{Name(livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED, "_"), "reboot_required"},
		{Name(livedumpv1.ProvisionState_PROVISION_STATE_READY, "-"), "ready"},
		{Name(livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, "_"), "hash_only"},
		{Name(livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, "_"), "stacks"},
		{Name(livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNKNOWN, "_"), "unknown"},
		{Name(livedumpv1.TargetState_TARGET_STATE_CANCELLED, "_"), "cancelled"},
		{Name(livedumpv1.AgentState_AGENT_STATE_OFFLINE, "-"), "offline"},
		// The zero value and numbers without a name, as String() has them.
		{Name(livedumpv1.CaptureState_CAPTURE_STATE_UNSPECIFIED, "_"), "unspecified"},
		{Name(livedumpv1.CaptureState(99), "_"), "99"},
		{Name(livedumpv1.CaptureState(-1), "_"), "-1"},
		// An enum without an UNSPECIFIED value: the prefix is its name.
		{Name(descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, "_"), "sfixed64"},
		{Name(descriptorpb.FieldDescriptorProto_LABEL_REPEATED, "_"), "repeated"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestRoundTrip parses the name of every value of every livedump enum back
// to the value, with both separators.
func TestRoundTrip(t *testing.T) {
	t.Run("CaptureState", roundTrip[livedumpv1.CaptureState])
	t.Run("TargetState", roundTrip[livedumpv1.TargetState])
	t.Run("CaptureAction", roundTrip[livedumpv1.CaptureAction])
	t.Run("UploadMode", roundTrip[livedumpv1.UploadMode])
	t.Run("AgentState", roundTrip[livedumpv1.AgentState])
	t.Run("DumpState", roundTrip[livedumpv1.DumpState])
	t.Run("ProvisionAction", roundTrip[livedumpv1.ProvisionAction])
	t.Run("ProvisionState", roundTrip[livedumpv1.ProvisionState])
	t.Run("RebootPolicy", roundTrip[livedumpv1.RebootPolicy])
	t.Run("SelfTestStatus", roundTrip[livedumpv1.SelfTestStatus])
}

func roundTrip[E Enum](t *testing.T) {
	var zero E
	n := zero.Descriptor().Values().Len()
	for _, sep := range []string{"_", "-"} {
		if names := Names[E](sep); len(names) != n-1 {
			t.Errorf("Names(%q): %d names for %d values: %q", sep, len(names), n, names)
		}
		for v := E(1); int(v) < n; v++ {
			s := Name(v, sep)
			if s == "" {
				t.Errorf("%v has no name", v)
				continue
			}
			if got, ok := Parse[E](s, sep); !ok || got != v {
				t.Errorf("Parse(%q, %q) = %v, %v; want %v", s, sep, got, ok, v)
			}
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, sep string
		want      livedumpv1.DumpState
		ok        bool
	}{
		{"hash-only", "-", livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, true},
		{"hash_only", "_", livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, true},
		{"uploaded", "_", livedumpv1.DumpState_DUMP_STATE_UPLOADED, true},
		{"hash_only", "-", 0, false}, // the separator is part of the name
		{"Uploaded", "_", 0, false},  // exact, not case-folded
		{"DUMP_STATE_UPLOADED", "_", 0, false},
		{"unspecified", "_", 0, false}, // the zero value has no name
		{"", "_", 0, false},
		{"bogus", "_", 0, false},
	} {
		got, ok := Parse[livedumpv1.DumpState](tc.name, tc.sep)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Parse(%q, %q) = %v, %v; want %v, %v", tc.name, tc.sep, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		e    livedumpv1.SelfTestStatus
		want bool
	}{
		{livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNSPECIFIED, false},
		{livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS, true},
		{livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNKNOWN, true},
		{livedumpv1.SelfTestStatus(4), false},
		{livedumpv1.SelfTestStatus(-1), false},
	} {
		if got := Valid(tc.e); got != tc.want {
			t.Errorf("Valid(%v) = %v, want %v", tc.e, got, tc.want)
		}
	}
}

// TestNameIsTheStringIdiom: Name is what the code it replaced computed,
// strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(e.String(),
// prefix)), "_", sep), for every value and for numbers without a name.
func TestNameIsTheStringIdiom(t *testing.T) {
	for n := int32(-1); n < 12; n++ {
		for _, sep := range []string{"_", "-"} {
			e := livedumpv1.ProvisionState(n)
			want := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(e.String(), "PROVISION_STATE_")), "_", sep)
			if got := Name(e, sep); got != want {
				t.Errorf("Name(%d, %q) = %q, want %q", n, sep, got, want)
			}
		}
	}
}

func TestNames(t *testing.T) {
	if got, want := Names[livedumpv1.UploadMode]("-"), []string{"full", "hash-only"}; !slices.Equal(got, want) {
		t.Errorf("UploadMode: %q, want %q", got, want)
	}
	if got, want := Names[livedumpv1.AgentState]("-"), []string{"online", "offline", "revoked"}; !slices.Equal(got, want) {
		t.Errorf("AgentState: %q, want %q", got, want)
	}
}

func TestUpperSnake(t *testing.T) {
	for in, want := range map[string]string{"SelfTestStatus": "SELF_TEST_STATUS", "Type": "TYPE", "x": "X"} {
		if got := upperSnake(in); got != want {
			t.Errorf("upperSnake(%q) = %q, want %q", in, got, want)
		}
	}
}
