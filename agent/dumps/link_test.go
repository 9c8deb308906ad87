package dumps

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// noDumps records Config.NoDump calls.
type noDumps struct {
	mu  sync.Mutex
	got map[string]string // event ID -> reason
}

func (n *noDumps) add(_, eventID string, _ time.Time, reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.got == nil {
		n.got = map[string]string{}
	}
	n.got[eventID] = reason
}

func (n *noDumps) reason(eventID string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.got[eventID]
}

// TestLinkByTimeAndReportDropped: Windows writes one live dump at a time.
// Trigger A starts dump 1; B fires while dump 1 is being written and is
// dropped; C fires after it and gets dump 2. First in, first out would
// give dump 2 to B; by time it goes to C, and B is reported as dropped.
// The trigger events reach the agent after the files appear, as they do
// from dtrace.
func TestLinkByTimeAndReportDropped(t *testing.T) {
	h := newHarness(t)
	nd := &noDumps{}
	cfg := h.config()
	cfg.NoDump = nd.add
	m := h.start(&cfg)

	tA := time.Now()
	d1 := filepath.Join(h.dir, "DTRACE-20261126-1405.dmp")
	content := dumpLike(256<<10, 1)
	writeFile(t, d1, content[:64<<10]) // dump 1 being written
	h.wait(filepath.Base(d1), writing)
	m.Expect("cap", "ev-a", "", livedumpv1.UploadMode_UPLOAD_MODE_FULL, tA)
	time.Sleep(50 * time.Millisecond)
	tB := time.Now() // lkd() while dump 1 is written: dropped by Windows
	m.Expect("cap", "ev-b", "", livedumpv1.UploadMode_UPLOAD_MODE_FULL, tB)
	time.Sleep(50 * time.Millisecond)
	writeFile(t, d1, content) // dump 1 ends
	if d := h.wait(filepath.Base(d1), uploaded); d.GetEventId() != "ev-a" {
		t.Fatalf("dump 1 linked to %q, want ev-a", d.GetEventId())
	}
	waitFor(t, "B reported dropped", func() bool { return nd.reason("ev-b") != "" })
	if r := nd.reason("ev-b"); !strings.Contains(r, "dump dropped (another live dump, DTRACE-20261126-1405.dmp, was being written") {
		t.Fatalf("B's reason %q", r)
	}

	time.Sleep(50 * time.Millisecond)
	tC := time.Now()
	time.Sleep(10 * time.Millisecond)
	d2 := filepath.Join(h.dir, "DTRACE-20261126-1406.dmp")
	writeFile(t, d2, dumpLike(64<<10, 2))
	h.wait(filepath.Base(d2), writing)
	m.Expect("cap", "ev-c", "", livedumpv1.UploadMode_UPLOAD_MODE_FULL, tC)
	if d := h.wait(filepath.Base(d2), uploaded); d.GetEventId() != "ev-c" {
		t.Fatalf("dump 2 linked to %q, want ev-c (FIFO would say ev-b)", d.GetEventId())
	}
	if r := nd.reason("ev-c"); r != "" {
		t.Fatalf("C reported without a dump: %q", r)
	}
}

// TestRelinkToCloserTrigger: a dump first linked to an older pending
// trigger (throttled by Windows, so it never got a dump) moves to the
// closer trigger that arrives later; the older one is reported.
func TestRelinkToCloserTrigger(t *testing.T) {
	h := newHarness(t)
	nd := &noDumps{}
	cfg := h.config()
	cfg.NoDump = nd.add
	cfg.Exclusive = func(string) bool { return nd.reason("ev-old") != "" } // hold the dump until relinked
	m := h.start(&cfg)
	m.Expect("cap", "ev-old", "", livedumpv1.UploadMode_UPLOAD_MODE_FULL, time.Now().Add(-time.Minute))
	tNew := time.Now()
	time.Sleep(10 * time.Millisecond)
	name := "DTRACE-20261126-1407.dmp"
	writeFile(t, filepath.Join(h.dir, name), dumpLike(64<<10, 3))
	if d := h.wait(name, writing); d.GetEventId() != "ev-old" {
		t.Fatalf("first link %q, want ev-old (the only trigger known)", d.GetEventId())
	}
	m.Expect("cap", "ev-new", "", livedumpv1.UploadMode_UPLOAD_MODE_FULL, tNew)
	if d := h.wait(name, uploaded); d.GetEventId() != "ev-new" {
		t.Fatalf("dump linked to %q, want ev-new", d.GetEventId())
	}
	if r := nd.reason("ev-old"); !strings.Contains(r, "no live dump appeared") {
		t.Fatalf("ev-old reason %q", r)
	}
}

// TestTruncatedDumpNeverUploaded: a dump whose size is stable but shorter
// than its header declares (power loss, a dtrace killed mid-dump in the
// simulator) is TRUNCATED, with the header's facts, and not uploaded; if
// it grows again it is watched again.
func TestTruncatedDumpNeverUploaded(t *testing.T) {
	h := newHarness(t)
	h.start(nil)
	name := "DTRACE-20261126-1408.dmp"
	full := dumpLike(512<<10, 4)
	p := filepath.Join(h.dir, name)
	writeFile(t, p, full[:200<<10])
	d := h.wait(name, truncated)
	if !strings.Contains(d.GetDetail(), "204800 of the 524288 bytes its header declares") || d.GetDeclaredSize() != 512<<10 ||
		d.GetDumpType() != "full" || d.GetBugCheckCode() != 0xE2 || d.GetOsBuild() != 26100 {
		t.Fatalf("truncated dump %v", d)
	}
	time.Sleep(3 * h.config().Rescan)
	if st := h.states(name); st[len(st)-1] != truncated {
		t.Fatalf("states %v", st)
	}
	if err := h.m.Pull(d.GetId()); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("pull of a truncated dump: %v", err)
	}
	if err := os.WriteFile(p, full, 0o600); err != nil {
		t.Fatal(err)
	}
	if d := h.wait(name, uploaded); d.GetSize() != 512<<10 {
		t.Fatalf("%v", d)
	}
}

// TestAwait returns once a dump linked to the capture is known.
func TestAwait(t *testing.T) {
	h := newHarness(t)
	m := h.start(nil)
	m.Expect("cap-od", "", "", livedumpv1.UploadMode_UPLOAD_MODE_FULL, time.Now())
	got := make(chan string, 1)
	go func() {
		name, _ := m.Await(t.Context(), "cap-od")
		got <- name
	}()
	writeFile(t, filepath.Join(h.dir, "DTRACE-20261126-1409.dmp"), dumpLike(64<<10, 5))
	select {
	case name := <-got:
		if name != "DTRACE-20261126-1409.dmp" {
			t.Fatalf("Await: %q", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return")
	}
}
