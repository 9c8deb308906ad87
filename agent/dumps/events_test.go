package dumps

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livedump/livedump/agent/host"
)

// eventLog is a settable Kernel-LiveDump event log.
type eventLog struct {
	mu  sync.Mutex
	evs []host.LiveDumpEvent
}

func (l *eventLog) add(e host.LiveDumpEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) read(_ context.Context, since time.Time) ([]host.LiveDumpEvent, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []host.LiveDumpEvent
	for _, e := range l.evs {
		if !e.Time.Before(since) {
			out = append(out, e)
		}
	}
	return out, nil
}

func TestEventLogCompletesADumpWithoutWaiting(t *testing.T) {
	h := newHarness(t)
	log := &eventLog{}
	cfg := h.config()
	cfg.Events = log.read
	cfg.StableFor = time.Hour // only the event log can complete it in time
	h.start(&cfg)
	name := "DTRACE-20261126-1405.dmp"
	data := dumpLike(3<<20, 7)
	if err := os.WriteFile(filepath.Join(h.dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	// A write-ended event for another size does not complete this dump.
	log.add(host.LiveDumpEvent{ID: host.EventDumpWriteEnd, Time: time.Now(), TotalBytes: 12345})
	time.Sleep(300 * time.Millisecond)
	log.add(host.LiveDumpEvent{ID: host.EventDumpWriteEnd, Time: time.Now(), TotalBytes: uint64(len(data))})
	d := h.wait(name, uploaded)
	if d.GetSize() != int64(len(data)) {
		t.Fatalf("size %d", d.GetSize())
	}
}

func TestEventLogDiskFullAbortsTheDump(t *testing.T) {
	h := newHarness(t)
	log := &eventLog{}
	cfg := h.config()
	cfg.Events = log.read
	cfg.StableFor = time.Hour
	h.start(&cfg)
	name := "DTRACE-20261126-1406.dmp"
	if err := os.WriteFile(filepath.Join(h.dir, name), dumpLike(1<<20, 8), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	// A failure event that names no component may be another component's
	// dump (events 4 and 202 document no component field): not ours.
	log.add(host.LiveDumpEvent{ID: host.EventDumpDiskFull, Time: time.Now(), NTStatus: 0xC000007F})
	time.Sleep(5 * h.config().Rescan)
	if st := h.states(name); slices.Contains(st, aborted) {
		t.Fatalf("a disk-full event naming no component aborted our dump: %v", st)
	}
	log.add(host.LiveDumpEvent{ID: host.EventDumpDiskFull, Time: time.Now(), NTStatus: 0xC000007F, Component: "DTRACE"})
	d := h.wait(name, aborted)
	if !strings.Contains(d.GetDetail(), "disk full") || !strings.Contains(d.GetDetail(), "0xC000007F") {
		t.Fatalf("detail %q", d.GetDetail())
	}
}
