package main

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/livedump/livedump/internal/stack"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Frames and stack signatures are written in one notation everywhere
// livedumpctl prints them, the debugger's (WinDbg): module!function+0xoffset.
// A bucket's signature (made by the controller) is a run of the same frames
// without their offsets, so a frame in "capture watch" or "events list"
// reads as the signature's token followed by its offset:
//
//	watch:   ms-teams!WorkerThread::Run+0x4c
//	bucket:  ntdll!NtCreateFile < ms-teams!WorkerThread::Run < ...
//
// A frame whose module is known but not its symbol is module!?+0xNNNN, the
// low 16 bits of its address (as in the signature: they are the same on
// every machine running the build); a bare address is 0xADDR.

// frameString renders one stack frame (see above).
func frameString(f *livedumpv1.Frame) string { return stack.Frame(f) }

// writeEvent prints one event: a line naming the machine, the process and
// the status, then, with stacks, its frames innermost first, indented, the
// way dtrace prints stacks.
func writeEvent(w io.Writer, ev *livedumpv1.TriggerEvent, stacks bool) {
	host := ev.GetHostname()
	if host == "" {
		host = ev.GetAgentId()
	}
	fmt.Fprintf(w, "%s %s %s pid=%d tid=%d %s %s\n", formatTime(ev.GetTime()), cell(host), cell(ev.GetProcess()),
		ev.GetPid(), ev.GetTid(), cell(ev.GetProbe()), statusString(ev))
	if !stacks {
		return
	}
	for _, f := range ev.GetUserFrames() {
		fmt.Fprintln(w, "    "+cell(frameString(f)))
	}
	if len(ev.GetKernelFrames()) > 0 {
		fmt.Fprintln(w, "    -- kernel --")
		for _, f := range ev.GetKernelFrames() {
			fmt.Fprintln(w, "    "+cell(frameString(f)))
		}
	}
}

// writeBuckets prints the bucket table of "events buckets" and of "capture
// watch --summary".
func writeBuckets(w io.Writer, buckets []*livedumpv1.Bucket) error {
	t := newTable(w, "COUNT", "AGENTS", "FIRST SEEN", "LAST SEEN", "SIGNATURE")
	for _, b := range buckets {
		agents := strings.Join(b.GetAgents(), ",")
		if more := b.GetAgentCount() - int64(len(b.GetAgents())); more > 0 {
			agents += fmt.Sprintf(",+%d", more)
		}
		t.row(strconv.FormatInt(b.GetCount(), 10), agents, formatTime(b.GetFirstSeen()), formatTime(b.GetLastSeen()), b.GetSignature())
	}
	return t.flush()
}

// liveBucketRows bounds the table redrawn on a terminal; the final table
// has every bucket.
const liveBucketRows = 20

// maxBucketHosts bounds the hostnames a bucket lists, as the controller's
// buckets do.
const maxBucketHosts = 100

// bucketSummary is capture watch --summary: the capture's events grouped
// by stack signature as they arrive, with the targets' states. On a
// terminal (live) it redraws itself in place at every change; otherwise it
// is printed once, at the end.
type bucketSummary struct {
	w       io.Writer
	live    bool
	id      string
	buckets map[string]*livedumpv1.Bucket
	hosts   map[string]map[string]bool // signature -> hostnames
	targets map[string]string          // agent ID -> state name
	events  int64
	drawn   int // lines of the last live drawing
	done    bool
}

func newBucketSummary(w io.Writer, live bool) *bucketSummary {
	return &bucketSummary{w: w, live: live, buckets: map[string]*livedumpv1.Bucket{}, hosts: map[string]map[string]bool{}, targets: map[string]string{}}
}

func (s *bucketSummary) add(ev *livedumpv1.TriggerEvent) {
	s.id = ev.GetCaptureId()
	sig := ev.GetSignature()
	if sig == "" {
		sig = "(no signature)"
	}
	b := s.buckets[sig]
	if b == nil {
		b = &livedumpv1.Bucket{Signature: sig, FirstSeen: ev.GetTime(), LastSeen: ev.GetTime()}
		s.buckets[sig] = b
		s.hosts[sig] = map[string]bool{}
	}
	b.Count++
	s.events++
	if t := ev.GetTime(); t != nil {
		if b.FirstSeen == nil || t.AsTime().Before(b.FirstSeen.AsTime()) {
			b.FirstSeen = t
		}
		if b.LastSeen == nil || t.AsTime().After(b.LastSeen.AsTime()) {
			b.LastSeen = t
		}
	}
	s.hosts[sig][ev.GetHostname()] = true
	s.draw()
}

func (s *bucketSummary) target(tg *livedumpv1.CaptureTarget) {
	s.targets[tg.GetAgentId()] = targetStateName(tg.GetState())
	s.draw()
}

// finish draws the last table: the capture ended (c), or the watch stopped
// (nil). A nil summary does nothing.
func (s *bucketSummary) finish(c *livedumpv1.Capture) {
	if s == nil || s.done {
		return
	}
	s.done = true
	if c != nil {
		s.id = c.GetId()
	}
	s.render(true)
}

func (s *bucketSummary) draw() {
	if s.live {
		s.render(false)
	}
}

// sorted returns the buckets largest first, as the controller orders them.
func (s *bucketSummary) sorted() []*livedumpv1.Bucket {
	out := make([]*livedumpv1.Bucket, 0, len(s.buckets))
	for sig, b := range s.buckets {
		hosts := make([]string, 0, len(s.hosts[sig]))
		for h := range s.hosts[sig] {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		b.AgentCount = int64(len(hosts))
		b.Agents = hosts[:min(len(hosts), maxBucketHosts)]
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetCount() != out[j].GetCount() {
			return out[i].GetCount() > out[j].GetCount()
		}
		return out[i].GetSignature() < out[j].GetSignature()
	})
	return out
}

func (s *bucketSummary) render(final bool) {
	var buf bytes.Buffer
	by := map[string]int64{}
	for _, st := range s.targets {
		by[st]++
	}
	n := countTargets(&livedumpv1.Capture{TargetCounts: by})
	id := s.id
	if id == "" {
		id = "capture"
	}
	fmt.Fprintf(&buf, "%s: %d events in %d buckets; targets %s\n", id, s.events, len(s.buckets), n)
	rows := s.sorted()
	more := 0
	if !final && len(rows) > liveBucketRows {
		rows, more = rows[:liveBucketRows], len(rows)-liveBucketRows
	}
	_ = writeBuckets(&buf, rows)
	if more > 0 {
		fmt.Fprintf(&buf, "... %d smaller buckets\n", more)
	}
	if s.live && s.drawn > 0 {
		// Up to the first line of the last drawing, and clear to the end
		// of the screen.
		fmt.Fprintf(s.w, "\x1b[%dA\x1b[J", s.drawn)
	}
	s.drawn = bytes.Count(buf.Bytes(), []byte("\n"))
	_, _ = s.w.Write(buf.Bytes())
}
