package dumps

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// TestOpenMarksTheDumpRead: an open download counts here (Reading) and in
// the store (a delete is refused) until its reader is closed, and a second
// Close releases nothing twice.
func TestOpenMarksTheDumpRead(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	raw, sum := content(1 << 20)
	d := dumpOf("aaaaaaaa11", raw, sum)
	if err := f.upload("agent-1", &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}); err != nil {
		t.Fatal(err)
	}
	_, r1, err := f.r.Open(ctx, d.GetId())
	if err != nil {
		t.Fatal(err)
	}
	_, r2, err := f.r.Open(ctx, d.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if !f.r.Reading(d.GetId()) {
		t.Fatal("Reading = false with two downloads open")
	}
	if _, err := f.st.DeleteDump(ctx, d.GetId(), time.Now()); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("DeleteDump during a download = %v, want ErrInUse", err)
	}
	r1.Close()
	r1.Close()
	if !f.r.Reading(d.GetId()) {
		t.Fatal("closing one download (twice) released the other")
	}
	r2.Close()
	if f.r.Reading(d.GetId()) {
		t.Fatal("Reading = true after every download closed")
	}
	// The store's mark outlives the download by at most ReadLease.
	if _, err := f.st.DeleteDump(ctx, d.GetId(), time.Now().Add(ReadLease+time.Second)); err != nil {
		t.Fatalf("DeleteDump after the read lease: %v", err)
	}
	if _, _, err := f.r.Open(ctx, d.GetId()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Open of a deleted dump = %v, want ErrNotFound", err)
	}
	if f.r.Reading(d.GetId()) {
		t.Fatal("a failed Open left a reader counted")
	}
}
