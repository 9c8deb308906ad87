package capture

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func addAgentIn(t *testing.T, st store.Store, id, state string, labels map[string]string) {
	t.Helper()
	if err := st.CreateAgent(context.Background(), store.Agent{ID: id, Hostname: "HOST-" + id, Labels: labels, FirstSeen: t0, LastSeen: t0, ProvisionState: state}); err != nil {
		t.Fatal(err)
	}
}

func storedCaptures(t *testing.T, st store.Store) int {
	t.Helper()
	cs, err := st.ListCaptures(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}

// TestCreateCatchesNothing: a capture whose selector matches no machine,
// or only machines that are not provisioned, is refused with a message
// naming the selector, what to check and --force, and nothing is stored;
// forced, it is created.
func TestCreateCatchesNothing(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	addAgentIn(t, f.st, "v1", "ready", map[string]string{"role": "vdi"})
	addAgentIn(t, f.st, "k1", "not-provisioned", map[string]string{"role": "kiosk"})
	addAgentIn(t, f.st, "k2", "", map[string]string{"role": "kiosk"})
	addAgentIn(t, f.st, "k3", "reboot-required", map[string]string{"role": "kiosk"})
	addAgentIn(t, f.st, "k4", "not-provisioned", map[string]string{"role": "kiosk"})
	for _, tc := range []struct {
		sel  string
		want string
	}{
		{"role=vid", "selector \"role=vid\" matches no machine: the capture would catch nothing (did you mean \"role=vdi\"?); check with `livedumpctl agents list -l role=vid`, or give --force to create it anyway"},
		{"role in (server)", "selector \"role in (server)\" matches no machine: the capture would catch nothing; check with `livedumpctl agents list -l 'role in (server)'`, or give --force to create it anyway"},
		{"role=kiosk", "selector \"role=kiosk\" matches 4 machines and none is provisioned (2 not-provisioned, 1 reboot-required, 1 unknown): the capture would catch nothing; " +
			"provision with `livedumpctl provision apply -l role=kiosk`, check with `livedumpctl agents list -l role=kiosk`, or give --force to arm anyway " +
			"(a machine not provisioned when the probe reaches it fails its target)"},
		{"hostname=HOST-k1", "selector \"hostname=HOST-k1\" matches 1 machine and it is not provisioned (1 not-provisioned)"},
	} {
		c, pv, err := f.l.Create(ctx, Request{Actor: "op", Spec: spec(tc.sel)})
		var cn *CatchesNothingError
		if !errors.As(err, &cn) || !strings.Contains(cn.Message, tc.want) || c != nil {
			t.Errorf("%s: %v, want a CatchesNothingError %q", tc.sel, err, tc.want)
			continue
		}
		if pv.GetRefused() != cn.Message {
			t.Errorf("%s: preview refused %q", tc.sel, pv.GetRefused())
		}
		// A dry run says the same without failing.
		_, dry, err := f.l.Create(ctx, Request{Actor: "op", Spec: spec(tc.sel), DryRun: true})
		if err != nil || dry.GetRefused() != cn.Message {
			t.Errorf("%s: dry run %v, refused %q", tc.sel, err, dry.GetRefused())
		}
	}
	if n := storedCaptures(t, f.st); n != 0 {
		t.Fatalf("%d captures stored", n)
	}
	// Forced, and one ready machine among unprovisioned ones is enough.
	for _, r := range []Request{
		{Actor: "op", Spec: spec("role=kiosk"), Force: true},
		{Actor: "op", Spec: spec("role=vid"), Force: true},
		{Actor: "op", Spec: spec("role in (vdi,kiosk)")},
	} {
		c, pv, err := f.l.Create(ctx, r)
		if err != nil || c.GetId() == "" {
			t.Fatalf("%s (force %v): %v", r.Spec.GetSelector(), r.Force, err)
		}
		if pv.GetMatched() != int64(len(c.GetTargets())) {
			t.Errorf("%s: preview matched %d, capture has %d targets", r.Spec.GetSelector(), pv.GetMatched(), len(c.GetTargets()))
		}
	}
	if n := storedCaptures(t, f.st); n != 3 {
		t.Fatalf("%d captures stored, want 3", n)
	}
}

// TestCreateDryRun: a dry run stores nothing, kicks nothing and returns
// what a create would arm: the machines with their provisioning states,
// the resolved statuses, the processes as execname holds them and the
// script, rendered under the ID "dry-run".
func TestCreateDryRun(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	addAgentIn(t, f.st, "b", "ready", map[string]string{"role": "vdi"})
	addAgentIn(t, f.st, "a", "failed", map[string]string{"role": "vdi"})
	s := spec("role=vdi")
	s.Processes = []string{"ms-teams", "SearchIndexer.exe", "MS-Teams.exe"}
	s.Statuses = []string{"STATUS_INVALID_PARAMETER"}
	c, pv, err := f.l.Create(ctx, Request{Actor: "op", Spec: s, DryRun: true})
	if err != nil || c != nil {
		t.Fatalf("dry run: %v, %v", c, err)
	}
	if n := storedCaptures(t, f.st); n != 0 || kicked(f.kick) || len(f.router.changed) != 0 {
		t.Fatalf("dry run stored %d captures, kicked %v, told %v", n, kicked(f.kick), f.router.changed)
	}
	if pv.GetMatched() != 2 || pv.GetReady() != 1 || pv.GetRefused() != "" || pv.GetProvisionStates()["failed"] != 1 {
		t.Fatalf("preview %v", pv)
	}
	var hosts []string
	for _, tg := range pv.GetTargets() {
		hosts = append(hosts, tg.GetHostname()+" "+tg.GetProvisionState().String())
	}
	if strings.Join(hosts, ";") != "HOST-a PROVISION_STATE_FAILED;HOST-b PROVISION_STATE_READY" {
		t.Fatalf("targets %q", hosts)
	}
	var procs []string
	for _, p := range pv.GetProcesses() {
		procs = append(procs, p.GetInput()+"="+p.GetExecname())
	}
	if strings.Join(procs, ";") != "ms-teams=ms-teams;SearchIndexer.exe=SearchIndexer.;MS-Teams.exe=MS-Teams.exe" || !pv.GetProcesses()[1].GetTruncated() {
		t.Fatalf("processes %q", procs)
	}
	if st := pv.GetStatuses(); len(st) != 1 || st[0].GetNtstatus()[0] != 0xC000000D {
		t.Fatalf("statuses %v", st)
	}
	if !strings.Contains(pv.GetRenderedScript(), "livedump capture dry-run") || !strings.Contains(pv.GetRenderedScript(), `"searchindexer."`) {
		t.Fatalf("script:\n%s", pv.GetRenderedScript())
	}
	if len(pv.GetWarnings()) != 2 || !strings.Contains(strings.Join(pv.GetWarnings(), "\n"), "did you mean ms-teams.exe?") {
		t.Fatalf("warnings %q", pv.GetWarnings())
	}
	// The same request, armed: the preview is the capture's.
	c, real, err := f.l.Create(ctx, Request{Actor: "op", Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	if real.GetRenderedScript() != c.GetRenderedScript() || real.GetMatched() != 2 {
		t.Fatalf("preview of the real create differs from the capture")
	}
}

// TestCreateRefusesControlCharacters: a value with a control character is
// refused whole, on every field that reaches a script, a match or a name
// (the CLI checks too, but the controller does not rely on it).
func TestCreateRefusesControlCharacters(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	addAgents(t, f.st, map[string]string{"role": "vdi"}, "a")
	for _, tc := range []struct {
		field string
		edit  func(*livedumpv1.CaptureSpec)
	}{
		{"process", func(s *livedumpv1.CaptureSpec) { s.Processes = []string{"ms-teams.exe\nBEGIN"} }},
		{"syscall", func(s *livedumpv1.CaptureSpec) { s.Syscalls = []string{"NtCreateFile\n"} }},
		{"status", func(s *livedumpv1.CaptureSpec) { s.Statuses = []string{"STATUS_ACCESS_DENIED\r"} }},
		{"selector", func(s *livedumpv1.CaptureSpec) { s.Selector = "role=vdi\n" }},
	} {
		s := spec("role=vdi")
		tc.edit(s)
		_, _, err := f.l.Create(ctx, Request{Actor: "op", Spec: s, Force: true})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Reason, "control character") {
			t.Errorf("%s: %v, want a FieldError on %s", tc.field, err, tc.field)
		}
	}
	if n := storedCaptures(t, f.st); n != 0 {
		t.Fatalf("%d captures stored", n)
	}
}
