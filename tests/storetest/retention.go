package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Retention: what controller/retention reads and deletes.

func dumpIDs(ds []store.Dump) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

func testOldestDumps(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	// r1 and r2 share an update time: the ID breaks the tie.
	for i, d := range []struct {
		id, state string
		at        time.Duration
	}{{"r3", "hash_only", 3 * time.Hour}, {"r2", store.DumpUploaded, time.Hour}, {"r1", store.DumpUploaded, time.Hour}, {"r4", store.DumpUploaded, 4 * time.Hour}} {
		must(t, "PutDump", s.PutDump(ctx, store.Dump{ID: d.id, AgentID: "a1", State: "hashed", SHA256: fmt.Sprintf("%064x", i), Size: 10, Updated: t0}))
		must(t, "SetDumpProgress", s.SetDumpProgress(ctx, d.id, 10, 5, d.state, "", t0.Add(d.at)))
	}
	all, err := s.OldestDumps(ctx, store.DumpAgeQuery{})
	must(t, "OldestDumps", err)
	if got := fmt.Sprint(dumpIDs(all)); got != "[r1 r2 r3 r4]" {
		t.Fatalf("OldestDumps = %s, want [r1 r2 r3 r4]", got)
	}
	old, err := s.OldestDumps(ctx, store.DumpAgeQuery{UpdatedBefore: t0.Add(4 * time.Hour)})
	must(t, "OldestDumps before", err)
	if got := fmt.Sprint(dumpIDs(old)); got != "[r1 r2 r3]" {
		t.Fatalf("OldestDumps(before 4h) = %s, want [r1 r2 r3] (the cut-off is exclusive)", got)
	}
	up, err := s.OldestDumps(ctx, store.DumpAgeQuery{UploadedOnly: true, Limit: 2})
	must(t, "OldestDumps uploaded", err)
	if got := fmt.Sprint(dumpIDs(up)); got != "[r1 r2]" {
		t.Fatalf("OldestDumps(uploaded, limit 2) = %s, want [r1 r2]", got)
	}
	next, err := s.OldestDumps(ctx, store.DumpAgeQuery{UploadedOnly: true, AfterUpdated: up[1].Updated, AfterID: up[1].ID})
	must(t, "OldestDumps next page", err)
	if got := fmt.Sprint(dumpIDs(next)); got != "[r4]" {
		t.Fatalf("OldestDumps(uploaded, after r2) = %s, want [r4]", got)
	}
}

func testDeleteDump(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	sum := fmt.Sprintf("%064x", 7)
	for _, id := range []string{"x1", "x2"} { // the same content twice
		must(t, "PutDump", s.PutDump(ctx, store.Dump{ID: id, AgentID: "a1", State: "hashed", SHA256: sum, Size: 10, Updated: t0}))
	}
	must(t, "MarkDumpRead", s.MarkDumpRead(ctx, "x1", t0.Add(2*time.Minute)))
	must(t, "MarkDumpRead earlier", s.MarkDumpRead(ctx, "x1", t0.Add(time.Minute))) // never moves back
	wantErr(t, "MarkDumpRead missing", s.MarkDumpRead(ctx, "nope", t0), store.ErrNotFound)

	_, err := s.DeleteDump(ctx, "x1", t0.Add(90*time.Second))
	wantErr(t, "DeleteDump while downloaded", err, store.ErrInUse)
	if _, err := s.GetDump(ctx, "x1"); err != nil {
		t.Fatalf("a refused delete removed the dump: %v", err)
	}
	d, err := s.DeleteDump(ctx, "x1", t0.Add(2*time.Minute)) // the mark is exclusive
	must(t, "DeleteDump after the download", err)
	if d.ID != "x1" || d.SHA256 != sum || d.Size != 10 {
		t.Fatalf("DeleteDump returned %+v", d)
	}
	_, err = s.GetDump(ctx, "x1")
	wantErr(t, "GetDump deleted", err, store.ErrNotFound)
	_, err = s.DeleteDump(ctx, "x1", t0)
	wantErr(t, "DeleteDump again", err, store.ErrNotFound)

	ref, err := s.BlobReferenced(ctx, sum)
	must(t, "BlobReferenced", err)
	if !ref {
		t.Fatal("BlobReferenced = false while x2 names the content")
	}
	_, err = s.DeleteDump(ctx, "x2", t0) // never read
	must(t, "DeleteDump x2", err)
	if ref, _ := s.BlobReferenced(ctx, sum); ref {
		t.Fatal("BlobReferenced = true with no dump left")
	}
	must(t, "PutArtifact", s.PutArtifact(ctx, store.Artifact{SHA256: sum, Kind: store.ArtifactDTraceMSI, Size: 10, Created: t0}))
	if ref, _ := s.BlobReferenced(ctx, sum); !ref {
		t.Fatal("BlobReferenced = false for an artifact's content")
	}
}

// testDeleteDumpRacesRead: a download marking the dump and a delete at once
// never both succeed.
func testDeleteDumpRacesRead(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i := range 20 {
		id := fmt.Sprintf("q%02d", i)
		must(t, "PutDump", s.PutDump(ctx, store.Dump{ID: id, AgentID: "a1", State: "hashed", SHA256: fmt.Sprintf("%064x", i), Size: 10, Updated: t0}))
		var wg sync.WaitGroup
		var markErr, delErr error
		wg.Add(2)
		go func() { defer wg.Done(); markErr = s.MarkDumpRead(ctx, id, t0.Add(time.Minute)) }()
		go func() { defer wg.Done(); _, delErr = s.DeleteDump(ctx, id, t0) }()
		wg.Wait()
		if (markErr == nil) == (delErr == nil) {
			t.Fatalf("%s: mark %v, delete %v: exactly one must win", id, markErr, delErr)
		}
	}
}

func testDeleteEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, c := range []string{"c1", "c2"} {
		must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: c, Spec: "{}", State: "done", Created: t0, Expires: t0.Add(time.Hour)},
			[]store.CaptureTarget{{AgentID: "a1", State: "armed"}}))
	}
	var evs []store.Event
	for i := range 10 { // e0..e9 a minute apart; odd ones in c2
		c := []string{"c1", "c2"}[i%2]
		evs = append(evs, store.Event{ID: fmt.Sprintf("e%d", i), CaptureID: c, AgentID: "a1", Time: t0.Add(time.Duration(i) * time.Minute),
			Process: "p.exe", Probe: "x", User: "[]", Kernel: "[]"})
	}
	_, err := s.InsertEvents(ctx, evs)
	must(t, "InsertEvents", err)
	left := func() int {
		n := 0
		for _, c := range []string{"c1", "c2"} {
			es, err := s.ListEvents(ctx, c, 0, 100)
			must(t, "ListEvents", err)
			n += len(es)
		}
		return n
	}

	for _, bad := range []store.EventPrune{{Limit: 10}, {CaptureID: "c1", UpToSeq: 3, Limit: 10}, {CaptureID: "c1"}, {CaptureID: "c1", Limit: store.MaxEventPrune + 1}} {
		if _, err := s.DeleteEvents(ctx, bad); err == nil {
			t.Fatalf("DeleteEvents(%+v) accepted", bad)
		}
	}
	if left() != 10 {
		t.Fatal("a refused DeleteEvents deleted events")
	}
	// Before e3, in batches of 2: e0, e1 then e2.
	n, err := s.DeleteEvents(ctx, store.EventPrune{Before: t0.Add(3 * time.Minute), Limit: 2})
	must(t, "DeleteEvents before", err)
	if n != 2 || left() != 8 {
		t.Fatalf("first batch deleted %d (left %d), want 2 (8)", n, left())
	}
	n, _ = s.DeleteEvents(ctx, store.EventPrune{Before: t0.Add(3 * time.Minute), Limit: 2})
	if n != 1 || left() != 7 {
		t.Fatalf("second batch deleted %d (left %d), want 1 (7)", n, left())
	}
	if _, err := s.EventSeq(ctx, "e2"); err == nil {
		t.Fatal("e2 survived")
	}
	// Keep the newest 4 of the 7 left (e3..e9): e3, e4, e5 go.
	upTo, err := s.EventSeqBeyond(ctx, 4)
	must(t, "EventSeqBeyond", err)
	want, _ := s.EventSeq(ctx, "e5")
	if upTo != want {
		t.Fatalf("EventSeqBeyond(4) = %d, want e5's seq %d", upTo, want)
	}
	if n, _ := s.DeleteEvents(ctx, store.EventPrune{UpToSeq: upTo, Limit: 100}); n != 3 || left() != 4 {
		t.Fatalf("DeleteEvents(up to e5) deleted %d, left %d; want 3, 4", n, left())
	}
	if seq, _ := s.EventSeqBeyond(ctx, 4); seq != 0 {
		t.Fatalf("EventSeqBeyond(4) with 4 events = %d, want 0", seq)
	}
	// One capture's: e7 and e9 are c2's.
	if n, _ := s.DeleteEvents(ctx, store.EventPrune{CaptureID: "c2", Limit: 100}); n != 2 || left() != 2 {
		t.Fatalf("DeleteEvents(c2) deleted %d, left %d; want 2, 2", n, left())
	}
}

func testDeleteCapture(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	mk := func(id, state string, expires time.Time) {
		must(t, "CreateCapture "+id, s.CreateCapture(ctx, store.Capture{ID: id, Spec: "{}", State: state, Created: t0, Expires: expires},
			[]store.CaptureTarget{{AgentID: "a1", State: "armed"}, {AgentID: "a2", State: "failed"}}))
	}
	mk("old", "done", t0.Add(time.Hour))
	mk("older", "cancelled", t0.Add(30*time.Minute))
	mk("live", "active", t0.Add(time.Hour))
	mk("dumps", "expired", t0.Add(time.Hour))
	mk("events", "done", t0.Add(time.Hour))
	mk("new", "done", t0.Add(5*time.Hour))
	must(t, "PutDump", s.PutDump(ctx, store.Dump{ID: "k1", AgentID: "a1", CaptureID: "dumps", State: "hash_only", Updated: t0}))
	_, err := s.InsertEvents(ctx, []store.Event{{ID: "ev1", CaptureID: "events", AgentID: "a1", Time: t0, Process: "p", Probe: "x", User: "[]", Kernel: "[]"}})
	must(t, "InsertEvents", err)

	ended, err := s.EndedCaptures(ctx, t0.Add(2*time.Hour), 0)
	must(t, "EndedCaptures", err)
	if got := fmt.Sprint(ended); got != "[older old]" {
		t.Fatalf("EndedCaptures = %s, want [older old] (earliest expiry first; not active, with dumps, with events, or newer)", got)
	}
	if one, _ := s.EndedCaptures(ctx, t0.Add(2*time.Hour), 1); len(one) != 1 {
		t.Fatalf("EndedCaptures limit 1 = %v", one)
	}

	wantErr(t, "DeleteCapture active", s.DeleteCapture(ctx, "live"), store.ErrInUse)
	wantErr(t, "DeleteCapture with dumps", s.DeleteCapture(ctx, "dumps"), store.ErrInUse)
	wantErr(t, "DeleteCapture missing", s.DeleteCapture(ctx, "nope"), store.ErrNotFound)
	for _, id := range []string{"live", "dumps"} {
		if ts, _ := s.ListTargets(ctx, id); len(ts) != 2 {
			t.Fatalf("refused delete of %s left %d targets", id, len(ts))
		}
	}
	must(t, "DeleteCapture with events", s.DeleteCapture(ctx, "events"))
	must(t, "DeleteCapture", s.DeleteCapture(ctx, "old"))
	for _, id := range []string{"events", "old"} {
		_, err := s.GetCapture(ctx, id)
		wantErr(t, "GetCapture deleted "+id, err, store.ErrNotFound)
		if ts, _ := s.ListTargets(ctx, id); len(ts) != 0 {
			t.Fatalf("deleted capture %s kept %d targets", id, len(ts))
		}
	}
	if _, err := s.EventSeq(ctx, "ev1"); err == nil {
		t.Fatal("a deleted capture's event survived")
	}
}

func testAcquireLease(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	ok, err := s.AcquireLease(ctx, "retention", "r1", t0, time.Minute)
	must(t, "AcquireLease", err)
	if !ok {
		t.Fatal("a free lease was not taken")
	}
	if ok, _ := s.AcquireLease(ctx, "retention", "r2", t0.Add(59*time.Second), time.Minute); ok {
		t.Fatal("r2 took r1's lease before it expired")
	}
	if ok, _ := s.AcquireLease(ctx, "other", "r2", t0, time.Minute); !ok {
		t.Fatal("leases of another name are not independent")
	}
	if ok, _ := s.AcquireLease(ctx, "retention", "r1", t0.Add(30*time.Second), time.Minute); !ok {
		t.Fatal("r1 could not renew its own lease")
	}
	if ok, _ := s.AcquireLease(ctx, "retention", "r2", t0.Add(89*time.Second), time.Minute); ok {
		t.Fatal("r2 took the lease r1 renewed")
	}
	if ok, _ := s.AcquireLease(ctx, "retention", "r2", t0.Add(90*time.Second), time.Minute); !ok {
		t.Fatal("r2 could not take the expired lease")
	}
	// Many replicas at once: exactly one gets a free lease.
	var mu sync.Mutex
	won := 0
	race(8, func(i int) {
		ok, err := s.AcquireLease(ctx, "race", fmt.Sprintf("r%d", i), t0, time.Minute)
		if err != nil {
			t.Error(err)
		}
		if ok {
			mu.Lock()
			won++
			mu.Unlock()
		}
	})
	if won != 1 {
		t.Fatalf("%d replicas took one lease at once", won)
	}
}
