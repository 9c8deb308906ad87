package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// This file covers what several controller replicas sharing one store rely
// on: leases, presence, directive routing, and the limits that must hold
// when replicas race (rollout, capture end, dump admission). The concurrent
// tests start every worker at once on one Store; a backend with a
// connection pool runs them on separate connections, as two replicas would.

// race runs fn(i) for i in [0, n) in goroutines released together.
func race(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

func testEventsDuplicateInBatch(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "a1", State: "armed"}, {AgentID: "a2", State: "armed"}}))
	ev := func(id, agent string) store.Event {
		return store.Event{ID: id, CaptureID: "c1", AgentID: agent, Time: t0, Process: "p.exe", Probe: "x", User: "[]", Kernel: "[]"}
	}
	// A batch that repeats an event (a retried send spliced into the next
	// one) stores and counts it once; events keep the batch's order.
	n, err := s.InsertEvents(ctx, []store.Event{ev("e1", "a1"), ev("e2", "a2"), ev("e1", "a1"), ev("e3", "a1")})
	must(t, "InsertEvents", err)
	if n != 3 {
		t.Fatalf("inserted %d, want 3", n)
	}
	n, err = s.InsertEvents(ctx, nil)
	must(t, "InsertEvents empty", err)
	if n != 0 {
		t.Fatalf("empty batch inserted %d", n)
	}
	got, err := s.ListEvents(ctx, "c1", 0, 0)
	must(t, "ListEvents", err)
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if fmt.Sprint(ids) != "[e1 e2 e3]" {
		t.Fatalf("events = %v, want [e1 e2 e3]", ids)
	}
	ts, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	if ts[0].Events != 2 || ts[1].Events != 1 {
		t.Fatalf("target counts = %d, %d; want 2, 1", ts[0].Events, ts[1].Events)
	}
}

func testAdmitDump(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	put := func(id, capture, sig string) {
		t.Helper()
		must(t, "PutDump "+id, s.PutDump(ctx, store.Dump{ID: id, AgentID: "a-" + id, CaptureID: capture, State: "written", Written: t0, Signature: sig}))
	}
	admit := func(id string, maxDumps, perSig int, want bool) {
		t.Helper()
		got, err := s.AdmitDump(ctx, id, maxDumps, perSig)
		must(t, "AdmitDump "+id, err)
		if got != want {
			t.Errorf("AdmitDump(%s, %d, %d) = %v, want %v", id, maxDumps, perSig, got, want)
		}
	}

	// Per-signature limit only.
	for _, d := range [][3]string{{"a1", "c1", "A"}, {"a2", "c1", "A"}, {"a3", "c1", "A"}, {"b1", "c1", "B"}, {"n1", "c1", ""}, {"n2", "c1", ""}, {"x1", "c9", "A"}} {
		put(d[0], d[1], d[2])
	}
	d, err := s.GetDump(ctx, "a1")
	must(t, "GetDump", err)
	if d.Admitted {
		t.Fatal("a new dump is already admitted")
	}
	admit("a1", 0, 2, true)
	admit("a2", 0, 2, true)
	admit("a3", 0, 2, false)
	admit("a1", 0, 2, true) // already admitted: stays admitted
	admit("a1", 1, 1, true) // even under limits it would no longer fit
	admit("b1", 0, 2, true)
	admit("n1", 0, 1, true) // no signature: the per-signature limit does not apply
	admit("n2", 0, 1, true)
	admit("x1", 0, 2, true) // another capture's dumps do not count
	admit("a3", 0, 0, true) // no limits at all

	// Capture-wide limit, and the operator's pull overriding both.
	for _, id := range []string{"m1", "m2", "m3", "m4"} {
		put(id, "c2", "S"+id)
	}
	admit("m1", 2, 0, true)
	admit("m2", 2, 0, true)
	admit("m3", 2, 0, false)
	must(t, "MarkDumpPulled", s.MarkDumpPulled(ctx, "m3"))
	admit("m3", 2, 0, true)
	admit("m4", 3, 0, false) // the pulled dump took a slot
	put("m5", "c2", "Sm1")
	admit("m5", 0, 1, false)

	// The mark is visible and survives the agent's next report.
	put("m1", "c2", "Sm1")
	d, err = s.GetDump(ctx, "m1")
	must(t, "GetDump m1", err)
	if !d.Admitted {
		t.Error("admission lost by a later PutDump")
	}
	list, err := s.ListDumps(ctx, "c2")
	must(t, "ListDumps", err)
	admitted := map[string]bool{}
	for _, d := range list {
		admitted[d.ID] = d.Admitted
	}
	if want := map[string]bool{"m1": true, "m2": true, "m3": true, "m4": false, "m5": false}; !maps.Equal(admitted, want) {
		t.Errorf("ListDumps admitted = %v, want %v", admitted, want)
	}

	_, err = s.AdmitDump(ctx, "zz", 1, 1)
	wantErr(t, "AdmitDump missing", err, store.ErrNotFound)
}

func testAdmitDumpConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, nil))
	const workers = 24
	for i := range workers {
		// Three signatures, eight dumps each.
		must(t, "PutDump", s.PutDump(ctx, store.Dump{ID: fmt.Sprintf("d%02d", i), AgentID: "a", CaptureID: "c1", State: "written",
			Written: t0, Signature: fmt.Sprintf("sig%d", i%3)}))
	}
	for _, tc := range []struct {
		name             string
		maxDumps, perSig int
		want             int
	}{
		{"per signature", 0, 2, 6},
		{"capture-wide", 7, 0, 7},
		{"both", 8, 3, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			bySig := map[string]int{}
			total := 0
			// Rounds build on each other: dumps admitted earlier answer
			// true again and count towards the next round's limits, which
			// is why each round's limits only grow.
			race(workers, func(i int) {
				ok, err := s.AdmitDump(ctx, fmt.Sprintf("d%02d", i), tc.maxDumps, tc.perSig)
				if err != nil {
					t.Errorf("AdmitDump: %v", err)
					return
				}
				if ok {
					mu.Lock()
					bySig[fmt.Sprintf("sig%d", i%3)]++
					total++
					mu.Unlock()
				}
			})
			if total != tc.want {
				t.Errorf("%d admitted, want %d", total, tc.want)
			}
			for sig, n := range bySig {
				if tc.perSig > 0 && n > tc.perSig {
					t.Errorf("%s: %d admitted, limit %d", sig, n, tc.perSig)
				}
			}
		})
	}
}

// testManyTargets stores a capture with more targets than one multi-row
// INSERT carries and reads every one back as written.
func testManyTargets(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const n = 1234
	var targets []store.CaptureTarget
	for i := range n {
		targets = append(targets, store.CaptureTarget{AgentID: fmt.Sprintf("a%05d", i), State: "pending", Detail: fmt.Sprint("d", i), Updated: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, targets))
	got, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	if len(got) != n {
		t.Fatalf("ListTargets: %d targets, want %d", len(got), n)
	}
	for i, g := range got {
		w := targets[i]
		if g.CaptureID != "c1" || g.AgentID != w.AgentID || g.State != w.State || g.Detail != w.Detail || g.Events != 0 || !g.Updated.Equal(w.Updated) {
			t.Fatalf("target %d = %+v, want %+v", i, g, w)
		}
	}
	// Claims across more targets than one statement names, in the order
	// asked, each once; duplicates and targets already claimed are not
	// claimed again; a limit with room for all of them claims all.
	var ask []string
	for i := n - 1; i >= 0; i-- {
		ask = append(ask, targets[i].AgentID)
	}
	ask = append(ask, ask[0])
	got1, err := s.ClaimTargets(ctx, "c1", ask[:700], n+5, t0.Add(time.Minute))
	must(t, "ClaimTargets limited", err)
	if !slices.Equal(got1, ask[:700]) {
		t.Fatalf("ClaimTargets limited: %d claimed, want the %d asked in order", len(got1), 700)
	}
	got2, err := s.ClaimTargets(ctx, "c1", ask, -1, t0.Add(time.Minute))
	must(t, "ClaimTargets unlimited", err)
	if !slices.Equal(got2, ask[700:n]) {
		t.Fatalf("ClaimTargets unlimited: %d claimed, want the %d left in the order asked", len(got2), n-700)
	}
}

func testClaimTarget(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var targets []store.CaptureTarget
	for _, a := range []string{"a1", "a2", "a3", "a4"} {
		targets = append(targets, store.CaptureTarget{AgentID: a, State: "pending", Updated: t0})
	}
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, targets))
	claim := func(agent string, allowed int, want bool) {
		t.Helper()
		got, err := s.ClaimTarget(ctx, "c1", agent, allowed, t0.Add(time.Minute))
		must(t, "ClaimTarget "+agent, err)
		if got != want {
			t.Errorf("ClaimTarget(%s, %d) = %v, want %v", agent, allowed, got, want)
		}
	}
	claim("a1", 2, true)
	claim("a1", 2, false) // already delivered: this call did not move it
	claim("a2", 2, true)
	claim("a3", 2, false) // two have left pending
	claim("a3", 0, false)
	// A target moving on (armed, failed) still counts as having left pending.
	must(t, "SetTargetState", s.SetTargetState(ctx, "c1", "a1", "armed", "", t0.Add(2*time.Minute)))
	claim("a3", 2, false)
	claim("a3", 3, true)
	claim("a4", -1, true) // no limit

	ts, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	states := map[string]string{}
	for _, tg := range ts {
		states[tg.AgentID] = tg.State
	}
	if want := map[string]string{"a1": "armed", "a2": "delivered", "a3": "delivered", "a4": "delivered"}; !maps.Equal(states, want) {
		t.Errorf("states = %v, want %v", states, want)
	}
	checkTime(t, "Updated", ts[1].Updated, t0.Add(time.Minute))

	_, err = s.ClaimTarget(ctx, "c1", "zz", -1, t0)
	wantErr(t, "ClaimTarget missing agent", err, store.ErrNotFound)
	_, err = s.ClaimTarget(ctx, "nope", "a1", -1, t0)
	wantErr(t, "ClaimTarget missing capture", err, store.ErrNotFound)
}

func testClaimTargetConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const agents, allowed = 24, 5
	var targets []store.CaptureTarget
	for i := range agents {
		targets = append(targets, store.CaptureTarget{AgentID: fmt.Sprintf("a%02d", i), State: "pending"})
	}
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, targets))
	must(t, "CreateCapture c2", s.CreateCapture(ctx, store.Capture{ID: "c2", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "one", State: "pending"}}))

	var mu sync.Mutex
	claimed, same := 0, 0
	race(2*agents, func(i int) {
		if i%2 == 1 {
			// Half the workers fight over one target: one of them moves it.
			ok, err := s.ClaimTarget(ctx, "c2", "one", -1, t0)
			if err != nil {
				t.Errorf("ClaimTarget: %v", err)
			}
			if ok {
				mu.Lock()
				same++
				mu.Unlock()
			}
			return
		}
		ok, err := s.ClaimTarget(ctx, "c1", fmt.Sprintf("a%02d", i/2), allowed, t0)
		if err != nil {
			t.Errorf("ClaimTarget: %v", err)
		}
		if ok {
			mu.Lock()
			claimed++
			mu.Unlock()
		}
	})
	if claimed != allowed {
		t.Errorf("%d targets claimed, rollout limit %d", claimed, allowed)
	}
	if same != 1 {
		t.Errorf("one target claimed %d times, want once", same)
	}
	ts, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	delivered := 0
	for _, tg := range ts {
		if tg.State == "delivered" {
			delivered++
		}
	}
	if delivered != allowed {
		t.Errorf("%d targets delivered, want %d", delivered, allowed)
	}
}

func testFinishCapture(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, nil))
	ok, err := s.FinishCapture(ctx, "c1", "expired", "ran for 1h")
	must(t, "FinishCapture", err)
	if !ok {
		t.Fatal("FinishCapture on an active capture reported no change")
	}
	ok, err = s.FinishCapture(ctx, "c1", "cancelled", "by bob")
	must(t, "FinishCapture again", err)
	if ok {
		t.Error("FinishCapture on a finished capture reported a change")
	}
	c, err := s.GetCapture(ctx, "c1")
	must(t, "GetCapture", err)
	if c.State != "expired" || c.Detail != "ran for 1h" {
		t.Errorf("capture = %q %q, want the first finish to stand", c.State, c.Detail)
	}
	_, err = s.FinishCapture(ctx, "nope", "done", "")
	wantErr(t, "FinishCapture missing", err, store.ErrNotFound)
}

func testFinishCaptureConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, nil))
	var mu sync.Mutex
	var winners []string
	race(16, func(i int) {
		detail := fmt.Sprintf("replica-%d", i)
		ok, err := s.FinishCapture(ctx, "c1", "done", detail)
		if err != nil {
			t.Errorf("FinishCapture: %v", err)
		}
		if ok {
			mu.Lock()
			winners = append(winners, detail)
			mu.Unlock()
		}
	})
	if len(winners) != 1 {
		t.Fatalf("winners = %v, want exactly one", winners)
	}
	c, err := s.GetCapture(ctx, "c1")
	must(t, "GetCapture", err)
	if c.State != "done" || c.Detail != winners[0] {
		t.Errorf("capture = %q %q, want done by %s", c.State, c.Detail, winners[0])
	}
}

func testReplicas(t *testing.T, s store.Store) {
	ctx := context.Background()
	got, err := s.ListReplicas(ctx)
	must(t, "ListReplicas empty", err)
	if got == nil || len(got) != 0 {
		t.Fatalf("ListReplicas on empty store = %#v, want empty non-nil", got)
	}
	must(t, "HeartbeatReplica r2", s.HeartbeatReplica(ctx, store.Replica{ID: "r2", Addr: "10.0.0.2:7443", Started: base, Heartbeat: base.Add(time.Second)}))
	must(t, "HeartbeatReplica r1", s.HeartbeatReplica(ctx, store.Replica{ID: "r1", Addr: "10.0.0.1:7443", Started: base, Heartbeat: base.Add(time.Second)}))
	// The next beat renews the lease in place; a restart changes Started.
	must(t, "HeartbeatReplica r2 again", s.HeartbeatReplica(ctx, store.Replica{ID: "r2", Addr: "10.0.0.3:7443", Started: base.Add(time.Hour), Heartbeat: base.Add(time.Hour + time.Second)}))
	got, err = s.ListReplicas(ctx)
	must(t, "ListReplicas", err)
	if len(got) != 2 || got[0].ID != "r1" || got[1].ID != "r2" || got[1].Addr != "10.0.0.3:7443" {
		t.Fatalf("ListReplicas = %+v", got)
	}
	checkTime(t, "r1 Started", got[0].Started, base)
	checkTime(t, "r1 Heartbeat", got[0].Heartbeat, base.Add(time.Second))
	checkTime(t, "r2 Started", got[1].Started, base.Add(time.Hour))
	checkTime(t, "r2 Heartbeat", got[1].Heartbeat, base.Add(time.Hour+time.Second))

	// A zero Heartbeat means now.
	before := time.Now().Add(-time.Second)
	must(t, "HeartbeatReplica now", s.HeartbeatReplica(ctx, store.Replica{ID: "r3"}))
	got, err = s.ListReplicas(ctx)
	must(t, "ListReplicas", err)
	if hb := got[2].Heartbeat; hb.Before(before) || hb.After(time.Now().Add(time.Second)) {
		t.Errorf("zero heartbeat stored as %v, want about now", hb)
	}
}

func testPresence(t *testing.T, s store.Store) {
	ctx := context.Background()
	lease := base.Add(time.Minute) // heartbeats at or after this are live
	must(t, "HeartbeatReplica live", s.HeartbeatReplica(ctx, store.Replica{ID: "live", Heartbeat: lease}))
	must(t, "HeartbeatReplica other", s.HeartbeatReplica(ctx, store.Replica{ID: "other", Heartbeat: lease.Add(time.Second)}))
	must(t, "HeartbeatReplica dead", s.HeartbeatReplica(ctx, store.Replica{ID: "dead", Heartbeat: lease.Add(-time.Millisecond)}))

	presence := func(want map[string]string) {
		t.Helper()
		got, err := s.Presence(ctx, lease)
		must(t, "Presence", err)
		if got == nil || !maps.Equal(got, want) {
			t.Errorf("Presence = %v, want %v", got, want)
		}
	}
	presence(map[string]string{})

	must(t, "SetPresence a1", s.SetPresence(ctx, "a1", "live", "s1", base))
	must(t, "SetPresence a2", s.SetPresence(ctx, "a2", "dead", "s2", base))
	must(t, "SetPresence a3", s.SetPresence(ctx, "a3", "unknown", "s3", base))
	must(t, "SetPresence a4", s.SetPresence(ctx, "a4", "other", "s4", base))
	presence(map[string]string{"a1": "live", "a4": "other"})

	// The agent reconnects to another replica; the old stream's cleanup
	// arrives late and must not remove the new presence.
	must(t, "SetPresence a1 moved", s.SetPresence(ctx, "a1", "other", "s5", base.Add(time.Second)))
	must(t, "ClearPresence stale", s.ClearPresence(ctx, "a1", "live", "s1"))
	presence(map[string]string{"a1": "other", "a4": "other"})
	// Same replica, older session: kept too.
	must(t, "ClearPresence old session", s.ClearPresence(ctx, "a1", "other", "s1"))
	presence(map[string]string{"a1": "other", "a4": "other"})
	must(t, "ClearPresence current", s.ClearPresence(ctx, "a1", "other", "s5"))
	presence(map[string]string{"a4": "other"})
	must(t, "ClearPresence absent", s.ClearPresence(ctx, "a1", "other", "s5"))

	// A dead replica that beats again brings its agents back.
	must(t, "HeartbeatReplica dead revives", s.HeartbeatReplica(ctx, store.Replica{ID: "dead", Heartbeat: lease}))
	presence(map[string]string{"a2": "dead", "a4": "other"})

	// A replica restarting under its fixed ID clears what it held before
	// it renews its lease; other replicas' agents stay.
	must(t, "SetPresence a5", s.SetPresence(ctx, "a5", "dead", "s6", base))
	must(t, "ClearReplicaPresence dead", s.ClearReplicaPresence(ctx, "dead"))
	presence(map[string]string{"a4": "other"})
	must(t, "ClearReplicaPresence none", s.ClearReplicaPresence(ctx, "nobody"))
	presence(map[string]string{"a4": "other"})
}

func checkDirective(t *testing.T, got, want store.Directive) {
	t.Helper()
	if got.Seq != want.Seq || got.AgentID != want.AgentID || got.ID != want.ID || got.State != want.State ||
		got.Origin != want.Origin || !bytes.Equal(got.Body, want.Body) || !bytes.Equal(got.Result, want.Result) {
		t.Errorf("directive = {Seq:%d Agent:%s ID:%s State:%s Origin:%s Body:%q Result:%q}, want {Seq:%d Agent:%s ID:%s State:%s Origin:%s Body:%q Result:%q}",
			got.Seq, got.AgentID, got.ID, got.State, got.Origin, got.Body, got.Result,
			want.Seq, want.AgentID, want.ID, want.State, want.Origin, want.Body, want.Result)
	}
	checkTime(t, "Created", got.Created, want.Created)
	checkTime(t, "Updated", got.Updated, want.Updated)
}

func testDirectives(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "HeartbeatReplica r1", s.HeartbeatReplica(ctx, store.Replica{ID: "r1", Heartbeat: base}))
	must(t, "HeartbeatReplica r2", s.HeartbeatReplica(ctx, store.Replica{ID: "r2", Heartbeat: base}))
	must(t, "SetPresence a1", s.SetPresence(ctx, "a1", "r1", "s", base))
	must(t, "SetPresence a2", s.SetPresence(ctx, "a2", "r2", "s", base))

	pending, err := s.PendingDirectives(ctx, "r1", 0)
	must(t, "PendingDirectives empty", err)
	if pending == nil || len(pending) != 0 {
		t.Fatalf("PendingDirectives on empty store = %#v", pending)
	}

	body := []byte{0, 1, 2, 0xff, 'x'}
	var ds []store.Directive
	for i, agent := range []string{"a1", "a2", "a1", "a3", "a1"} {
		d := store.Directive{AgentID: agent, ID: fmt.Sprintf("d%d", i), Body: body, Origin: "r2",
			State: "done", Result: []byte("ignored"), Seq: 999, // not the caller's to set
			Created: base.Add(time.Duration(i) * time.Second)}
		seq, err := s.EnqueueDirective(ctx, d)
		must(t, "EnqueueDirective", err)
		if len(ds) > 0 && seq <= ds[len(ds)-1].Seq {
			t.Errorf("Seq %d not greater than %d", seq, ds[len(ds)-1].Seq)
		}
		d.Seq, d.State, d.Result, d.Updated = seq, store.DirectivePending, nil, d.Created
		ds = append(ds, d)
	}
	got, err := s.GetDirective(ctx, ds[1].Seq)
	must(t, "GetDirective", err)
	checkDirective(t, got, ds[1])

	seqs := func(list []store.Directive) string {
		var out []string
		for _, d := range list {
			out = append(out, d.ID)
		}
		return fmt.Sprint(out)
	}
	pending, err = s.PendingDirectives(ctx, "r1", 0)
	must(t, "PendingDirectives r1", err)
	if got := seqs(pending); got != "[d0 d2 d4]" {
		t.Fatalf("PendingDirectives(r1) = %s, want [d0 d2 d4]", got)
	}
	checkDirective(t, pending[0], ds[0])
	pending, err = s.PendingDirectives(ctx, "r1", 2)
	must(t, "PendingDirectives r1 limit", err)
	if got := seqs(pending); got != "[d0 d2]" {
		t.Fatalf("PendingDirectives(r1, 2) = %s", got)
	}

	at := base.Add(time.Hour)
	must(t, "SetDirectiveState sent", s.SetDirectiveState(ctx, ds[0].Seq, store.DirectiveSent, nil, at))
	pending, err = s.PendingDirectives(ctx, "r1", 0)
	must(t, "PendingDirectives after send", err)
	if got := seqs(pending); got != "[d2 d4]" {
		t.Fatalf("PendingDirectives after sending d0 = %s", got)
	}
	must(t, "SetDirectiveState done", s.SetDirectiveState(ctx, ds[0].Seq, store.DirectiveDone, []byte(`{"ok":true}`), at.Add(time.Second)))
	got, err = s.GetDirective(ctx, ds[0].Seq)
	must(t, "GetDirective done", err)
	want := ds[0]
	want.State, want.Result, want.Updated = store.DirectiveDone, []byte(`{"ok":true}`), at.Add(time.Second)
	checkDirective(t, got, want)

	// The agent's stream moves: its directives follow it to the new replica.
	must(t, "SetPresence a1 to r2", s.SetPresence(ctx, "a1", "r2", "s2", base))
	pending, err = s.PendingDirectives(ctx, "r2", 0)
	must(t, "PendingDirectives r2", err)
	if got := seqs(pending); got != "[d1 d2 d4]" {
		t.Fatalf("PendingDirectives(r2) after a1 moved = %s", got)
	}
	pending, err = s.PendingDirectives(ctx, "r1", 0)
	must(t, "PendingDirectives r1 after move", err)
	if len(pending) != 0 {
		t.Fatalf("PendingDirectives(r1) after a1 moved = %s", seqs(pending))
	}

	_, err = s.GetDirective(ctx, 1<<40)
	wantErr(t, "GetDirective missing", err, store.ErrNotFound)
	wantErr(t, "SetDirectiveState missing", s.SetDirectiveState(ctx, 1<<40, store.DirectiveDone, nil, at), store.ErrNotFound)

	// A zero Created means now.
	before := time.Now().Add(-time.Second)
	seq, err := s.EnqueueDirective(ctx, store.Directive{AgentID: "a9"})
	must(t, "EnqueueDirective zero time", err)
	got, err = s.GetDirective(ctx, seq)
	must(t, "GetDirective zero time", err)
	if got.Created.Before(before) || !got.Updated.Equal(got.Created) || len(got.Body) != 0 {
		t.Errorf("directive with zero Created = %+v", got)
	}
}

func testDirectivesDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	cut := base.Add(time.Hour)
	type row struct {
		id      string
		created time.Time
		state   string
		updated time.Time
		kept    bool
	}
	rows := []row{
		{"done-old", base, store.DirectiveDone, cut.Add(-time.Millisecond), false},
		{"failed-old", cut.Add(-time.Minute), store.DirectiveFailed, cut.Add(-time.Second), false},
		{"done-at-cut", cut, store.DirectiveDone, cut, true},
		{"sent-at-cut", cut, store.DirectiveSent, cut.Add(time.Second), true},
		// Finished by a replica whose clock is behind the one that created it.
		{"done-skewed", cut.Add(time.Minute), store.DirectiveDone, cut.Add(-time.Second), false},
		{"pending-old", cut.Add(-time.Millisecond), store.DirectivePending, time.Time{}, false},
		{"pending-at-cut", cut, store.DirectivePending, time.Time{}, true},
		{"sent-created-old", base, store.DirectiveSent, cut.Add(time.Hour), false},
		{"done-new", cut.Add(time.Minute), store.DirectiveDone, cut.Add(2 * time.Minute), true},
	}
	seqOf := map[string]int64{}
	for _, r := range rows {
		seq, err := s.EnqueueDirective(ctx, store.Directive{AgentID: "a1", ID: r.id, Created: r.created})
		must(t, "EnqueueDirective "+r.id, err)
		seqOf[r.id] = seq
		if r.state != store.DirectivePending {
			must(t, "SetDirectiveState "+r.id, s.SetDirectiveState(ctx, seq, r.state, nil, r.updated))
		}
	}
	n, err := s.DeleteDirectivesBefore(ctx, cut)
	must(t, "DeleteDirectivesBefore", err)
	wantDeleted := 0
	for _, r := range rows {
		_, err := s.GetDirective(ctx, seqOf[r.id])
		switch {
		case r.kept && err != nil:
			t.Errorf("%s: deleted or unreadable (%v), want kept", r.id, err)
		case !r.kept && !errors.Is(err, store.ErrNotFound):
			t.Errorf("%s: GetDirective err = %v, want deleted", r.id, err)
		}
		if !r.kept {
			wantDeleted++
		}
	}
	if n != wantDeleted {
		t.Errorf("DeleteDirectivesBefore = %d, want %d", n, wantDeleted)
	}
	n, err = s.DeleteDirectivesBefore(ctx, cut)
	must(t, "DeleteDirectivesBefore again", err)
	if n != 0 {
		t.Errorf("second DeleteDirectivesBefore = %d, want 0", n)
	}
}

func testClaimTargets(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var targets []store.CaptureTarget
	var all []string
	for i := range 10 {
		a := fmt.Sprintf("a%02d", i)
		all = append(all, a)
		targets = append(targets, store.CaptureTarget{AgentID: a, State: "pending", Updated: t0})
	}
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, targets))
	must(t, "SetTargetState", s.SetTargetState(ctx, "c1", "a00", "armed", "", t0))
	// a00 has left pending, so 3 allowed leaves room for 2, taken in the
	// order asked; unknown agents are skipped.
	got, err := s.ClaimTargets(ctx, "c1", []string{"zz", "a05", "a00", "a03", "a01"}, 3, t0.Add(time.Minute))
	must(t, "ClaimTargets", err)
	if want := []string{"a05", "a03"}; !slices.Equal(got, want) {
		t.Errorf("ClaimTargets = %v, want %v", got, want)
	}
	got, err = s.ClaimTargets(ctx, "c1", all, 3, t0)
	must(t, "ClaimTargets full", err)
	if len(got) != 0 {
		t.Errorf("ClaimTargets past the limit = %v, want none", got)
	}
	got, err = s.ClaimTargets(ctx, "c1", all, -1, t0.Add(2*time.Minute))
	must(t, "ClaimTargets unlimited", err)
	if want := []string{"a01", "a02", "a04", "a06", "a07", "a08", "a09"}; !slices.Equal(got, want) {
		t.Errorf("ClaimTargets unlimited = %v, want %v", got, want)
	}
	ts, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	for _, tg := range ts {
		if tg.State == "pending" {
			t.Errorf("target %s still pending", tg.AgentID)
		}
	}
	// A missing capture claims nothing (PostgreSQL, which locks the
	// capture row first, says ErrNotFound).
	got, err = s.ClaimTargets(ctx, "nope", all, -1, t0)
	if len(got) != 0 || err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimTargets of a missing capture = %v, %v", got, err)
	}
}

func testClaimTargetsConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const agents, allowed = 200, 37
	var targets []store.CaptureTarget
	var all []string
	for i := range agents {
		a := fmt.Sprintf("a%03d", i)
		all = append(all, a)
		targets = append(targets, store.CaptureTarget{AgentID: a, State: "pending"})
	}
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, targets))
	var mu sync.Mutex
	total := 0
	seen := map[string]bool{}
	race(4, func(i int) {
		// Each worker asks for every agent, in its own order.
		order := slices.Clone(all)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		got, err := s.ClaimTargets(ctx, "c1", order, allowed, t0)
		if err != nil {
			t.Errorf("ClaimTargets: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		total += len(got)
		for _, a := range got {
			if seen[a] {
				t.Errorf("agent %s claimed twice", a)
			}
			seen[a] = true
		}
	})
	if total != allowed {
		t.Errorf("%d targets claimed by concurrent batches, want exactly %d", total, allowed)
	}
}

func testSetTargetStates(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "a1", State: "delivered"}, {AgentID: "a2", State: "delivered"}}))
	n, err := s.SetTargetStates(ctx, []store.CaptureTarget{
		{CaptureID: "c1", AgentID: "a1", State: "armed", Updated: t0.Add(time.Minute)},
		{CaptureID: "c1", AgentID: "zz", State: "armed", Updated: t0}, // not a target: skipped
		{CaptureID: "c1", AgentID: "a2", State: "armed", Updated: t0.Add(time.Minute)},
		{CaptureID: "c1", AgentID: "a2", State: "failed", Detail: "dtrace: no driver", Updated: t0.Add(2 * time.Minute)},
	})
	must(t, "SetTargetStates", err)
	if n != 3 {
		t.Errorf("SetTargetStates changed %d rows, want 3", n)
	}
	ts, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	if len(ts) != 2 || ts[0].State != "armed" || ts[1].State != "failed" || ts[1].Detail != "dtrace: no driver" {
		t.Fatalf("targets %+v", ts)
	}
	checkTime(t, "Updated", ts[1].Updated, t0.Add(2*time.Minute))
	if n, err := s.SetTargetStates(ctx, nil); err != nil || n != 0 {
		t.Errorf("SetTargetStates(nil) = %d, %v", n, err)
	}
}
