package capture

import (
	"slices"
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestStoredStatesAreTheWireNames: every stored state constant maps to the
// wire value of the same name and back, so a state added to one side but
// not the other fails here rather than reaching an operator as UNSPECIFIED.
func TestStoredStatesAreTheWireNames(t *testing.T) {
	captures := map[string]livedumpv1.CaptureState{
		StateActive: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE, StateDone: livedumpv1.CaptureState_CAPTURE_STATE_DONE,
		StateExpired: livedumpv1.CaptureState_CAPTURE_STATE_EXPIRED, StateCancelled: livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED,
		StateFailed: livedumpv1.CaptureState_CAPTURE_STATE_FAILED,
	}
	if len(captures) != len(livedumpv1.CaptureState_name)-1 {
		t.Fatalf("%d stored capture states for %d wire states", len(captures), len(livedumpv1.CaptureState_name)-1)
	}
	// The metric's label values and the filter's names are the same set.
	if len(captureStates) != len(captures) {
		t.Errorf("captureStates has %d states, want %d", len(captureStates), len(captures))
	}
	for name, want := range captures {
		if !slices.Contains(captureStates, name) {
			t.Errorf("captureStates lacks %q", name)
		}
		if got, err := ParseState(name); err != nil || got != name {
			t.Errorf("ParseState(%q) = %q, %v", name, got, err)
		}
		if got := captureStateValue(name); got != want {
			t.Errorf("captureStateValue(%q) = %v, want %v", name, got, want)
		}
	}
	targets := map[string]livedumpv1.TargetState{
		TargetPending: livedumpv1.TargetState_TARGET_STATE_PENDING, TargetDelivered: livedumpv1.TargetState_TARGET_STATE_DELIVERED,
		TargetArmed: livedumpv1.TargetState_TARGET_STATE_ARMED, TargetTriggered: livedumpv1.TargetState_TARGET_STATE_TRIGGERED,
		TargetDumping: livedumpv1.TargetState_TARGET_STATE_DUMPING, TargetDone: livedumpv1.TargetState_TARGET_STATE_DONE,
		TargetFailed: livedumpv1.TargetState_TARGET_STATE_FAILED, TargetExpired: livedumpv1.TargetState_TARGET_STATE_EXPIRED,
		TargetCancelled: livedumpv1.TargetState_TARGET_STATE_CANCELLED,
	}
	if len(targets) != len(livedumpv1.TargetState_name)-1 {
		t.Fatalf("%d stored target states for %d wire states", len(targets), len(livedumpv1.TargetState_name)-1)
	}
	for name, want := range targets {
		if got := TargetStateValue(name); got != want {
			t.Errorf("TargetStateValue(%q) = %v, want %v", name, got, want)
		}
		if got := targetStateName(want); got != name {
			t.Errorf("targetStateName(%v) = %q, want %q", want, got, name)
		}
	}
	for _, bad := range []string{"", "Active", "unspecified", "1", "armed "} {
		if v := captureStateValue(bad); v != 0 {
			t.Errorf("captureStateValue(%q) = %v, want UNSPECIFIED", bad, v)
		}
		if v := TargetStateValue(bad); v != 0 {
			t.Errorf("TargetStateValue(%q) = %v, want UNSPECIFIED", bad, v)
		}
	}
	if n := targetStateName(livedumpv1.TargetState(99)); n != "" {
		t.Errorf("targetStateName(99) = %q, want \"\"", n)
	}
	if n := targetStateName(livedumpv1.TargetState_TARGET_STATE_UNSPECIFIED); n != "" {
		t.Errorf("targetStateName(UNSPECIFIED) = %q, want \"\"", n)
	}
}
