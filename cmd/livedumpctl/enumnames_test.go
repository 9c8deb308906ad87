package main

import (
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestEnumNames pins the names the CLI prints for wire enums.
func TestEnumNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{captureStateName(livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED), "cancelled"},
		{captureStateName(livedumpv1.CaptureState_CAPTURE_STATE_UNSPECIFIED), "unspecified"},
		{targetStateName(livedumpv1.TargetState_TARGET_STATE_TRIGGERED), "triggered"},
		{dumpStateName(livedumpv1.DumpState_DUMP_STATE_HASH_ONLY), "hash-only"},
		{dumpStateName(livedumpv1.DumpState_DUMP_STATE_UPLOADED), "uploaded"},
		{provisionStateName(livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED), "reboot-required"},
		{provisionStateName(livedumpv1.ProvisionState_PROVISION_STATE_UNSPECIFIED), ""},
		{agentState(livedumpv1.AgentState_AGENT_STATE_REVOKED), "revoked"},
		{agentState(livedumpv1.AgentState_AGENT_STATE_UNSPECIFIED), "unknown"},
		{agentState(7), "unknown"},
		{checkStatusName(livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS), "PASS"},
		{checkStatusName(livedumpv1.SelfTestStatus_SELF_TEST_STATUS_FAIL), "FAIL"},
		{checkStatusName(livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNKNOWN), "UNKNOWN"},
		{checkStatusName(livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNSPECIFIED), "UNKNOWN"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParseReboot(t *testing.T) {
	for in, want := range map[string]livedumpv1.RebootPolicy{
		"": livedumpv1.RebootPolicy_REBOOT_POLICY_NEVER, "never": livedumpv1.RebootPolicy_REBOOT_POLICY_NEVER,
		"if-needed": livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED,
	} {
		if got, err := parseReboot(in); err != nil || got != want {
			t.Errorf("parseReboot(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"if_needed", "unspecified", "always"} {
		if _, err := parseReboot(in); err == nil || err.Error() != `--reboot: "`+in+`": want never or if-needed` {
			t.Errorf("parseReboot(%q): %v", in, err)
		}
	}
}
