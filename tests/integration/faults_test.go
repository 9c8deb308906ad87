package integration

// The fault suite (issue 9): each TestFault… test breaks one thing while a
// capture runs, then asserts that
//   - no trigger event is lost or stored twice: the distinct event IDs
//     stored equal what the agents fired (their per-agent caps, or the
//     count each agent persisted in captures.json), and no ID appears twice;
//   - no corrupt dump is accepted: every uploaded dump downloads with its
//     SHA-256;
//   - no capture goes over its limits (per-agent cap, --max-dumps);
//   - everything is back within a stated bound, measured and logged in one
//     line starting with "fault:" so CI can grep the figures.
//
// Size: CI size by default (short outages, few agents and kills; the
// suite takes about two minutes on two cores). LIVEDUMP_FAULTS=full runs the
// full size (a 60 s network cut, a 30 s store outage, more agents, kills and
// directives):
//
//	LIVEDUMP_FAULTS=full go test -count=1 -v -timeout 30m -run 'Fault' ./tests/integration/ | grep -E 'fault:|^(--- |ok|FAIL)'
//
// faultSize is the one place that reads LIVEDUMP_FAULTS. The tests are
// skipped under -short; CI runs them in their own section.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/agent/capture"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/netproxy"
	"github.com/livedump/livedump/tests/pgtest"
)

// faultScale holds the sizes that differ between CI and full runs.
type faultScale struct {
	full         bool
	netAgents    int           // agents behind the cut network
	netCut       time.Duration // how long the network is cut
	storeCut     time.Duration // how long PostgreSQL is unreachable
	agentKills   int           // SIGKILLs of one agent during one capture
	slowSessions int           // sessions of the agent that never reads
	slowFlood    int           // directives queued for it
}

// faultSize returns the CI size, or the full size when LIVEDUMP_FAULTS=full.
func faultSize(t *testing.T) faultScale {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the fault suite (CI runs it in its own section)")
	}
	switch v := os.Getenv("LIVEDUMP_FAULTS"); v {
	case "", "ci":
		return faultScale{netAgents: 3, netCut: 5 * time.Second, storeCut: 5 * time.Second, agentKills: 3, slowSessions: 2, slowFlood: 80}
	case "full":
		return faultScale{full: true, netAgents: 8, netCut: 60 * time.Second, storeCut: 30 * time.Second, agentKills: 10, slowSessions: 10, slowFlood: 300}
	default:
		t.Fatalf("LIVEDUMP_FAULTS=%q: want ci or full", v)
	}
	return faultScale{}
}

// faultRate is the simulated dtrace's firing rate in the fault tests.
const faultRate = 20

// capFor is a per-agent cap that keeps a probe firing for about d.
func capFor(d time.Duration) uint32 {
	// About 60% of the simulated firings match the test captures' process
	// and status; keep the probe busy for d, then a little longer.
	return uint32(float64(faultRate) * 0.6 * (d + 3*time.Second).Seconds())
}

// faultLab runs n agents, provisioned and ready, on c; through px when
// given. Agents are labelled role=vdi and named FAULT-01….
func faultLab(t *testing.T, c *testController, n int, px *netproxy.Proxy) ([]*testAgent, livedumpv1.FleetServiceClient) {
	t.Helper()
	tok := c.token(t, n, map[string]string{"role": "vdi"})
	var ctl []string
	if px != nil {
		ctl = []string{px.Addr()}
	}
	agents := make([]*testAgent, n)
	for i := range agents {
		agents[i] = startAgent(t, c, agentOpts{token: tok, hostname: fmt.Sprintf("FAULT-%02d", i+1), controllers: ctl})
	}
	op := fleetClient(t, c, pki.RoleOperator)
	provisionAll(t, op, n)
	return agents, op
}

// provisionAll provisions the role=vdi machines through their reboot.
func provisionAll(t *testing.T, op livedumpv1.FleetServiceClient, n int) {
	t.Helper()
	eventually(t, 30*time.Second, "agents online", func() bool { return countOnline(listAgents(t, op, "role=vdi")) == n })
	if _, err := op.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "role=vdi", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED}); err != nil {
		t.Fatal(err)
	}
	var st map[string]string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("provisioning states: %v", st)
		}
	})
	eventually(t, 60*time.Second, "machines provisioned", func() bool {
		st = provisionState(t, op, "role=vdi")
		return len(st) == n && allIn(st, "PROVISION_STATE_READY") && countOnline(listAgents(t, op, "role=vdi")) == n
	})
}

func stacksCapture(t *testing.T, op livedumpv1.FleetServiceClient, sel string, perAgent uint32) string {
	t.Helper()
	r, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: sel, Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		PerAgentCap: perAgent, Expire: durationpb.New(30 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetCapture().GetId()
}

// armedTargets counts the capture's targets whose probe runs or ran.
func armedTargets(t *testing.T, op livedumpv1.FleetServiceClient, id string) int {
	t.Helper()
	n := 0
	for _, tg := range getCapture(t, op, id).GetTargets() {
		switch tg.GetState() {
		case livedumpv1.TargetState_TARGET_STATE_ARMED, livedumpv1.TargetState_TARGET_STATE_TRIGGERED, livedumpv1.TargetState_TARGET_STATE_DONE:
			n++
		}
	}
	return n
}

// allEvents pages through every stored event of a capture.
func allEvents(t *testing.T, op livedumpv1.FleetServiceClient, id string) []*livedumpv1.TriggerEvent {
	t.Helper()
	var out []*livedumpv1.TriggerEvent
	after := ""
	for {
		r, err := op.ListEvents(context.Background(), &livedumpv1.ListEventsRequest{CaptureId: id, After: after, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.GetEvents()...)
		if len(r.GetEvents()) < 10000 {
			return out
		}
		after = r.GetEvents()[len(r.GetEvents())-1].GetId()
	}
}

// eventsOnce asserts that the capture's stored events are want distinct IDs,
// none stored twice, and returns the count per agent.
func eventsOnce(t *testing.T, op livedumpv1.FleetServiceClient, id string, want int) map[string]int {
	t.Helper()
	seen := map[string]bool{}
	per := map[string]int{}
	for _, e := range allEvents(t, op, id) {
		if seen[e.GetId()] {
			t.Fatalf("capture %s: event %s stored twice", id, e.GetId())
		}
		seen[e.GetId()] = true
		per[e.GetAgentId()]++
	}
	if len(seen) != want {
		t.Fatalf("capture %s: %d distinct events stored, %d fired", id, len(seen), want)
	}
	return per
}

// fired is how many events an agent fired for a capture, as its
// captures.json records (the count that carries the cap across restarts).
func fired(t *testing.T, stateDir, captureID string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, capture.StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]struct {
		Triggered int `json:"triggered"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: %v", capture.StateFile, err)
	}
	return st[captureID].Triggered
}

func spooled(stateDir string) int {
	left, _ := filepath.Glob(filepath.Join(stateDir, "spool", "*-*"))
	return len(left)
}

// dumpsVerified downloads every uploaded dump of a capture and checks its
// SHA-256; it returns how many were uploaded.
func dumpsVerified(t *testing.T, op livedumpv1.FleetServiceClient, id string) int {
	t.Helper()
	n := 0
	for _, d := range listDumps(t, op, id) {
		if d.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			continue
		}
		n++
		sum, got := download(t, op, d.GetId())
		if sum != d.GetSha256() || got.GetSha256() != d.GetSha256() {
			t.Fatalf("dump %s downloads with SHA-256 %s, recorded %s", d.GetId(), sum, d.GetSha256())
		}
	}
	return n
}

// within asserts a measured recovery time against its bound.
func within(t *testing.T, what string, got, bound time.Duration) {
	t.Helper()
	if got > bound {
		t.Fatalf("%s took %s, bound %s", what, got.Round(time.Millisecond), bound)
	}
}

func ms(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

// TestFaultNetworkCut cuts the network between the agents and the controller
// during a capture, then restores it.
func TestFaultNetworkCut(t *testing.T) {
	sz := faultSize(t)
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: writeSimMSI(t)})
	px, err := netproxy.New(c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	agents, op := faultLab(t, c, sz.netAgents, px)
	n := len(agents)
	perAgent := capFor(sz.netCut)
	id := stacksCapture(t, op, "role=vdi", perAgent)
	eventually(t, 20*time.Second, "every probe armed and firing", func() bool {
		return armedTargets(t, op, id) == n && getCapture(t, op, id).GetEvents() >= int64(n)
	})

	before := getCapture(t, op, id).GetEvents()
	cut := time.Now()
	px.Cut()
	eventually(t, 10*time.Second, "the controller sees every agent offline", func() bool { return countOnline(listAgents(t, op, "role=vdi")) == 0 })
	offline := time.Since(cut)
	time.Sleep(time.Until(cut.Add(sz.netCut)))
	during := getCapture(t, op, id).GetEvents()
	spool := 0
	for _, a := range agents {
		spool += spooled(a.stateDir)
	}
	px.Restore()
	restored := time.Now()
	eventually(t, 30*time.Second, "every agent back online", func() bool { return countOnline(listAgents(t, op, "role=vdi")) == n })
	online := time.Since(restored)
	want := n * int(perAgent)
	eventually(t, 60*time.Second, "every event stored and the capture done", func() bool {
		cp := getCapture(t, op, id)
		return cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() == int64(want)
	})
	complete := time.Since(restored)
	per := eventsOnce(t, op, id, want)
	for _, a := range agents {
		if f := fired(t, a.stateDir, id); f != int(perAgent) || per[a.ID()] != int(perAgent) {
			t.Fatalf("agent %s fired %d and has %d stored, cap %d", a.ID(), f, per[a.ID()], perAgent)
		}
		eventually(t, 10*time.Second, "spool drained", func() bool { return spooled(a.stateDir) == 0 })
	}
	if during != before {
		// Nothing can reach the controller while the network is cut.
		t.Logf("note: %d events stored during the cut (in flight at the cut)", during-before)
	}
	if spool == 0 {
		t.Fatalf("no event was spooled during a %s cut: the probes had stopped firing", sz.netCut)
	}
	within(t, "agents back online after the restore", online, 15*time.Second)
	within(t, "every event stored after the restore", complete, 45*time.Second)
	t.Logf("fault: network cut %s, %d agents: all offline at the controller after %s; %d events spooled during the cut; back online %s after the restore (bound 15s); all %d events stored exactly once %s after the restore (bound 45s)",
		sz.netCut, n, ms(offline), spool, ms(online), want, ms(complete))
}

// TestFaultControllerKill kills the controller process with SIGKILL while a
// stacks capture fires, a dump capture uploads and one upload is under way,
// then restarts it on the same data directory and address.
func TestFaultControllerKill(t *testing.T) {
	faultSize(t)
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "24m")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.3")
	const nAgents, maxDumps = 2, 3
	pc := startProcController(t, writeSimMSI(t))
	tok := pc.token(t, nAgents, map[string]string{"role": "vdi"})
	agents := make([]*testAgent, nAgents)
	for i := range agents {
		agents[i] = startAgent(t, nil, agentOpts{token: tok, hostname: fmt.Sprintf("KILLC-%02d", i+1), controllers: []string{pc.cfg.Listen},
			caFile: pc.caFile, bandwidth: 6 << 20})
	}
	op := pc.operator(t, pki.RoleOperator)
	provisionAll(t, op, nAgents)

	perAgent := capFor(8 * time.Second)
	stacks := stacksCapture(t, op, "role=vdi", perAgent)
	dumpID := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "role=vdi", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, PerAgentCap: 2, MaxDumps: maxDumps})
	var mid *livedumpv1.Dump
	eventually(t, 60*time.Second, "an upload under way and stacks events flowing", func() bool {
		for _, d := range listDumps(t, op, dumpID) {
			if d.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADING && d.GetUploaded() >= 4<<20 {
				mid = d
				return getCapture(t, op, stacks).GetEvents() > 0
			}
		}
		return false
	})
	storedBefore := getCapture(t, op, stacks).GetEvents()
	killed := time.Now()
	pc.kill()
	time.Sleep(500 * time.Millisecond) // the agents notice and spool
	pc.start()
	ready := pc.waitReady(t, 30*time.Second) + 500*time.Millisecond
	op = pc.operator(t, pki.RoleOperator)
	eventually(t, 30*time.Second, "agents back online", func() bool { return countOnline(listAgents(t, op, "role=vdi")) == nAgents })
	online := time.Since(killed)
	want := nAgents * int(perAgent)
	eventually(t, 60*time.Second, "every stacks event stored", func() bool {
		cp := getCapture(t, op, stacks)
		return cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() == int64(want)
	})
	events := time.Since(killed)
	var last []*livedumpv1.Dump
	t.Cleanup(func() {
		if t.Failed() {
			for _, d := range last {
				t.Logf("dump %s agent %s: %s %q committed %d of %d", d.GetId(), d.GetAgentId(), d.GetState(), d.GetDetail(), d.GetUploaded(), d.GetSize())
			}
		}
	})
	// Every dump settles: uploaded, kept on its agent (over the limit),
	// aborted, or truncated (its dtrace was stopped at max-dumps before the
	// simulated kernel finished writing it: its header proves it short).
	eventually(t, 90*time.Second, "every dump settled", func() bool {
		last = listDumps(t, op, dumpID)
		for _, d := range last {
			switch d.GetState() {
			case livedumpv1.DumpState_DUMP_STATE_UPLOADED, livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, livedumpv1.DumpState_DUMP_STATE_ABORTED,
				livedumpv1.DumpState_DUMP_STATE_TRUNCATED:
			default:
				return false
			}
		}
		return len(last) > 0
	})
	dumpsDone := time.Since(killed)
	time.Sleep(time.Second) // nothing more may arrive
	eventsOnce(t, op, stacks, want)
	dumpFired := 0
	for _, a := range agents {
		dumpFired += fired(t, a.stateDir, dumpID)
	}
	eventually(t, 20*time.Second, "the dump capture's spooled events stored", func() bool {
		return getCapture(t, op, dumpID).GetEvents() == int64(dumpFired)
	})
	eventsOnce(t, op, dumpID, dumpFired)
	up := dumpsVerified(t, op, dumpID)
	if up > maxDumps {
		t.Fatalf("%d dumps uploaded for --max-dumps %d", up, maxDumps)
	}
	for _, d := range last {
		if d.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED && d.GetSize() != 24<<20 {
			// Known: the simulated kernel writes a dump inside the dtrace
			// process, so a dtrace stopped at max-dumps leaves a short
			// file, which the agent's stable-size rule takes as complete.
			t.Logf("note: dump %s uploaded with %d of the simulated %d bytes (its dtrace was stopped mid-dump)", d.GetId(), d.GetSize(), 24<<20)
		}
	}
	for _, d := range last {
		if d.GetId() == mid.GetId() && d.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			t.Fatalf("the dump cut mid-upload ended %v %q", d.GetState(), d.GetDetail())
		}
	}
	m := scrape(t, pc.cfg.MetricsListen)
	if !strings.Contains(m, "livedump_controller_dump_upload_resumes_total ") || strings.Contains(m, "livedump_controller_dump_upload_resumes_total 0\n") {
		t.Fatalf("the restarted controller resumed no upload:\n%s", grepLines(m, "livedump_controller_dump"))
	}
	within(t, "restarted controller ready", ready, 15*time.Second)
	within(t, "agents online after the kill", online, 20*time.Second)
	within(t, "stacks events stored after the kill", events, 45*time.Second)
	within(t, "dumps settled after the kill", dumpsDone, 75*time.Second)
	t.Logf("fault: controller SIGKILL with %d of %d stacks events stored and dump %s at %d of %d bytes: ready %s after restart, agents online %s after the kill (bound 20s), %d stacks events exactly once at %s (bound 45s), dump capture %d events once, %d of %d dumps written uploaded and verified (max-dumps %d) at %s (bound 75s), the cut upload resumed",
		storedBefore, want, mid.GetId(), mid.GetUploaded(), mid.GetSize(), ms(ready), ms(online), want, ms(events), dumpFired, up, len(last), maxDumps, ms(dumpsDone))
}

// TestFaultAgentKill kills an agent process with SIGKILL several times
// during a capture and restarts it on the same state directory.
func TestFaultAgentKill(t *testing.T) {
	sz := faultSize(t)
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: writeSimMSI(t)})
	stateDir := t.TempDir()
	p := startProcess(t, "agent", envFaultAgent, procAgentConfig{
		Controllers: []string{c.Addr()}, CAFile: c.caFile, Token: c.token(t, 1, map[string]string{"role": "vdi"}),
		StateDir: stateDir, Hostname: "KILLA-01",
	})
	op := fleetClient(t, c, pki.RoleOperator)
	provisionAll(t, op, 1)
	perAgent := capFor(time.Duration(sz.agentKills) * 2 * time.Second)
	id := stacksCapture(t, op, "role=vdi", perAgent)
	var worst time.Duration
	for k := 1; k <= sz.agentKills; k++ {
		at := int64(k) * int64(perAgent) / int64(sz.agentKills+1)
		eventually(t, 30*time.Second, fmt.Sprintf("%d events before kill %d", at, k), func() bool { return getCapture(t, op, id).GetEvents() >= at })
		p.kill()
		eventually(t, 10*time.Second, "the controller sees the agent gone", func() bool { return c.Connected() == 0 })
		killed := time.Now()
		p.start()
		eventually(t, 20*time.Second, "agent back online", func() bool {
			tg := getCapture(t, op, id).GetTargets()[0]
			return countOnline(listAgents(t, op, "role=vdi")) == 1 && tg.GetState() != livedumpv1.TargetState_TARGET_STATE_PENDING
		})
		worst = max(worst, time.Since(killed))
	}
	last := time.Now()
	eventually(t, 60*time.Second, "capture done with every event", func() bool {
		cp := getCapture(t, op, id)
		return cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() >= int64(perAgent)
	})
	done := time.Since(last)
	time.Sleep(time.Second) // a late duplicate or an event over the cap would show now
	eventsOnce(t, op, id, int(perAgent))
	if f := fired(t, stateDir, id); f != int(perAgent) {
		t.Fatalf("the agent counts %d events fired, cap %d", f, perAgent)
	}
	tg := getCapture(t, op, id).GetTargets()[0]
	if tg.GetState() != livedumpv1.TargetState_TARGET_STATE_DONE || tg.GetEvents() != int64(perAgent) {
		t.Fatalf("target %v with %d events, want done with exactly %d", tg.GetState(), tg.GetEvents(), perAgent)
	}
	eventually(t, 10*time.Second, "spool drained", func() bool { return spooled(stateDir) == 0 })
	eventually(t, 10*time.Second, "no dtrace left running the capture", func() bool { return !dtraceRunning(t, id) })
	within(t, "agent back online after a restart", worst, 10*time.Second)
	within(t, "capture done after the last restart", done, 30*time.Second)
	t.Logf("fault: agent SIGKILL %d times during a capture of cap %d: back online and re-armed within %s of each restart (bound 10s); done %s after the last restart (bound 30s) with exactly %d events, none twice",
		sz.agentKills, perAgent, ms(worst), ms(done), perAgent)
}

// TestFaultStoreUnavailable cuts the controller off PostgreSQL during a
// capture, then restores it.
func TestFaultStoreUnavailable(t *testing.T) {
	sz := faultSize(t)
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	px, err := netproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	u.Host = px.Addr()
	c := startController(t, controllerOpts{store: u.String(), profile: fastProfile(), dtraceMSI: writeSimMSI(t), lease: 5 * time.Second})
	const n = 2
	agents, op := faultLab(t, c, n, nil)
	perAgent := capFor(sz.storeCut)
	id := stacksCapture(t, op, "role=vdi", perAgent)
	eventually(t, 20*time.Second, "probes armed and firing", func() bool {
		return armedTargets(t, op, id) == n && getCapture(t, op, id).GetEvents() >= n
	})
	if err := readyz(c.MetricsAddr()); err != nil {
		t.Fatalf("not ready before the cut: %v", err)
	}
	cut := time.Now()
	px.Cut()
	eventually(t, 10*time.Second, "/readyz failing", func() bool { return readyz(c.MetricsAddr()) != nil })
	notReady := time.Since(cut)
	time.Sleep(time.Until(cut.Add(sz.storeCut)))
	spool := 0
	for _, a := range agents {
		spool += spooled(a.stateDir)
	}
	px.Restore()
	restored := time.Now()
	eventually(t, 30*time.Second, "/readyz recovered", func() bool { return readyz(c.MetricsAddr()) == nil })
	ready := time.Since(restored)
	want := n * int(perAgent)
	eventually(t, 60*time.Second, "every event stored and the capture done", func() bool {
		cp := getCapture(t, op, id)
		return cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() == int64(want)
	})
	complete := time.Since(restored)
	eventsOnce(t, op, id, want)
	for _, a := range agents {
		eventually(t, 10*time.Second, "spool drained", func() bool { return spooled(a.stateDir) == 0 })
	}
	m := scrape(t, c.MetricsAddr())
	if !strings.Contains(m, `livedump_controller_agent_disconnects_total{reason="store_unavailable"}`) ||
		strings.Contains(m, `livedump_controller_agent_disconnects_total{reason="store_unavailable"} 0`+"\n") {
		t.Logf("note: no stream ended with store_unavailable (no event batch failed during the cut):\n%s", grepLines(m, "disconnects_total"))
	}
	if spool == 0 {
		t.Fatalf("no event spooled during a %s store outage: the probes had stopped firing", sz.storeCut)
	}
	within(t, "/readyz failing after the cut", notReady, 10*time.Second)
	within(t, "/readyz back after the restore", ready, 15*time.Second)
	within(t, "every event stored after the restore", complete, 45*time.Second)
	t.Logf("fault: PostgreSQL unreachable for %s: /readyz failed %s after the cut and recovered %s after the restore (bound 15s); %d events spooled meanwhile; all %d events stored exactly once %s after the restore (bound 45s); %s",
		sz.storeCut, ms(notReady), ms(ready), spool, want, ms(complete), strings.TrimSpace(grepLines(m, `reason="store_unavailable"`)))
}

// skewedClock is real time offset by skew: a machine whose wall clock is
// wrong.
type skewedClock struct {
	clockwork.Clock
	skew time.Duration
}

func (c skewedClock) Now() time.Time                  { return c.Clock.Now().Add(c.skew) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c skewedClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

// TestFaultClockSkew runs agents whose clocks are 5 minutes ahead and 5
// minutes behind the controller's.
//
// What skew does: certificates are issued with NotBefore backdated, so
// enrollment and mTLS work both ways (the agents check the controller's
// certificate, and their own expiry, on their own clock). A capture's
// expiry is an absolute time from the controller, and each agent enforces
// it on its own clock as the brake for when the controller is gone: an agent
// ahead by S disarms S early — a capture that expires within S of being
// armed never runs there ("expired before it could run") — and an agent
// behind by S would disarm S late on its own, but the controller's expiry
// disarms it on time while it is connected.
func TestFaultClockSkew(t *testing.T) {
	faultSize(t)
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: writeSimMSI(t)})
	tok := c.token(t, 2, map[string]string{"role": "vdi"})
	start := time.Now()
	ahead := startAgent(t, c, agentOpts{token: tok, hostname: "AHEAD-01", clockSkew: 5 * time.Minute, labels: map[string]string{"skew": "ahead"}})
	behind := startAgent(t, c, agentOpts{token: tok, hostname: "BEHIND-01", clockSkew: -5 * time.Minute, labels: map[string]string{"skew": "behind"}})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 20*time.Second, "both skewed agents enrolled and online", func() bool { return countOnline(listAgents(t, op, "role=vdi")) == 2 })
	enrolled := time.Since(start)
	provisionAll(t, op, 2)

	const perAgent = 30
	armStart := time.Now()
	id := stacksCapture(t, op, "role=vdi", perAgent)
	eventually(t, 20*time.Second, "both probes armed", func() bool { return armedTargets(t, op, id) == 2 })
	armed := time.Since(armStart)
	eventually(t, 30*time.Second, "every event stored", func() bool {
		cp := getCapture(t, op, id)
		return cp.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && cp.GetEvents() == 2*perAgent
	})
	per := eventsOnce(t, op, id, 2*perAgent)
	if per[ahead.ID()] != perAgent || per[behind.ID()] != perAgent {
		t.Fatalf("events per agent %v, want %d each", per, perAgent)
	}
	// Event times come from the machine's dtrace; the controller stores
	// them as reported.

	// A capture that expires in 2 minutes: the agent 5 minutes ahead sees
	// it as already expired; the one behind arms it.
	r, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		PerAgentCap: 5, Expire: durationpb.New(2 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	short := r.GetCapture().GetId()
	var aheadDetail string
	eventually(t, 20*time.Second, "the short capture settled on both agents", func() bool {
		var aOK, bOK bool
		for _, tg := range getCapture(t, op, short).GetTargets() {
			switch tg.GetAgentId() {
			case ahead.ID():
				aOK = tg.GetState() == livedumpv1.TargetState_TARGET_STATE_EXPIRED
				aheadDetail = tg.GetDetail()
			case behind.ID():
				bOK = tg.GetState() == livedumpv1.TargetState_TARGET_STATE_DONE && tg.GetEvents() == 5
			}
		}
		return aOK && bOK
	})
	within(t, "skewed agents enrolled and online", enrolled, 15*time.Second)
	within(t, "skewed agents armed", armed, 10*time.Second)
	t.Logf("fault: clock skew +5m and -5m: both enrolled and online in %s, armed in %s, %d events each stored exactly once; a 2-minute capture expired at once on the agent 5m ahead (%q) and ran on the one behind",
		ms(enrolled), ms(armed), perAgent, aheadDetail)
}

// TestFaultSlowAgent floods an agent that never reads its stream with
// directives: the controller must end its session instead of buffering, and
// other agents must not notice.
func TestFaultSlowAgent(t *testing.T) {
	sz := faultSize(t)
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: writeSimMSI(t)})
	agents, op := faultLab(t, c, 2, nil)
	admin := fleetClient(t, c, pki.RoleAdmin)

	armTime := func() time.Duration {
		start := time.Now()
		id := stacksCapture(t, op, "role=vdi", 1000)
		eventually(t, 30*time.Second, "the other agents armed", func() bool { return armedTargets(t, op, id) == len(agents) })
		d := time.Since(start)
		if _, err := op.CancelCapture(context.Background(), &livedumpv1.CancelCaptureRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		return d
	}
	baseline := armTime()

	slowID, cert, err := enrollRaw(t, c, c.token(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		// Twice: the first collection moves pooled buffers (sync.Pool)
		// to the victim cache, the second frees them.
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	heap0 := heap()
	// A static 64 KiB stream window (no BDP growth): what a stuck agent
	// really offers once its buffers are full.
	cc := dialCA(t, c.CA(), c.Addr(), cert, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	script := "BEGIN { exit(0); }\n/*" + strings.Repeat("x", 32<<10) + "*/\n"
	var ended []error
	var peak, first, last uint64
	var during time.Duration
	flooded := 0
	for s := 0; s < sz.slowSessions; s++ {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := livedumpv1.NewAgentServiceClient(cc).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: slowID, Inventory: testInventory("RAW-HOST")}}}); err != nil {
			t.Fatal(err)
		}
		hb := make(chan struct{})
		go func() {
			tk := time.NewTicker(500 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-hb:
					return
				case <-tk.C:
				}
				if st.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Heartbeat{Heartbeat: &livedumpv1.Heartbeat{}}}) != nil {
					return
				}
			}
		}()
		// The first session gets the flood as new captures; every later
		// one gets them all again at once (each new session is re-armed),
		// so it may end before it could be seen attached.
		if s == 0 {
			eventually(t, 10*time.Second, "the slow agent attached", func() bool { return c.Connected() == len(agents)+1 })
			// Raw scripts only for their size: they go to the raw
			// client, which never runs them (real agents would need
			// allow_raw_scripts). Force: the raw client reports no
			// provisioning state.
			for range sz.slowFlood {
				if _, err := admin.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
					Selector: "hostname=RAW-HOST", Script: script, Expire: durationpb.New(30 * time.Minute),
				}, Force: true}); err != nil {
					t.Fatal(err)
				}
				flooded++
			}
			during = armTime()
		}
		eventually(t, 20*time.Second, "the slow agent's session ended by the controller", func() bool {
			return strings.Contains(scrape(t, c.MetricsAddr()), fmt.Sprintf(`livedump_controller_agent_disconnects_total{reason="slow_consumer"} %d`+"\n", s+1))
		})
		h := heap()
		peak = max(peak, h)
		if s == 0 {
			first = h
		}
		last = h
		// Only now read: what arrived, then the status it was ended with.
		var endErr error
		for range 10 * sz.slowFlood {
			if _, endErr = st.Recv(); endErr != nil {
				break
			}
		}
		close(hb)
		cancel()
		ended = append(ended, endErr)
	}
	for i, err := range ended {
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "not reading its stream") {
			t.Fatalf("slow session %d ended with %v, want ResourceExhausted: the agent is not reading its stream", i+1, err)
		}
	}
	m := scrape(t, c.MetricsAddr())
	if !strings.Contains(m, fmt.Sprintf(`livedump_controller_agent_disconnects_total{reason="slow_consumer"} %d`, sz.slowSessions)) {
		t.Fatalf("slow_consumer disconnects:\n%s", grepLines(m, "disconnects_total"))
	}
	growth := int64(peak) - int64(heap0)
	queued := int64(flooded) * int64(len(script))
	// The bound is generous: the heap (of this whole test process: the
	// controller, two agents and the raw client) after GC was seen to
	// grow by about 3 MiB per slow session, without goroutines left
	// behind (see the fault line: first and last session).
	if growth > 96<<20 {
		t.Fatalf("controller heap grew by %d MiB with %d directives (%d MiB) for an agent that never reads", growth>>20, flooded, queued>>20)
	}
	within(t, "other agents armed during the flood", during, max(10*time.Second, 5*baseline))
	t.Logf("fault: slow agent never reading, %d directives of %d KiB (%d MiB) over %d sessions: each session ended ResourceExhausted (slow_consumer); heap grew %d MiB at most (bound 96 MiB; %d MiB after the first session, %d after the last); other agents armed in %s during the flood vs %s before (bound max(10s, 5x))",
		flooded, len(script)>>10, queued>>20, sz.slowSessions, max(growth, 0)>>20, first>>20, last>>20, ms(during), ms(baseline))
}
