package capture

import (
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestStateValue: each state the agent reports is sent as its wire value.
func TestStateValue(t *testing.T) {
	for state, want := range map[string]livedumpv1.TargetState{
		stateArmed:     livedumpv1.TargetState_TARGET_STATE_ARMED,
		stateTriggered: livedumpv1.TargetState_TARGET_STATE_TRIGGERED,
		stateDone:      livedumpv1.TargetState_TARGET_STATE_DONE,
		stateFailed:    livedumpv1.TargetState_TARGET_STATE_FAILED,
		stateExpired:   livedumpv1.TargetState_TARGET_STATE_EXPIRED,
		stateCancelled: livedumpv1.TargetState_TARGET_STATE_CANCELLED,
		"":             livedumpv1.TargetState_TARGET_STATE_UNSPECIFIED,
	} {
		if got := stateValue(state); got != want {
			t.Errorf("stateValue(%q) = %v, want %v", state, got, want)
		}
	}
}
