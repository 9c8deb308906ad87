package capture

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

type lifecycleFixture struct {
	st     store.Store
	router *fakeRouter
	adm    *fakeAdmission
	watch  *fakeWatchers
	kick   wakeup
	l      *lifecycle
}

func newLifecycleFixture(t *testing.T) *lifecycleFixture {
	f := &lifecycleFixture{st: openStore(t), router: newFakeRouter(), adm: &fakeAdmission{}, watch: newFakeWatchers(), kick: make(wakeup, 1)}
	f.l = &lifecycle{store: f.st, router: f.router, clock: newFakeClock(), log: discard(), kick: f.kick, admission: f.adm, watchers: f.watch}
	return f
}

func spec(selector string) *livedumpv1.CaptureSpec {
	return &livedumpv1.CaptureSpec{Selector: selector, Processes: []string{"app.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"}}
}

// TestCreateTargetsMatchingAgents: a capture targets the agents its
// selector matches (not revoked ones), starts pending, asks for a scheduler
// pass and tells the other replicas; one that matches nobody is done at
// once.
func TestCreateTargetsMatchingAgents(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	addAgents(t, f.st, map[string]string{"ring": "canary"}, "a", "b")
	addAgents(t, f.st, map[string]string{"ring": "prod"}, "c")
	addAgents(t, f.st, map[string]string{"ring": "canary"}, "d")
	if _, err := f.st.RevokeAgent(ctx, "d", t0); err != nil {
		t.Fatal(err)
	}
	c, _, err := f.l.Create(ctx, Request{Actor: "op", Spec: spec("ring=canary")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range c.GetTargets() {
		got = append(got, tg.GetAgentId()+" "+tg.GetHostname()+" "+tg.GetState().String())
	}
	want := []string{"a HOST-a TARGET_STATE_PENDING", "b HOST-b TARGET_STATE_PENDING"}
	if !slices.Equal(got, want) {
		t.Fatalf("targets %q, want %q", got, want)
	}
	if c.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE || c.GetCreatedBy() != "op" || c.GetRenderedScript() == "" {
		t.Fatalf("capture %v", c)
	}
	if !kicked(f.kick) || !slices.Equal(f.router.changed, []string{c.GetId()}) {
		t.Fatalf("kicked %v, changed %v", kicked(f.kick), f.router.changed)
	}

	// Refused unless forced (TestCreateCatchesNothing); forced, it is done.
	none, _, err := f.l.Create(ctx, Request{Actor: "op", Spec: spec("ring=nowhere"), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if none.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_DONE || none.GetDetail() != "no agent matches the selector" {
		t.Fatalf("capture matching nobody: %v %q", none.GetState(), none.GetDetail())
	}
}

// TestCreateRejects: a rejected spec names its field and stores nothing.
func TestCreateRejects(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	addAgents(t, f.st, nil, "a")
	edit := func(fn func(s *livedumpv1.CaptureSpec)) *livedumpv1.CaptureSpec {
		s := spec("x=y")
		fn(s)
		return s
	}
	for _, tc := range []struct {
		name  string
		req   Request
		field string
	}{
		{"no spec", Request{}, "spec"},
		{"blank selector", Request{Spec: spec(" ")}, "selector"},
		{"short expiry", Request{Spec: edit(func(s *livedumpv1.CaptureSpec) { s.Expire = durationpb.New(time.Second) })}, "expire"},
		{"long expiry", Request{Spec: edit(func(s *livedumpv1.CaptureSpec) { s.Expire = durationpb.New(MaxExpire + time.Hour) })}, "expire"},
		{"rollout rate", Request{Spec: edit(func(s *livedumpv1.CaptureSpec) { s.RolloutRate = MaxRollout + 1 })}, "rollout_rate"},
		{"script without admin", Request{Spec: edit(func(s *livedumpv1.CaptureSpec) { s.Script = "BEGIN {}" })}, "script"},
		{"script too long", Request{Admin: true, Spec: edit(func(s *livedumpv1.CaptureSpec) { s.Script = strings.Repeat("x", MaxRawScript+1) })}, "script"},
		{"unknown status", Request{Spec: edit(func(s *livedumpv1.CaptureSpec) { s.Statuses = []string{"STATUS_NO_SUCH_THING_AT_ALL"} })}, "status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.l.Create(ctx, tc.req)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
	if cs, err := f.st.ListCaptures(ctx, ""); err != nil || len(cs) != 0 {
		t.Fatalf("stored %d captures (%v)", len(cs), err)
	}
	if len(f.router.changed) != 0 {
		t.Fatalf("replicas told of %v", f.router.changed)
	}
}

// TestCancelDisarmsAndEnds: cancelling disarms the targets that were sent
// the capture (not the pending ones), ends every open target, forgets the
// capture's admission, tells the replicas and the watchers, once.
func TestCancelDisarmsAndEnds(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	storeCapture(t, f.st, "c-1", `{"selector":"x"}`, t0, map[string]string{"a": TargetArmed, "b": TargetPending, "c": TargetDone})
	c, err := f.l.Cancel(ctx, "c-1", "op")
	if err != nil {
		t.Fatal(err)
	}
	if c.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED || c.GetDetail() != "cancelled by op" {
		t.Fatalf("capture %v %q", c.GetState(), c.GetDetail())
	}
	if len(f.router.sent) != 1 || !slices.Equal(directiveIDs(f.router.sent["a"]), []string{"disarm-c-1"}) {
		t.Fatalf("sent %v, want one disarm to a", f.router.sent)
	}
	if r := f.router.sent["a"][0].GetDisarm().GetReason(); r != "cancelled" {
		t.Fatalf("disarm reason %q", r)
	}
	states := map[string]livedumpv1.TargetState{}
	for _, tg := range c.GetTargets() {
		states[tg.GetAgentId()] = tg.GetState()
	}
	if states["a"] != livedumpv1.TargetState_TARGET_STATE_CANCELLED || states["b"] != livedumpv1.TargetState_TARGET_STATE_CANCELLED || states["c"] != livedumpv1.TargetState_TARGET_STATE_DONE {
		t.Fatalf("target states %v", states)
	}
	for what, got := range map[string][]string{"forgotten": f.adm.forgotten, "changed": f.router.changed, "ended": f.watch.ended} {
		if !slices.Equal(got, []string{"c-1"}) {
			t.Errorf("%s %v, want [c-1]", what, got)
		}
	}

	// Cancelling again changes nothing.
	if _, err := f.l.Cancel(ctx, "c-1", "op"); err != nil {
		t.Fatal(err)
	}
	if len(f.router.sent["a"]) != 1 || len(f.router.changed) != 1 {
		t.Fatalf("second cancel sent %v, changed %v", f.router.sent, f.router.changed)
	}
}

// TestEndAfterAnotherReplica: when another replica ended the capture first,
// this one disarms nothing but still closes its own watchers.
func TestEndAfterAnotherReplica(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	storeCapture(t, f.st, "c-1", `{"selector":"x"}`, t0, map[string]string{"a": TargetArmed})
	c, err := f.st.GetCapture(ctx, "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.FinishCapture(ctx, "c-1", StateExpired, "expired"); err != nil {
		t.Fatal(err)
	}
	if err := f.l.end(ctx, c, StateExpired, "expired", "expired"); err != nil {
		t.Fatal(err)
	}
	if len(f.router.sent) != 0 || len(f.router.changed) != 0 {
		t.Fatalf("sent %v, changed %v", f.router.sent, f.router.changed)
	}
	if !slices.Equal(f.watch.ended, []string{"c-1"}) || !slices.Equal(f.adm.forgotten, []string{"c-1"}) {
		t.Fatalf("ended %v, forgotten %v", f.watch.ended, f.adm.forgotten)
	}
}

func TestListAndGetPage(t *testing.T) {
	f := newLifecycleFixture(t)
	ctx := context.Background()
	addAgents(t, f.st, nil, "a", "b", "c")
	storeCapture(t, f.st, "c-1", `{"selector":"x"}`, t0, map[string]string{"a": TargetArmed, "b": TargetArmed, "c": TargetArmed})
	storeCapture(t, f.st, "c-2", `{"selector":"x"}`, t0.Add(time.Minute), map[string]string{"a": TargetArmed})
	cs, err := f.l.List(ctx)
	if err != nil || len(cs) != 2 || cs[0].GetId() != "c-2" {
		t.Fatalf("list %v %v", cs, err)
	}
	var pages [][]string
	after := ""
	for {
		c, next, err := f.l.GetPage(ctx, "c-1", after, 1)
		if err != nil {
			t.Fatal(err)
		}
		var page []string
		for _, tg := range c.GetTargets() {
			page = append(page, tg.GetHostname())
		}
		pages = append(pages, page)
		if c.GetOmittedTargets() != 2 {
			t.Fatalf("omitted %d, want 2", c.GetOmittedTargets())
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(pages) != 3 || pages[0][0] != "HOST-a" || pages[2][0] != "HOST-c" {
		t.Fatalf("pages %v", pages)
	}
}

// TestTargetCountsAndOffline: every way of reading a capture counts its
// targets by state (all of them, listed or on other pages) and counts as
// offline the targets not armed yet whose agent no replica holds; an armed
// target of a disconnected agent is not offline (its probe runs there).
func TestTargetCountsAndOffline(t *testing.T) {
	f := newLifecycleFixture(t)
	f.l.online = f.router
	ctx := context.Background()
	addAgents(t, f.st, nil, "a", "b", "c", "d", "e")
	storeCapture(t, f.st, "c-1", `{"selector":"x"}`, t0, map[string]string{
		"a": TargetArmed, "b": TargetArmed, "c": TargetPending, "d": TargetDelivered, "e": TargetFailed,
	})
	f.router.offline = map[string]bool{"b": true, "c": true, "d": true}
	want := map[string]int64{TargetArmed: 2, TargetPending: 1, TargetDelivered: 1, TargetFailed: 1}
	check := func(how string, c *livedumpv1.Capture) {
		t.Helper()
		if !maps.Equal(c.GetTargetCounts(), want) {
			t.Errorf("%s: target_counts %v, want %v", how, c.GetTargetCounts(), want)
		}
		if c.GetOfflineTargets() != 2 {
			t.Errorf("%s: offline_targets %d, want 2 (c pending, d delivered)", how, c.GetOfflineTargets())
		}
	}
	c, err := f.l.Get(ctx, "c-1")
	if err != nil {
		t.Fatal(err)
	}
	check("Get", c)
	cs, err := f.l.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("List", cs[0])
	page, _, err := f.l.GetPage(ctx, "c-1", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetTargets()) != 1 {
		t.Fatalf("page of %d targets, want 1", len(page.GetTargets()))
	}
	check("GetPage", page)
	listed, _, err := f.l.ListPage(ctx, time.Time{}, "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	check("ListPage", listed[0])
	trimmed := Trim(c, proto.Size(c)-1)
	if trimmed.GetOmittedTargets() == 0 {
		t.Fatalf("Trim to one byte less kept all %d targets", len(trimmed.GetTargets()))
	}
	check("Trim", trimmed)
}
