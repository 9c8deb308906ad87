package security

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/internal/profile"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestHole12_HostileControllerCannotEscapeStateDir: a controller the agent
// trusts sends identifiers built to leave the agent's state directory (a
// raw-script capture ID, an artifact SHA-256, a dump ID, a directive ID).
// The agent refuses each directive, naming the field, and writes nothing
// outside its state directory.
func TestHole12_HostileControllerCannotEscapeStateDir(t *testing.T) {
	c := harness.StartController(t, nil) // only its CA: the agent trusts it
	evil := startHostileController(t, c)
	a := harness.StartAgent(t, c, harness.AgentOpts{Token: "ldt_any", Hostname: "VICTIM-01", Edit: func(cfg *agent.Config) {
		cfg.Controllers = []string{evil.addr}
		// Raw scripts allowed: the capture ID check, not the
		// allow_raw_scripts refusal (attacker 5's other test), must be
		// what stops a raw-script capture with a path in its ID.
		cfg.AllowRawScripts = true
	}})
	harness.Eventually(t, 10*time.Second, "the agent enrolled with the hostile controller", func() bool {
		return a.ID() == hostileAgentID
	})
	// Everything the test made lives under one temporary root; the agent's
	// state directory is one directory in it.
	root := filepath.Dir(a.StateDir)

	prof := profile.Default().ToProto()
	raw := "BEGIN { exit(0); }\n"
	for _, tc := range []struct {
		name  string
		d     *livedumpv1.Directive
		field string
	}{
		{"raw-script capture id", &livedumpv1.Directive{Id: "arm-1", Kind: &livedumpv1.Directive_Arm{Arm: &livedumpv1.ArmCapture{
			CaptureId: "../../evil-capture", Script: raw, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS}}}, "capture_id"},
		{"raw-script capture id, Windows separators", &livedumpv1.Directive{Id: "arm-2", Kind: &livedumpv1.Directive_Arm{Arm: &livedumpv1.ArmCapture{
			CaptureId: `..\..\evil-capture-win`, Script: raw, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS}}}, "capture_id"},
		{"disarm capture id", &livedumpv1.Directive{Id: "disarm-1", Kind: &livedumpv1.Directive_Disarm{Disarm: &livedumpv1.DisarmCapture{
			CaptureId: "../../evil-disarm"}}}, "capture_id"},
		{"artifact sha256", &livedumpv1.Directive{Id: "prov-1", Kind: &livedumpv1.Directive_Provision{Provision: &livedumpv1.ProvisionDirective{
			Action: livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY, Profile: prof,
			DtraceMsi: &livedumpv1.Artifact{Sha256: "../../evil-artifact", Size: 10, Name: "DTrace.msi"}}}}, "dtrace_msi.sha256"},
		{"artifact sha256 in upper case", &livedumpv1.Directive{Id: "prov-2", Kind: &livedumpv1.Directive_Provision{Provision: &livedumpv1.ProvisionDirective{
			Action: livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY, Profile: prof,
			DtraceMsi: &livedumpv1.Artifact{Sha256: strings.Repeat("AB", 32), Size: 10, Name: "DTrace.msi"}}}}, "dtrace_msi.sha256"},
		{"artifact name", &livedumpv1.Directive{Id: "prov-3", Kind: &livedumpv1.Directive_Provision{Provision: &livedumpv1.ProvisionDirective{
			Action: livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY, Profile: prof,
			DtraceMsi: &livedumpv1.Artifact{Sha256: strings.Repeat("ab", 32), Size: 10, Name: `..\..\evil-name.msi`}}}}, "dtrace_msi.name"},
		{"dump id", &livedumpv1.Directive{Id: "pull-1", Kind: &livedumpv1.Directive_PullDump{PullDump: &livedumpv1.PullDump{
			DumpId: "../../evil-dump"}}}, "dump_id"},
		{"directive id", &livedumpv1.Directive{Id: "../evil-directive\n" + strings.Repeat("x", 300), Kind: &livedumpv1.Directive_Disarm{Disarm: &livedumpv1.DisarmCapture{
			CaptureId: "c-0123456789ab"}}}, "directive id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil.send <- tc.d
			ack := evil.ack(t, tc.d.GetId())
			if !strings.Contains(ack.GetError(), tc.field) {
				t.Errorf("ack %q: want a refusal naming %s", ack.GetError(), tc.field)
			}
		})
	}

	// A valid directive whose artifact download never ends: the agent
	// stops at the announced size and keeps nothing.
	t.Run("artifact larger than announced", func(t *testing.T) {
		d := &livedumpv1.Directive{Id: "prov-4", Kind: &livedumpv1.Directive_Provision{Provision: &livedumpv1.ProvisionDirective{
			Action: livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY, Profile: prof,
			DtraceMsi: &livedumpv1.Artifact{Sha256: strings.Repeat("ab", 32), Size: 1000, Name: "DTrace.msi"}}}}
		evil.send <- d
		if e := evil.ack(t, d.GetId()).GetError(); e != "" {
			t.Fatalf("a valid directive was refused: %s", e)
		}
		var r *livedumpv1.ProvisionReport
		harness.Eventually(t, 10*time.Second, "the provisioning report", func() bool { r = evil.report(d.GetId()); return r != nil })
		if r.GetState() != livedumpv1.ProvisionState_PROVISION_STATE_FAILED || !strings.Contains(r.GetDetail(), "more than the announced 1000 bytes") {
			t.Fatalf("report %v %q, want failed: more than announced", r.GetState(), r.GetDetail())
		}
		matches, _ := filepath.Glob(filepath.Join(a.StateDir, "artifacts", "*"))
		if len(matches) != 0 {
			t.Fatalf("the agent kept %v", matches)
		}
	})

	// Give anything the agent started in the background time to touch the
	// disk, then look for it.
	time.Sleep(time.Second)
	for _, id := range []string{"prov-1", "prov-2", "prov-3"} {
		if r := evil.report(id); r != nil {
			t.Errorf("directive %s was run: provisioning reported %v %q", id, r.GetState(), r.GetDetail())
		}
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // the controller's files come and go
		}
		if strings.Contains(d.Name(), "evil") {
			inside := strings.HasPrefix(path, a.StateDir+string(os.PathSeparator))
			t.Errorf("the agent created %s (inside its state directory: %v)", path, inside)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
