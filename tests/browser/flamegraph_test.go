//go:build unix

package browser

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/flamegraph"
)

// signatureFrames is how many counted frames make a signature (the
// controller's default, and `events buckets`' --frames default).
const signatureFrames = 5

// unresolved is the token of a run of bare-address frames.
const unresolved = "<unresolved>"

// TestFlameGraphMatchesBuckets opens the stacks capture's flame graph and
// checks its frames and counts against `livedumpctl events buckets`: every
// node where stacks end, read back to its signature, accounts for the
// buckets' counts exactly; the root counts every event; the per-machine
// graph counts only that machine's events.
func TestFlameGraphMatchesBuckets(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)
	e.waitStacksDone(t)
	ctx := e.tab(t, e.admin)
	id := e.stacksCapture

	buckets := e.buckets(t, id)
	var total int64
	want := map[string]int64{} // user part of the signature -> events
	for _, b := range buckets {
		total += b.Count
		want[userPart(b.Signature)] += b.Count
	}
	if total == 0 {
		t.Fatal("the stacks capture has no events")
	}

	// The whole capture.
	open(t, ctx, e.admin, "/captures/"+id+"/flamegraph?stack=user")
	root := e.pageGraph(t, ctx)
	if root.Count != total {
		t.Errorf("flame graph root: %d events, want %d (events buckets)", root.Count, total)
	}
	got := map[string]int64{}
	walk(root, nil, func(path []string, n *flamegraph.Node) {
		if n.Self > 0 {
			got[pathKey(path)] += n.Self
		}
	})
	if !equalCounts(got, want) {
		t.Errorf("flame graph ends of stacks, by signature (innermost %d frames):\n%s\nevents buckets:\n%s",
			signatureFrames, formatCounts(got), formatCounts(want))
	}

	t.Logf("flame graph of %s: %d events, %d signatures, as events buckets", id, root.Count, len(got))

	// The same graph as image/svg+xml.
	type svgResp struct {
		Status int    `json:"status"`
		Type   string `json:"type"`
		Body   string `json:"body"`
	}
	r := eval[svgResp](t, ctx, `fetch("/captures/`+id+`/flamegraph.svg?stack=user").then(async r => ({status: r.status, type: r.headers.get("content-type"), body: await r.text()}))`)
	if r.Status != 200 || !strings.HasPrefix(r.Type, "image/svg+xml") {
		t.Errorf("flamegraph.svg: HTTP %d, %s", r.Status, r.Type)
	} else if svgRoot, err := flamegraph.Decode(strings.NewReader(r.Body)); err != nil {
		t.Errorf("flamegraph.svg: %v", err)
	} else if svgRoot.Count != total {
		t.Errorf("flamegraph.svg root: %d events, want %d", svgRoot.Count, total)
	}

	// Per machine: the graph for one agent counts only its events.
	events := e.eventHosts(t, id)
	for agentID, host := range e.agents(t, vdiSelector) {
		open(t, ctx, e.admin, "/captures/"+id+"/flamegraph?stack=user&agent="+url.QueryEscape(agentID))
		if page := eval[string](t, ctx, `document.body.innerHTML`); !strings.Contains(page, "agent="+agentID) && !strings.Contains(page, `value="`+agentID+`"`) {
			t.Errorf("flame graph page: no filter link or option for agent %s (%s)", agentID, host)
		}
		g := e.pageGraph(t, ctx)
		if g.Count != events[host] {
			t.Errorf("flame graph for %s (%s): %d events, want %d (events list: %v)", host, agentID, g.Count, events[host], events)
		}
		t.Logf("flame graph for %s: %d events, as events list --agent", host, g.Count)
		if g.Count == total {
			t.Errorf("flame graph for %s counts all %d events of the capture", host, total)
		}
	}
}

// waitStacksDone waits until both targets of the stacks capture reached
// their per-agent cap and its events stopped changing.
func (e *env) waitStacksDone(t *testing.T) {
	t.Helper()
	var last int64 = -1
	err := waitFor(120*time.Second, func() error {
		var c struct {
			Targets []struct {
				State string `json:"state"`
			} `json:"targets"`
		}
		if err := e.ctlJSON(&c, "capture", "get", e.stacksCapture); err != nil {
			return err
		}
		done := 0
		for _, tg := range c.Targets {
			if tg.State == "TARGET_STATE_DONE" {
				done++
			}
		}
		var n int64
		for _, b := range e.buckets(t, e.stacksCapture) {
			n += b.Count
		}
		if done != 2 || n != last {
			last = n
			time.Sleep(time.Second)
			return fmt.Errorf("%d of 2 targets done, %d events", done, n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the stacks capture %s: %v", e.stacksCapture, err)
	}
}

type bucket struct {
	Count     int64  `json:"count,string"`
	Signature string `json:"signature"`
}

// buckets is `livedumpctl events buckets --capture ID -o json`.
func (e *env) buckets(t *testing.T, id string) []bucket {
	t.Helper()
	var resp struct {
		Buckets []bucket `json:"buckets"`
	}
	if err := e.ctlJSON(&resp, "events", "buckets", "--capture", id); err != nil {
		t.Fatal(err)
	}
	return resp.Buckets
}

// eventHosts counts the capture's events by hostname (`events list`).
func (e *env) eventHosts(t *testing.T, id string) map[string]int64 {
	t.Helper()
	var resp struct {
		Events []struct {
			Hostname string `json:"hostname"`
		} `json:"events"`
	}
	if err := e.ctlJSON(&resp, "events", "list", "--capture", id, "--limit", "10000"); err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, ev := range resp.Events {
		m[ev.Hostname]++
	}
	return m
}

// userPart is the user frames of a bucket's signature, as the controller
// writes them (controller/capture/signature.go): a full signature is the
// frames joined by " < "; a qualified one is "PROBE[ in PROCESS]: USER[ |
// KERNEL]", where USER is frames, <unresolved>, or "no user frames".
func userPart(sig string) string {
	i := strings.Index(sig, ": ")
	if i < 0 || strings.Contains(sig[:i], " < ") {
		return sig
	}
	u := sig[i+2:]
	if j := strings.Index(u, " | "); j >= 0 {
		u = u[:j]
	}
	return u
}

// pathKey makes the signature's user part from a flame graph path
// (outermost frame first) as the controller does: innermost first, up to
// signatureFrames counted frames, runs of <unresolved> as one uncounted
// token, a trailing one dropped.
func pathKey(path []string) string {
	var tokens []string
	counted := 0
	for i := len(path) - 1; i >= 0 && counted < signatureFrames; i-- {
		switch f := path[i]; {
		case f != unresolved:
			tokens = append(tokens, f)
			counted++
		case len(tokens) == 0 || tokens[len(tokens)-1] != unresolved:
			tokens = append(tokens, unresolved)
		}
	}
	if n := len(tokens); n > 0 && tokens[n-1] == unresolved && counted > 0 {
		tokens = tokens[:n-1]
	}
	if len(tokens) == 0 {
		return "no user frames"
	}
	return strings.Join(tokens, " < ")
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func formatCounts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %5d %s\n", m[k], k)
	}
	return b.String()
}

// pageGraph decodes the tab's inline svg#flamegraph (flamegraph.Decode
// gives the nodes drawn; a node too narrow to draw would count in its
// parent's Self, which would show here as a signature the buckets lack:
// the lab's few dozen events on few paths draw every node).
func (e *env) pageGraph(t *testing.T, ctx context.Context) *flamegraph.Node {
	t.Helper()
	svg := eval[string](t, ctx, `(s => s ? new XMLSerializer().serializeToString(s) : "")(document.querySelector("svg#flamegraph"))`)
	if svg == "" {
		t.Fatal("no svg#flamegraph on the page")
	}
	n, err := flamegraph.Decode(strings.NewReader(svg))
	if err != nil {
		t.Fatalf("svg#flamegraph: %v", err)
	}
	return n
}

// walk calls f on n and every node below it, with its path from the root
// (the root "all" left out, outermost frame first).
func walk(n *flamegraph.Node, path []string, f func(path []string, n *flamegraph.Node)) {
	f(path, n)
	for _, c := range n.Children {
		walk(c, append(path[:len(path):len(path)], c.Name), f)
	}
}
