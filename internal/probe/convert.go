package probe

import (
	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// FromCaptureSpec is the probe of a capture spec as the operator asked for
// it, under capture ID id, with its statuses already resolved to NTSTATUS
// values (by internal/ntstatus: the spec carries them as typed). It is the
// spec FromArm gives for the arm directive the controller builds from spec:
// an on-demand capture always takes a dump, whatever its action says.
// Defaults are filled in (WithDefaults); nothing is validated.
func FromCaptureSpec(id string, spec *livedumpv1.CaptureSpec, statuses []uint32) Spec {
	action := spec.GetAction()
	if spec.GetOnDemand() {
		action = livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP
	}
	return Spec{
		CaptureID:   id,
		Processes:   spec.GetProcesses(),
		Syscalls:    spec.GetSyscalls(),
		Statuses:    statuses,
		UStack:      int(spec.GetUstack()),
		KStack:      spec.GetKstack(),
		Action:      actionOf(action),
		LKDMode:     int(spec.GetLkdMode()),
		PerAgentCap: int(spec.GetPerAgentCap()),
		RawScript:   spec.GetScript(),
		OnDemand:    spec.GetOnDemand(),
	}.WithDefaults()
}

// FromArm is the probe an arm directive tells an agent to run. The
// controller renders it to show the operator; the agent renders it to run
// it (setting HelperPID for an on-demand dump). Defaults are filled in
// (WithDefaults); nothing is validated.
func FromArm(arm *livedumpv1.ArmCapture) Spec {
	return Spec{
		CaptureID:   arm.GetCaptureId(),
		Processes:   arm.GetProcesses(),
		Syscalls:    arm.GetSyscalls(),
		Statuses:    arm.GetStatuses(),
		UStack:      int(arm.GetUstack()),
		KStack:      arm.GetKstack(),
		Action:      actionOf(arm.GetAction()),
		LKDMode:     int(arm.GetLkdMode()),
		PerAgentCap: int(arm.GetPerAgentCap()),
		RawScript:   arm.GetScript(),
		OnDemand:    arm.GetOnDemand(),
	}.WithDefaults()
}

// actionOf is the Action of a wire action: the enum's short name
// (CAPTURE_ACTION_DUMP is ActionDump). ActionStacks is the default, for
// CAPTURE_ACTION_UNSPECIFIED and for a number the enum does not name.
func actionOf(a livedumpv1.CaptureAction) Action {
	if !enumname.Valid(a) {
		return ActionStacks
	}
	return Action(enumname.Name(a, "_"))
}
