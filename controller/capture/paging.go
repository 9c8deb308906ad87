package capture

import (
	"context"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// MessageBudget bounds a capture sent in one message where the API cannot
// page (the ended message of WatchCapture, the answers of CreateCapture and
// CancelCapture): well under gRPC's 4 MiB default message limit.
const MessageBudget = 1 << 20

// itemOverhead is what a repeated message field adds to an item's size: its
// tag and length prefix, rounded up.
const itemOverhead = 8

// Trim returns c with only as many targets as fit in budget encoded bytes,
// counting the others in OmittedTargets (Events still counts every
// target's events). c itself is returned when it fits; otherwise a copy, as
// c may be shared.
func Trim(c *livedumpv1.Capture, budget int) *livedumpv1.Capture {
	if c == nil || budget <= 0 || proto.Size(c) <= budget {
		return c
	}
	cp := proto.Clone(c).(*livedumpv1.Capture)
	all := cp.Targets
	cp.Targets = nil
	cp.Targets = fitTargets(all, proto.Size(cp)+16, budget)
	cp.OmittedTargets += int64(len(all) - len(cp.Targets))
	return cp
}

// fitTargets returns the longest prefix of targets that fits in budget
// after size bytes already used.
func fitTargets(targets []*livedumpv1.CaptureTarget, size, budget int) []*livedumpv1.CaptureTarget {
	for i, t := range targets {
		size += proto.Size(t) + itemOverhead
		if size > budget {
			return targets[:i]
		}
	}
	return targets
}

// GetPage returns a capture with the page of its targets (by agent ID) that
// follows the agent ID after and fits in budget encoded bytes, at least one
// target when any follows. OmittedTargets counts the targets on other
// pages; next is the agent ID to read on from, empty after the last page.
func (l *lifecycle) GetPage(ctx context.Context, id, after string, budget int) (*livedumpv1.Capture, string, error) {
	c, err := l.store.GetCapture(ctx, id)
	if err != nil {
		return nil, "", err
	}
	targets, err := l.store.ListTargets(ctx, id)
	if err != nil {
		return nil, "", err
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].AgentID < targets[j].AgentID })
	start := sort.Search(len(targets), func(i int) bool { return targets[i].AgentID > after })
	p, err := toProto(c, nil, nil)
	if err != nil {
		return nil, "", err
	}
	tally(p, targets)
	p.OfflineTargets = countOffline(ctx, l.online, targets)
	// The page is chosen with the longest hostname allowed, then named.
	size := proto.Size(p) + 16
	end := start
	for end < len(targets) {
		n := proto.Size(targetProto(targets[end], "")) + itemOverhead + maxHostname
		if end > start && size+n > budget {
			break
		}
		size += n
		end++
	}
	page := targets[start:end]
	want := map[string]bool{}
	for _, t := range page {
		want[t.AgentID] = true
	}
	hosts, err := store.Hostnames(ctx, l.store, want)
	if err != nil {
		return nil, "", err
	}
	for _, t := range page {
		p.Targets = append(p.Targets, targetProto(t, hosts[t.AgentID]))
	}
	p.OmittedTargets = int64(len(targets) - len(page))
	next := ""
	if end < len(targets) && end > start {
		next = targets[end-1].AgentID
	}
	return p, next, nil
}

// maxHostname is the longest hostname an agent may report (the API's
// inventory bound) with its field's tag and length.
const maxHostname = 256 + 3

// ListPage returns captures newest first (then by ID) that come after the
// capture (afterCreated, afterID) when afterID is set, as many as fit in
// budget encoded bytes and at least one. A capture larger than the budget
// by itself is trimmed (see Trim). more reports whether a capture follows.
func (l *lifecycle) ListPage(ctx context.Context, afterCreated time.Time, afterID string, budget int) ([]*livedumpv1.Capture, bool, error) {
	cs, err := l.store.ListCaptures(ctx, "")
	if err != nil {
		return nil, false, err
	}
	before := func(a, b store.Capture) bool { // a is listed before b
		if !a.Created.Equal(b.Created) {
			return a.Created.After(b.Created)
		}
		return a.ID < b.ID
	}
	sort.SliceStable(cs, func(i, j int) bool { return before(cs[i], cs[j]) })
	start := 0
	if afterID != "" {
		pos := store.Capture{Created: afterCreated, ID: afterID}
		start = sort.Search(len(cs), func(i int) bool { return before(pos, cs[i]) })
	}
	var out []*livedumpv1.Capture
	size := 0
	for _, c := range cs[start:] {
		targets, err := l.store.ListTargets(ctx, c.ID)
		if err != nil {
			return nil, false, err
		}
		p, err := toProto(c, targets, nil)
		if err != nil {
			return nil, false, err
		}
		p.OfflineTargets = countOffline(ctx, l.online, targets)
		p = Trim(p, budget)
		n := proto.Size(p) + itemOverhead
		if len(out) > 0 && size+n > budget {
			return out, true, nil
		}
		size += n
		out = append(out, p)
	}
	return out, false, nil
}
