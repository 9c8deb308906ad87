package agent

import (
	"testing"

	"github.com/livedump/livedump/agent/provision"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestProvisionState: each provisioning state is reported (and exported as
// the livedump_agent provisioning gauge) as its wire value.
func TestProvisionState(t *testing.T) {
	for s, want := range map[provision.State]livedumpv1.ProvisionState{
		provision.NotProvisioned: livedumpv1.ProvisionState_PROVISION_STATE_NOT_PROVISIONED,
		provision.RebootRequired: livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED,
		provision.Rebooting:      livedumpv1.ProvisionState_PROVISION_STATE_REBOOTING,
		provision.Ready:          livedumpv1.ProvisionState_PROVISION_STATE_READY,
		provision.Blocked:        livedumpv1.ProvisionState_PROVISION_STATE_BLOCKED,
		provision.Failed:         livedumpv1.ProvisionState_PROVISION_STATE_FAILED,
		"":                       livedumpv1.ProvisionState_PROVISION_STATE_UNSPECIFIED,
	} {
		if got := provisionState(s); got != want {
			t.Errorf("provisionState(%q) = %v, want %v", s, got, want)
		}
		if got := stateValue(s); got != float64(want) {
			t.Errorf("stateValue(%q) = %v, want %v", s, got, float64(want))
		}
	}
}
