package dumps

import (
	"context"
	"fmt"
	"slices"
	"time"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Linking dumps to the triggers that asked for them.
//
// Windows writes one live dump at a time and drops an lkd() made while a
// dump is being written; it may also throttle or fail a dump. So triggers
// and dump files do not pair up first in, first out. They are paired by
// time instead: the kernel starts writing at the end of the probe that
// called lkd(), so a dump belongs to the trigger closest before the dump
// started (its creation time, or on file systems without one the time the
// agent first saw it, which is later still), within expectTTL; a trigger
// at most linkSlack after the start is accepted only when none is before
// it (clock granularity). The trigger's event may reach the agent before
// or after the file appears, so a dump linked to an older trigger is
// linked again to a closer one that arrives later, as long as its upload
// has not started.
//
// A trigger that gets no dump is reported through Config.NoDump: "dropped"
// when it fired while another live dump was being written (between that
// dump's trigger and the end of its write), otherwise "no dump appeared"
// once a later trigger has taken a later dump or expectTTL has passed.

// noDump is a trigger that got no dump, to report.
type noDump struct {
	x      expectation
	reason string
}

// Expect records a trigger that called lkd() at time at (mode HASH_ONLY
// keeps the dump on the agent and reports only its hash; a dump linked to
// no trigger is uploaded) and links it to its dump if that is already
// known.
func (m *Manager) Expect(captureID, eventID, signature string, mode livedumpv1.UploadMode, at time.Time) {
	x := expectation{CaptureID: captureID, EventID: eventID, Signature: signature, Mode: uploadMode(mode), At: at}
	m.mu.Lock()
	var out []*livedumpv1.Dump
	if d := m.dumpFor(x); d != nil {
		if d.Linked {
			// x is closer before d than its trigger: that trigger's lkd()
			// did not make d.
			m.settleLocked(d.trigger(), m.reasonLocked(d.trigger()))
		}
		m.link(d, x)
		m.settleOlderLocked(x.At)
		d.Updated = m.clock.Now()
		out = append(out, m.snapshot(d))
	} else {
		m.expect = append(m.expect, x)
		slices.SortStableFunc(m.expect, func(a, b expectation) int { return a.At.Compare(b.At) })
		m.settleInProgressLocked()
	}
	m.saveLocked()
	notes := m.takeNotesLocked()
	m.mu.Unlock()
	m.report(out...)
	m.notify(notes)
}

// dumpFor finds the known dump a new trigger x is the best trigger for: the
// first dump that started at or after x (else the last one that started
// within linkSlack before it), if that dump is unlinked, or linked to a
// trigger further from its start than x and not yet being uploaded. The
// caller holds m.mu.
func (m *Manager) dumpFor(x expectation) *entry {
	var after, before *entry
	for _, e := range m.dumps {
		switch {
		case e.Created.Before(x.At.Add(-linkSlack)) || e.Created.After(x.At.Add(expectTTL)):
		case !e.Created.Before(x.At):
			if after == nil || e.Created.Before(after.Created) {
				after = e
			}
		default:
			if before == nil || e.Created.After(before.Created) {
				before = e
			}
		}
	}
	first := after
	if first == nil {
		first = before
	}
	switch {
	case first == nil:
		return nil
	case !first.linked():
		return first
	case !first.relinkable() || first.CaptureID != x.CaptureID:
		// The controller never moves a reported dump to another capture.
		return nil
	}
	if closer(x.At, first.TriggerAt, first.Created) {
		return first
	}
	return nil
}

// closer reports whether a trigger at a is a better trigger than one at b
// for a dump that started at start: before the start beats after it, and
// among those before, the later wins.
func closer(a, b, start time.Time) bool {
	aBefore, bBefore := !a.After(start), !b.After(start)
	if aBefore != bBefore {
		return aBefore
	}
	if aBefore {
		return a.After(b)
	}
	return a.Before(b)
}

// relinkable reports whether a dump's trigger may still change: not once
// its upload started or its hash-only report was sent.
func (e *entry) relinkable() bool {
	switch e.State {
	case stateWriting, stateHashed, stateAborted, stateTruncated:
		return !e.Pulled
	}
	return false
}

// trigger is the expectation a linked dump consumed.
func (e *entry) trigger() expectation {
	return expectation{CaptureID: e.CaptureID, EventID: e.EventID, Signature: e.Signature, Mode: e.Mode, At: e.TriggerAt}
}

// link attaches a trigger to a dump; the caller holds m.mu.
func (m *Manager) link(e *entry, x expectation) {
	e.CaptureID, e.EventID, e.Signature, e.TriggerAt = x.CaptureID, x.EventID, x.Signature, x.At
	if !e.Pulled {
		e.Mode = x.Mode
	}
	e.Linked = true
	if e.State == stateHashed && e.Mode == modeHashOnly {
		e.State, e.Detail = stateHashOnly, "hash-only capture"
		m.met.result(resultHashOnly)
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// linkNewLocked links a dump just found to the pending trigger closest
// before its start; the caller holds m.mu.
func (m *Manager) linkNewLocked(e *entry) {
	m.lapseLocked(e.Created)
	best := -1
	for i, x := range m.expect {
		if x.At.After(e.Created.Add(linkSlack)) || x.At.Before(e.Created.Add(-expectTTL)) {
			continue
		}
		if best < 0 || closer(x.At, m.expect[best].At, e.Created) {
			best = i
		}
	}
	if best < 0 {
		return
	}
	x := m.expect[best]
	m.expect = slices.Delete(m.expect, best, best+1)
	m.link(e, x)
	m.settleOlderLocked(x.At)
}

// settleOlderLocked reports the pending triggers older than at: a later
// trigger has its dump, so theirs will not come. The caller holds m.mu.
func (m *Manager) settleOlderLocked(at time.Time) {
	keep := m.expect[:0]
	for _, x := range m.expect {
		if x.At.Before(at) {
			m.settleLocked(x, m.reasonLocked(x))
			continue
		}
		keep = append(keep, x)
	}
	m.expect = keep
}

// settleInProgressLocked reports the pending triggers that fired while a
// dump linked to an earlier trigger was being written, once that dump is
// complete (its end is then known). The caller holds m.mu.
func (m *Manager) settleInProgressLocked() {
	keep := m.expect[:0]
	for _, x := range m.expect {
		if d := m.inProgressAt(x.At); d != nil && !d.Written.IsZero() {
			m.settleLocked(x, m.reasonLocked(x))
			continue
		}
		keep = append(keep, x)
	}
	m.expect = keep
}

// inProgressAt returns the dump that was being written at t, if one is
// known: linked to a trigger before t, and not finished before t.
func (m *Manager) inProgressAt(t time.Time) *entry {
	for _, d := range m.dumps {
		if !d.Linked || !d.TriggerAt.Before(t) {
			continue
		}
		end := d.Written
		if d.State == stateWriting && !d.Complete {
			end = time.Time{} // still being written
		}
		if end.IsZero() || !t.After(end) {
			return d
		}
	}
	return nil
}

// reasonLocked says why a trigger got no dump; the caller holds m.mu.
func (m *Manager) reasonLocked(x expectation) string {
	if d := m.inProgressAt(x.At); d != nil {
		return fmt.Sprintf("dump dropped (another live dump, %s, was being written: Windows writes one at a time)", d.Path)
	}
	return "no live dump appeared for it (Windows may have throttled or failed it)"
}

// lapseLocked reports the triggers that waited longer than expectTTL
// before now; the caller holds m.mu.
func (m *Manager) lapseLocked(now time.Time) {
	keep := m.expect[:0]
	for _, x := range m.expect {
		if x.At.Add(expectTTL).Before(now) {
			m.settleLocked(x, fmt.Sprintf("no live dump appeared within %v (Windows may have throttled or failed it)", expectTTL))
			continue
		}
		keep = append(keep, x)
	}
	m.expect = keep
}

// settleLocked queues the report of a trigger that got no dump.
func (m *Manager) settleLocked(x expectation, reason string) {
	m.log.Info("trigger got no live dump", "capture_id", x.CaptureID, "event_id", x.EventID, "at", x.At, "reason", reason)
	m.met.noDump.Inc()
	m.notes = append(m.notes, noDump{x: x, reason: reason})
}

func (m *Manager) takeNotesLocked() []noDump {
	n := m.notes
	m.notes = nil
	return n
}

// notify makes the NoDump calls; the caller must not hold m.mu.
func (m *Manager) notify(notes []noDump) {
	if m.cfg.NoDump == nil {
		return
	}
	for _, n := range notes {
		m.cfg.NoDump(n.x.CaptureID, n.x.EventID, n.x.At, n.reason)
	}
}

// Await waits until a dump linked to the capture is known and returns its
// file name: how an on-demand capture knows that its lkd() produced a file.
func (m *Manager) Await(ctx context.Context, captureID string) (string, error) {
	for {
		m.mu.Lock()
		for _, e := range m.dumps {
			if e.CaptureID == captureID {
				name := e.Path
				m.mu.Unlock()
				return name, nil
			}
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", context.Cause(ctx)
		case <-ch:
		}
	}
}
