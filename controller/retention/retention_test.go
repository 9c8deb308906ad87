package retention

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
)

const mib = 1 << 20

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

type env struct {
	t       *testing.T
	ctx     context.Context
	clock   *clockwork.FakeClock
	st      store.Store
	blobs   *blobstore.Store
	content map[string][]byte // dump ID -> content
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "livedump.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blobstore.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: context.Background(), clock: clockwork.NewFakeClockAt(t0), st: st, blobs: blobs, content: map[string][]byte{}}
}

// receiver is one replica's dumps.Receiver on the shared store and blobs.
func (e *env) receiver() *dumps.Receiver {
	r, err := dumps.New(dumps.Config{Store: e.st, Blobs: e.blobs, Clock: e.clock})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// dump stores an uploaded dump of n bytes, its upload finished now.
func (e *env) dump(id string, n int) {
	e.t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	h := sha256.Sum256(b)
	sum := hex.EncodeToString(h[:])
	if _, _, err := e.blobs.Put(e.ctx, bytes.NewReader(b), sum, int64(n)); err != nil {
		e.t.Fatal(err)
	}
	now := e.clock.Now()
	if err := e.st.PutDump(e.ctx, store.Dump{ID: id, AgentID: "agent-1", CaptureID: "c-old", State: dumps.StateHashed, SHA256: sum, Size: int64(n), Written: now, Updated: now}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.SetDumpProgress(e.ctx, id, int64(n), int64(n), store.DumpUploaded, "", now); err != nil {
		e.t.Fatal(err)
	}
	e.content[id] = b
}

// exists reports whether the dump's row and content are there (failing
// when only one is).
func (e *env) exists(id string) bool {
	e.t.Helper()
	_, err := e.st.GetDump(e.ctx, id)
	row := err == nil
	h := sha256.Sum256(e.content[id])
	blob, herr := e.blobs.Has(e.ctx, hex.EncodeToString(h[:]))
	if herr != nil {
		e.t.Fatal(herr)
	}
	if row != blob {
		e.t.Fatalf("dump %s: row %v but content %v", id, row, blob)
	}
	return row
}

func (e *env) remaining(ids ...string) string {
	var left []string
	for _, id := range ids {
		if e.exists(id) {
			left = append(left, id)
		}
	}
	return fmt.Sprint(left)
}

func newSweeper(e *env, tr Transfers, p Policy, holder string, reg prometheus.Registerer) *Sweeper {
	return New(Config{Store: e.st, Blobs: e.blobs, Transfers: tr, Policy: p, Holder: holder, Clock: e.clock, Metrics: reg})
}

// TestSweepFillsPastTheLimit is the retention proof: dumps fill past the
// byte limit, the sweep deletes the oldest until under it, but never the
// dump a download holds open on another replica; the metrics move; age
// limits then take the rest, and events go in bounded batches.
func TestSweepFillsPastTheLimit(t *testing.T) {
	e := newEnv(t)
	if err := e.st.CreateCapture(e.ctx, store.Capture{ID: "c-old", Spec: "{}", State: "done", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "agent-1", State: "armed"}}); err != nil {
		t.Fatal(err)
	}
	ids := []string{"d0", "d1", "d2", "d3", "d4"}
	for _, id := range ids {
		e.dump(id, mib)
		e.clock.Advance(time.Hour)
	}
	replicaA, replicaB := e.receiver(), e.receiver()
	reg := prometheus.NewRegistry()
	p := Policy{DumpMaxBytes: 3*mib + mib/2, EventMaxCount: -1, EventBatch: 3, BatchPause: -1}
	sw := newSweeper(e, replicaA, p, "replica-a", reg)

	// The oldest dump is being downloaded through replica B.
	_, dl, err := replicaB.Open(e.ctx, "d0")
	if err != nil {
		t.Fatal(err)
	}
	half := make([]byte, mib/2)
	if _, err := io.ReadFull(dl, half); err != nil {
		t.Fatal(err)
	}

	res, err := sw.Sweep(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 5 MiB held, limit 3.5 MiB: d0 is kept (downloading), d1 and d2 go.
	if got := e.remaining(ids...); got != "[d0 d3 d4]" {
		t.Fatalf("after the size sweep %s remain, want [d0 d3 d4]", got)
	}
	if !res.Swept || res.Dumps != 2 || res.Bytes != 2*mib || res.Kept != 1 || res.BytesAfter != 3*mib {
		t.Fatalf("result %+v", res)
	}
	rest, err := io.ReadAll(dl)
	if err != nil || !bytes.Equal(append(half, rest...), e.content["d0"]) {
		t.Fatalf("the download held open through the sweep read %d bytes (%v), want d0 whole", len(half)+len(rest), err)
	}
	for name, want := range map[string]float64{
		"held": 3 * mib, "limit": 3*mib + mib/2, "reclaimed": 2 * mib, "deleted by size": 2, "skipped downloading": 1, "last sweep": float64(e.clock.Now().Unix()),
	} {
		got := map[string]float64{
			"held": testutil.ToFloat64(sw.m.held), "limit": testutil.ToFloat64(sw.m.limit), "reclaimed": testutil.ToFloat64(sw.m.reclaimed),
			"deleted by size":     testutil.ToFloat64(sw.m.deleted.WithLabelValues("dumps", "size")),
			"skipped downloading": testutil.ToFloat64(sw.m.skipped.WithLabelValues("downloading")), "last sweep": testutil.ToFloat64(sw.m.lastSweep),
		}[name]
		if got != want {
			t.Errorf("metric %s = %v, want %v", name, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "livedump_controller_retention_bytes_held", "livedump_controller_retention_reclaimed_bytes_total"); err != nil || n != 2 {
		t.Fatalf("registered retention metrics: %d, %v", n, err)
	}

	// The download stays open past its first read lease: replica B renews
	// the mark, so the dump is still kept.
	e.dump("d5", mib) // 4 MiB held
	e.clock.Advance(dumps.ReadLease + time.Second)
	replicaB.RenewReads(e.ctx)
	if _, err := sw.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.remaining("d0", "d3", "d4", "d5"); got != "[d0 d4 d5]" {
		t.Fatalf("with the download renewed %s remain, want [d0 d4 d5]", got)
	}
	// An operator cannot delete it either.
	if _, err := sw.DeleteDump(e.ctx, "d0"); !errors.Is(err, ErrDownloading) {
		t.Fatalf("DeleteDump during a download = %v, want ErrDownloading", err)
	}

	// The download ends; once its mark runs out, d0 is the oldest and goes.
	dl.Close()
	e.dump("d6", mib) // 4 MiB held again
	e.clock.Advance(dumps.ReadLease)
	if _, err := sw.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.remaining("d0", "d4", "d5", "d6"); got != "[d4 d5 d6]" {
		t.Fatalf("after the download %s remain, want [d4 d5 d6]", got)
	}

	// Another replica does not sweep while replica A holds the lease.
	other := newSweeper(e, e.receiver(), p, "replica-b", nil)
	if res, err := other.Sweep(e.ctx); err != nil || res.Swept {
		t.Fatalf("second replica swept: %+v, %v", res, err)
	}

	// Ages: 30 days later every dump goes, the old events in batches of 3,
	// and then the capture that held them.
	var evs []store.Event
	for i := range 8 {
		evs = append(evs, store.Event{ID: fmt.Sprintf("e%d", i), CaptureID: "c-old", AgentID: "agent-1", Time: t0, Process: "p.exe", Probe: "x", User: "[]", Kernel: "[]"})
	}
	if _, err := e.st.InsertEvents(e.ctx, evs); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(DefaultDumpMaxAge + time.Hour)
	res, err = sw.Sweep(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.remaining("d4", "d5", "d6"); got != "[]" {
		t.Fatalf("after max age %s remain", got)
	}
	if res.Dumps != 3 || res.Events != 8 || res.Captures != 1 || res.BytesAfter != 0 {
		t.Fatalf("age sweep %+v, want 3 dumps, 8 events, 1 capture", res)
	}
	if _, err := e.st.GetCapture(e.ctx, "c-old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("capture kept: %v", err)
	}
	if got := testutil.ToFloat64(sw.m.deleted.WithLabelValues("events", "age")); got != 8 {
		t.Fatalf("events deleted by age = %v", got)
	}
	if got := testutil.ToFloat64(sw.m.held); got != 0 {
		t.Fatalf("held = %v after everything went", got)
	}
}

// countingStore counts DeleteEvents calls and their batch sizes.
type countingStore struct {
	store.Store
	batches []int
}

func (c *countingStore) DeleteEvents(ctx context.Context, p store.EventPrune) (int, error) {
	c.batches = append(c.batches, p.Limit)
	return c.Store.DeleteEvents(ctx, p)
}

// TestEventCountInBatches: only the newest events are kept, deleted in
// statements of at most EventBatch rows.
func TestEventCountInBatches(t *testing.T) {
	e := newEnv(t)
	cs := &countingStore{Store: e.st}
	sw := New(Config{Store: cs, Blobs: e.blobs, Policy: Policy{EventMaxAge: -1, EventMaxCount: 5, EventBatch: 4, BatchPause: -1}, Holder: "r", Clock: e.clock})
	if err := e.st.CreateCapture(e.ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	var evs []store.Event
	for i := range 15 {
		evs = append(evs, store.Event{ID: fmt.Sprintf("e%02d", i), CaptureID: "c1", AgentID: "a", Time: t0, Process: "p", Probe: "x", User: "[]", Kernel: "[]"})
	}
	if _, err := e.st.InsertEvents(e.ctx, evs); err != nil {
		t.Fatal(err)
	}
	res, err := sw.Sweep(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	left, _ := e.st.ListEvents(e.ctx, "c1", 0, 100)
	if res.Events != 10 || len(left) != 5 || left[0].ID != "e10" {
		t.Fatalf("deleted %d, left %d starting at %v; want 10 deleted, e10..e14 left", res.Events, len(left), left)
	}
	if fmt.Sprint(cs.batches) != "[4 4 4]" {
		t.Fatalf("batches %v, want three statements of at most 4 rows", cs.batches)
	}
	if _, err := e.st.GetCapture(e.ctx, "c1"); err != nil {
		t.Fatal("an active capture was deleted")
	}
}

// TestDeleteCapture: an operator's delete refuses an active capture, then
// takes an ended one with its dumps, content and events.
func TestDeleteCapture(t *testing.T) {
	e := newEnv(t)
	sw := newSweeper(e, e.receiver(), Policy{BatchPause: -1, EventBatch: 2}, "r", nil)
	if err := e.st.CreateCapture(e.ctx, store.Capture{ID: "c-old", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "agent-1", State: "armed"}}); err != nil {
		t.Fatal(err)
	}
	e.dump("d1", 1000)
	e.dump("d2", 2000)
	if _, err := e.st.InsertEvents(e.ctx, []store.Event{
		{ID: "e1", CaptureID: "c-old", AgentID: "agent-1", Time: t0, Process: "p", Probe: "x", User: "[]", Kernel: "[]"},
		{ID: "e2", CaptureID: "c-old", AgentID: "agent-1", Time: t0, Process: "p", Probe: "x", User: "[]", Kernel: "[]"},
		{ID: "e3", CaptureID: "c-old", AgentID: "agent-1", Time: t0, Process: "p", Probe: "x", User: "[]", Kernel: "[]"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := sw.DeleteCapture(e.ctx, "c-old"); !errors.Is(err, ErrCaptureActive) {
		t.Fatalf("DeleteCapture of an active capture = %v", err)
	}
	if e.remaining("d1", "d2") != "[d1 d2]" {
		t.Fatal("a refused capture delete deleted dumps")
	}
	if _, err := e.st.FinishCapture(e.ctx, "c-old", "cancelled", ""); err != nil {
		t.Fatal(err)
	}
	del, err := sw.DeleteCapture(e.ctx, "c-old")
	if err != nil {
		t.Fatal(err)
	}
	if del.Dumps != 2 || del.Bytes != 3000 || del.Events != 3 || e.remaining("d1", "d2") != "[]" {
		t.Fatalf("DeleteCapture = %+v", del)
	}
	if _, err := e.st.GetCapture(e.ctx, "c-old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("capture kept: %v", err)
	}
	if _, err := sw.DeleteCapture(e.ctx, "c-old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteCapture = %v", err)
	}
}

var (
	_ Transfers = (*dumps.Receiver)(nil)
	_ Blobs     = (blobstore.Blobs)(nil)
)
