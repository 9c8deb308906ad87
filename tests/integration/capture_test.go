package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// provisionedLab runs a controller and three agents (two VDI, one kiosk)
// and provisions the VDI machines through a simulated reboot.
func provisionedLab(t *testing.T, o controllerOpts) (*testController, []*testAgent, livedumpv1.FleetServiceClient) {
	t.Helper()
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", "40")
	o.profile, o.dtraceMSI = fastProfile(), writeSimMSI(t)
	c := startController(t, o)
	tok := c.token(t, 3, map[string]string{"site": "lab"})
	var agents []*testAgent
	for i, role := range []string{"vdi", "vdi", "kiosk"} {
		agents = append(agents, startAgent(t, c, agentOpts{token: tok, labels: map[string]string{"role": role}, hostname: "LAB-" + strings.ToUpper(role) + "-0" + string(rune('1'+i))}))
	}
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 15*time.Second, "3 agents online", func() bool { return countOnline(listAgents(t, op, "")) == 3 })
	if _, err := op.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "role=vdi", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "VDI machines ready", func() bool {
		st := provisionState(t, op, "role=vdi")
		return len(st) == 2 && allIn(st, "PROVISION_STATE_READY") && countOnline(listAgents(t, op, "role=vdi")) == 2
	})
	return c, agents, op
}

func getCapture(t *testing.T, fc livedumpv1.FleetServiceClient, id string) *livedumpv1.Capture {
	t.Helper()
	r, err := fc.GetCapture(context.Background(), &livedumpv1.GetCaptureRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetCapture()
}

// dtraceRunning reports whether any process runs the capture's script.
func dtraceRunning(t *testing.T, captureID string) bool {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), captureID+".d") {
			return true
		}
	}
	return false
}

func TestCaptureStacksAcrossAGroup(t *testing.T) {
	_, agents, op := provisionedLab(t, controllerOpts{})
	ctx := context.Background()
	resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, Expire: durationpb.New(10 * time.Minute), PerAgentCap: 1000,
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.GetCapture()
	if len(c.GetTargets()) != 2 || !strings.Contains(c.GetRenderedScript(), `(uint32_t)arg0 == 0xC000000D`) {
		t.Fatalf("capture: %d targets, script:\n%s", len(c.GetTargets()), c.GetRenderedScript())
	}
	if st := c.GetStatuses(); len(st) != 1 || st[0].GetNtstatus()[0] != 0xC000000D {
		t.Fatalf("statuses resolved to %v", st)
	}
	eventually(t, 20*time.Second, "events from both VDI machines", func() bool {
		c := getCapture(t, op, c.GetId())
		for _, tg := range c.GetTargets() {
			if tg.GetEvents() < 3 {
				return false
			}
		}
		return true
	})
	evs, err := op.ListEvents(ctx, &livedumpv1.ListEventsRequest{CaptureId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]bool{}
	withFrames := 0
	for _, e := range evs.GetEvents() {
		hosts[e.GetHostname()] = true
		// User stacks may be empty, as on Windows (the simulator's are as
		// poor as real ones); most are not.
		if e.GetProcess() != "ms-teams.exe" || e.GetStatus() != 0xC000000D {
			t.Fatalf("event does not match the capture: %v", e)
		}
		if len(e.GetUserFrames()) > 0 {
			withFrames++
		}
	}
	if withFrames == 0 {
		t.Fatalf("none of %d events has a user frame", len(evs.GetEvents()))
	}
	if !hosts["LAB-VDI-01"] || !hosts["LAB-VDI-02"] || hosts["LAB-KIOSK-03"] {
		t.Fatalf("events from %v, want both VDI machines only", hosts)
	}
	b, err := op.BucketEvents(ctx, &livedumpv1.BucketEventsRequest{CaptureId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, bk := range b.GetBuckets() {
		total += bk.GetCount()
		if bk.GetSignature() == "" || len(bk.GetAgents()) == 0 || strings.Contains(bk.GetSignature(), "no resolved") {
			t.Fatalf("bucket %v", bk)
		}
		if len(bk.GetExample().GetUserFrames()) == 0 && !strings.HasPrefix(bk.GetSignature(), bk.GetExample().GetProbe()+" in ms-teams.exe: no user frames") {
			t.Fatalf("an empty user stack is not signed by probe and process: %q", bk.GetSignature())
		}
	}
	if len(b.GetBuckets()) == 0 || total < int64(len(evs.GetEvents())) {
		t.Fatalf("%d buckets holding %d events, for %d events", len(b.GetBuckets()), total, len(evs.GetEvents()))
	}

	if !dtraceRunning(t, c.GetId()) {
		t.Fatal("no dtrace process runs the capture's script")
	}
	if _, err := op.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "dtrace gone after cancel", func() bool { return !dtraceRunning(t, c.GetId()) })
	eventually(t, 10*time.Second, "targets cancelled", func() bool {
		for _, tg := range getCapture(t, op, c.GetId()).GetTargets() {
			if tg.GetState() != livedumpv1.TargetState_TARGET_STATE_CANCELLED {
				return false
			}
		}
		return true
	})
	_ = agents
}

func TestCapturePerAgentCapAndUnprovisionedHost(t *testing.T) {
	_, _, op := provisionedLab(t, controllerOpts{})
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "site=lab", Processes: []string{"ms-teams.exe"}, Statuses: []string{"E_INVALIDARG"}, PerAgentCap: 2,
		Expire: durationpb.New(10 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	eventually(t, 20*time.Second, "every target finished and its events stored", func() bool {
		c := getCapture(t, op, id)
		return c.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && c.GetEvents() == 4
	})
	for _, tg := range getCapture(t, op, id).GetTargets() {
		switch tg.GetHostname() {
		case "LAB-KIOSK-03": // not provisioned: dtrace cannot load its driver
			if tg.GetState() != livedumpv1.TargetState_TARGET_STATE_FAILED || !strings.Contains(tg.GetDetail(), "provisioning") {
				t.Fatalf("kiosk target: %v %q", tg.GetState(), tg.GetDetail())
			}
		default:
			if tg.GetState() != livedumpv1.TargetState_TARGET_STATE_DONE || tg.GetEvents() != 2 {
				t.Fatalf("%s: %v with %d events, want done with exactly 2", tg.GetHostname(), tg.GetState(), tg.GetEvents())
			}
		}
	}
}

func TestCaptureRejectsBadInputAndStoresNothing(t *testing.T) {
	c := startController(t, controllerOpts{})
	op := fleetClient(t, c, pki.RoleOperator)
	admin := fleetClient(t, c, pki.RoleAdmin)
	ctx := context.Background()
	base := func() *livedumpv1.CaptureSpec {
		return &livedumpv1.CaptureSpec{Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*livedumpv1.CaptureSpec)
		field string
	}{
		{"quote in process", func(s *livedumpv1.CaptureSpec) { s.Processes = []string{`ms-teams".exe`} }, "process"},
		{"slash in process", func(s *livedumpv1.CaptureSpec) { s.Processes = []string{`a/b.exe`} }, "process"},
		{"comment close", func(s *livedumpv1.CaptureSpec) { s.Processes = []string{`x*/y`} }, "process"},
		{"newline", func(s *livedumpv1.CaptureSpec) { s.Processes = []string{"a\nb"} }, "process"},
		{"too long", func(s *livedumpv1.CaptureSpec) { s.Processes = []string{strings.Repeat("a", 256)} }, "process"},
		{"unknown status", func(s *livedumpv1.CaptureSpec) { s.Statuses = []string{"STATUS_MADE_UP"} }, "status"},
		{"win32 hex", func(s *livedumpv1.CaptureSpec) { s.Statuses = []string{"0x57"} }, "status"},
		{"bad syscall", func(s *livedumpv1.CaptureSpec) { s.Syscalls = []string{"ZwCreateFile"} }, "syscall"},
		{"syscall injection", func(s *livedumpv1.CaptureSpec) { s.Syscalls = []string{"NtCreateFile:return{"} }, "syscall"},
		{"ustack", func(s *livedumpv1.CaptureSpec) { s.Ustack = 101 }, "ustack"},
		{"raw script from an operator", func(s *livedumpv1.CaptureSpec) { s.Script = "BEGIN { exit(0); }"; s.Processes = nil; s.Statuses = nil }, "script"},
		{"expire", func(s *livedumpv1.CaptureSpec) { s.Expire = durationpb.New(8 * 24 * time.Hour) }, "expire"},
		{"selector", func(s *livedumpv1.CaptureSpec) { s.Selector = "role in (vdi" }, "selector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.edit(s)
			_, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: s})
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	list, err := op.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetCaptures()); n != 0 {
		t.Fatalf("%d captures stored after rejected requests", n)
	}
	// An admin may send a raw script; it is audited like every create.
	// (No agent runs here, hence force; which agents run raw scripts is
	// their own setting: TestCaptureRawScriptNeedsTheAgentsSetting.)
	if _, err := admin.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{Selector: "role=vdi", Script: "BEGIN { exit(0); }"}, Force: true}); err != nil {
		t.Fatalf("admin raw script: %v", err)
	}
	audit, err := admin.ListAudit(ctx, &livedumpv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, e := range audit.GetEntries() {
		if e.GetAction() == "FleetService/CreateCapture" {
			creates++
		}
	}
	if creates != 14 {
		t.Fatalf("%d CreateCapture audit entries, want 14 (13 refused, 1 created)", creates)
	}
}

// TestCaptureRawScriptNeedsTheAgentsSetting: an admin's raw D script runs
// only on agents whose local allow_raw_scripts is on; the others refuse it
// and the controller records why on their target.
func TestCaptureRawScriptNeedsTheAgentsSetting(t *testing.T) {
	c := startController(t, controllerOpts{})
	tok := c.token(t, 2, nil)
	startAgent(t, c, agentOpts{token: tok, hostname: "RAW-OFF-01", labels: map[string]string{"role": "raw"}})
	startAgent(t, c, agentOpts{token: tok, hostname: "RAW-ON-02", labels: map[string]string{"role": "raw"}, allowRawScripts: true})
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 10*time.Second, "agents online", func() bool { return countOnline(listAgents(t, admin, "role=raw")) == 2 })
	// Force: these machines are not provisioned, on purpose (the one that
	// takes the script on fails at dtrace).
	resp, err := admin.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=raw", Script: "BEGIN { printf(\"raw\\n\"); }\n", Expire: durationpb.New(10 * time.Minute),
	}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	const refused = "agent refused the capture: capture.script: raw D scripts are not allowed on this machine (agent setting allow_raw_scripts is off)"
	eventually(t, 15*time.Second, "both targets settled", func() bool {
		for _, tg := range getCapture(t, admin, id).GetTargets() {
			if tg.GetState() != livedumpv1.TargetState_TARGET_STATE_FAILED {
				return false
			}
		}
		return true
	})
	for _, tg := range getCapture(t, admin, id).GetTargets() {
		switch tg.GetHostname() {
		case "RAW-OFF-01":
			if tg.GetDetail() != refused {
				t.Errorf("agent without allow_raw_scripts: detail %q, want %q", tg.GetDetail(), refused)
			}
		case "RAW-ON-02":
			// Taken on and run: it fails only because this machine has
			// no DTrace.
			if !strings.HasPrefix(tg.GetDetail(), "provisioning:") {
				t.Errorf("agent with allow_raw_scripts: detail %q, want a provisioning failure (it ran dtrace)", tg.GetDetail())
			}
		}
	}
}

func TestCaptureQueuedForOfflineAgentAndExpiry(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Now())
	c := startController(t, controllerOpts{clock: clock})
	tok := c.token(t, 2, nil)
	a1 := startAgent(t, c, agentOpts{token: tok, hostname: "LATE-01", labels: map[string]string{"role": "late"}})
	a2 := startAgent(t, c, agentOpts{token: tok, hostname: "GONE-02", labels: map[string]string{"role": "gone"}})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agents online", func() bool { return countOnline(listAgents(t, op, "")) == 2 })
	dir1, dir2 := a1.stateDir, a2.stateDir
	a1.stop()
	a2.stop()
	eventually(t, 10*time.Second, "agents offline", func() bool { return countOnline(listAgents(t, op, "")) == 0 })
	ctx := context.Background()
	spec := func(sel string, exp time.Duration) *livedumpv1.CaptureSpec {
		return &livedumpv1.CaptureSpec{Selector: sel, Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"}, Expire: durationpb.New(exp)}
	}
	// Force: the machines are not provisioned; what matters here is the
	// queue and the expiry.
	queued, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec("role=late", time.Hour), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	expiring, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec("role=gone", time.Minute), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	clock.Advance(2 * time.Minute)
	eventually(t, 10*time.Second, "short capture expired", func() bool {
		return getCapture(t, op, expiring.GetCapture().GetId()).GetState() == livedumpv1.CaptureState_CAPTURE_STATE_EXPIRED
	})
	if tg := getCapture(t, op, queued.GetCapture().GetId()).GetTargets()[0]; tg.GetState() != livedumpv1.TargetState_TARGET_STATE_PENDING {
		t.Fatalf("offline target is %v, want pending", tg.GetState())
	}
	startAgent(t, c, agentOpts{stateDir: dir1})
	startAgent(t, c, agentOpts{stateDir: dir2})
	eventually(t, 10*time.Second, "queued capture reached the agent that came back", func() bool {
		st := getCapture(t, op, queued.GetCapture().GetId()).GetTargets()[0].GetState()
		// The machine is not provisioned, so the probe fails: what matters
		// is that the agent received and tried it.
		return st != livedumpv1.TargetState_TARGET_STATE_PENDING && st != livedumpv1.TargetState_TARGET_STATE_DELIVERED
	})
	time.Sleep(500 * time.Millisecond)
	if tg := getCapture(t, op, expiring.GetCapture().GetId()).GetTargets()[0]; tg.GetState() != livedumpv1.TargetState_TARGET_STATE_EXPIRED {
		t.Fatalf("expired capture's target is %v: it was armed after expiry", tg.GetState())
	}
}

func TestCaptureLosesNoEventWhileTheControllerIsDown(t *testing.T) {
	dataDir := t.TempDir()
	c, agents, op := provisionedLab(t, controllerOpts{dataDir: dataDir})
	addr, caFile := c.Addr(), c.caFile
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		PerAgentCap: 60, Expire: durationpb.New(10 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	eventually(t, 10*time.Second, "both probes armed", func() bool {
		n := 0
		for _, tg := range getCapture(t, op, id).GetTargets() {
			if tg.GetState() == livedumpv1.TargetState_TARGET_STATE_ARMED || tg.GetState() == livedumpv1.TargetState_TARGET_STATE_TRIGGERED {
				n++
			}
		}
		return n == 2
	})
	stored := getCapture(t, op, id).GetEvents()
	c.stop() // the probes keep firing; events go to the agents' spools
	outage := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv("LIVEDUMP_TEST_OUTAGE")); err == nil {
		outage = d // CI sets 30s, the acceptance figure
	}
	time.Sleep(outage)
	spooled := 0
	for _, a := range agents[:2] {
		left, _ := filepath.Glob(filepath.Join(a.stateDir, "spool", "*-*"))
		spooled += len(left)
	}
	t.Logf("controller down for %s: %d events stored before, %d spooled on the agents meanwhile", outage, stored, spooled)
	c2 := startController(t, controllerOpts{dataDir: dataDir, listen: addr, profile: fastProfile()})
	c2.caFile = caFile
	op2 := fleetClient(t, c2, pki.RoleOperator)
	// What is late, if anything is: the capture's state, its events and
	// each target's, and what the agents still hold in their spools.
	for deadline := time.Now().Add(60 * time.Second); ; {
		cp := getCapture(t, op2, id)
		if cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() == 120 {
			break
		}
		if time.Now().After(deadline) {
			var targets, spools []string
			for _, tg := range cp.GetTargets() {
				targets = append(targets, fmt.Sprintf("%s %s (%d events, %q)", tg.GetHostname(), tg.GetState(), tg.GetEvents(), tg.GetDetail()))
			}
			for _, a := range agents[:2] {
				left, _ := filepath.Glob(filepath.Join(a.stateDir, "spool", "*-*"))
				spools = append(spools, fmt.Sprint(len(left)))
			}
			t.Fatalf("60s after the restart: capture %s (%q), %d of 120 events stored; targets: %s; spooled events left: %s",
				cp.GetState(), cp.GetDetail(), cp.GetEvents(), strings.Join(targets, "; "), strings.Join(spools, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
	evs, err := op2.ListEvents(context.Background(), &livedumpv1.ListEventsRequest{CaptureId: id, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs.GetEvents() {
		if seen[e.GetId()] {
			t.Fatalf("event %s stored twice", e.GetId())
		}
		seen[e.GetId()] = true
	}
	if len(seen) != 120 {
		t.Fatalf("%d distinct events stored, want 120 (2 agents x cap 60)", len(seen))
	}
	t.Logf("after the restart: %d events stored, %d distinct, 120 fired", len(evs.GetEvents()), len(seen))
	for _, a := range agents[:2] {
		eventually(t, 10*time.Second, "spool drained", func() bool {
			left, _ := filepath.Glob(filepath.Join(a.stateDir, "spool", "*-*"))
			return len(left) == 0
		})
	}
}

func TestCaptureRolloutRate(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Now())
	c := startController(t, controllerOpts{clock: clock})
	tok := c.token(t, 3, map[string]string{"role": "vdi"})
	for i := range 3 {
		startAgent(t, c, agentOpts{token: tok, hostname: "ROLL-0" + string(rune('1'+i))})
	}
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agents online", func() bool { return countOnline(listAgents(t, op, "")) == 3 })
	// Force: the machines are not provisioned; the rollout is what is
	// tested.
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"}, RolloutRate: 1,
	}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	armed := func() int {
		n := 0
		for _, tg := range getCapture(t, op, id).GetTargets() {
			if tg.GetState() != livedumpv1.TargetState_TARGET_STATE_PENDING {
				n++
			}
		}
		return n
	}
	eventually(t, 5*time.Second, "first agent armed at once", func() bool { return armed() == 1 })
	time.Sleep(300 * time.Millisecond)
	if n := armed(); n != 1 {
		t.Fatalf("%d agents reached within the first minute at 1 per minute", n)
	}
	clock.Advance(61 * time.Second)
	eventually(t, 5*time.Second, "second agent after a minute", func() bool { return armed() == 2 })
	clock.Advance(61 * time.Second)
	eventually(t, 5*time.Second, "third agent after two minutes", func() bool { return armed() == 3 })
}

func TestCaptureMaxDumpsDisarmsEverywhere(t *testing.T) {
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.2")
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "65536")
	_, _, op := provisionedLab(t, controllerOpts{})
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, PerAgentCap: 50, MaxDumps: 3, Expire: durationpb.New(10 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.GetCapture()
	if !strings.Contains(c.GetRenderedScript(), "#pragma D option destructive") || !strings.Contains(c.GetRenderedScript(), "lkd(0);") {
		t.Fatalf("dump capture's script lacks destructive/lkd:\n%s", c.GetRenderedScript())
	}
	eventually(t, 20*time.Second, "capture ended at max-dumps", func() bool {
		return getCapture(t, op, c.GetId()).GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE
	})
	c = getCapture(t, op, c.GetId())
	if !strings.Contains(c.GetDetail(), "max-dumps 3") {
		t.Fatalf("detail %q", c.GetDetail())
	}
	eventually(t, 10*time.Second, "no dtrace left", func() bool { return !dtraceRunning(t, c.GetId()) })
	// Two probes run at once, so a few events past the limit may be in
	// flight when it is reached; each agent stops far below its own cap.
	if ev := getCapture(t, op, c.GetId()).GetEvents(); ev < 3 || ev > 20 {
		t.Fatalf("%d events for max-dumps 3", ev)
	}
}

func TestCaptureWatch(t *testing.T) {
	_, _, op := provisionedLab(t, controllerOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}, PerAgentCap: 1000,
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	st, err := op.WatchCapture(ctx, &livedumpv1.WatchCaptureRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	events, targets := 0, 0
	for events < 10 {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetEvent() != nil {
			events++
		}
		if m.GetTarget() != nil {
			targets++
		}
	}
	if _, err := op.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("watch ended without the final capture: %v", err)
		}
		if e := m.GetEnded(); e != nil {
			if e.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED {
				t.Fatalf("ended in %v", e.GetState())
			}
			break
		}
	}
	if targets < 2 {
		t.Fatalf("watch showed %d target updates, want the two targets at least", targets)
	}
}

func TestCaptureSurvivesAnAgentRestart(t *testing.T) {
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", "20")
	c, agents, op := provisionedLab(t, controllerOpts{})
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", "20")
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "hostname=LAB-VDI-01", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		PerAgentCap: 60, Expire: durationpb.New(10 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	eventually(t, 10*time.Second, "some events", func() bool { return getCapture(t, op, id).GetEvents() >= 5 })
	a := agents[0]
	a.stop() // the agent service stops mid-capture; dtrace goes with it
	if dtraceRunning(t, id) {
		t.Fatal("dtrace outlived its agent")
	}
	before := getCapture(t, op, id).GetEvents()
	startAgent(t, c, agentOpts{stateDir: a.stateDir})
	deadline := time.Now().Add(20 * time.Second)
	for {
		cp := getCapture(t, op, id)
		if cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() == 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("capture %v with %d events, targets %v", cp.GetState(), cp.GetEvents(), cp.GetTargets())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("agent restarted after %d events; the capture finished with exactly 60", before)
}

func writeSimMSI(t *testing.T) string {
	t.Helper()
	msi := filepath.Join(t.TempDir(), "DTrace.msi")
	if err := os.WriteFile(msi, simMSI(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return msi
}
