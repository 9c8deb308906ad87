package browser

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
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
	root.walk(nil, func(path []string, n *node) {
		if n.Self > 0 {
			got[pathKey(path)] += n.Self
		}
	})
	if !equalCounts(got, want) {
		t.Errorf("flame graph ends of stacks, by signature (innermost %d frames):\n%s\nevents buckets:\n%s",
			signatureFrames, formatCounts(got), formatCounts(want))
	}

	// The same graph as image/svg+xml.
	type svgResp struct {
		Status int    `json:"status"`
		Type   string `json:"type"`
		Body   string `json:"body"`
	}
	r := eval[svgResp](t, ctx, `fetch("/captures/`+id+`/flamegraph.svg?stack=user").then(async r => ({status: r.status, type: r.headers.get("content-type"), body: await r.text()}))`)
	if r.Status != 200 || !strings.HasPrefix(r.Type, "image/svg+xml") {
		t.Errorf("flamegraph.svg: HTTP %d, %s", r.Status, r.Type)
	} else if svgRoot, err := decodeGraph(strings.NewReader(r.Body)); err != nil {
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

// pageGraph decodes the tab's inline svg#flamegraph.
func (e *env) pageGraph(t *testing.T, ctx context.Context) *node {
	t.Helper()
	svg := eval[string](t, ctx, `(s => s ? s.outerHTML : "")(document.querySelector("svg#flamegraph"))`)
	if svg == "" {
		t.Fatal("no svg#flamegraph on the page")
	}
	n, err := decodeGraph(strings.NewReader(svg))
	if err != nil {
		t.Fatalf("svg#flamegraph: %v", err)
	}
	return n
}

// node is a frame of the flame graph as drawn.
type node struct {
	Name     string
	Count    int64 // events whose stack passes here
	Self     int64 // events whose stack ends here
	Children []*node
}

func (n *node) walk(path []string, f func(path []string, n *node)) {
	f(path, n)
	for _, c := range n.Children {
		c.walk(append(path[:len(path):len(path)], c.Name), f)
	}
}

var titleRe = regexp.MustCompile(`^(.*): (\d+) events? \(([0-9.]+) ?%\)$`)

// decodeGraph reads the tree back from the console's SVG: nested
// <g class="frame"> elements, each with <title>NAME: N events (P %)</title>.
func decodeGraph(r io.Reader) (*node, error) {
	d := xml.NewDecoder(r)
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var stack []*node
	var roots []*node
	var inTitle []bool // per open element: a frame's <title>?
	var title strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch el := tok.(type) {
		case xml.StartElement:
			isFrame := false
			if el.Name.Local == "g" {
				for _, a := range el.Attr {
					if a.Name.Local == "class" && hasClass(a.Value, "frame") {
						isFrame = true
					}
				}
			}
			if isFrame {
				n := &node{Count: -1}
				if len(stack) > 0 {
					p := stack[len(stack)-1]
					p.Children = append(p.Children, n)
				} else {
					roots = append(roots, n)
				}
				stack = append(stack, n)
			} else {
				stack = append(stack, nil)
			}
			t := el.Name.Local == "title" && len(stack) >= 2 && stack[len(stack)-2] != nil && stack[len(stack)-2].Count < 0
			inTitle = append(inTitle, t)
			if t {
				title.Reset()
			}
		case xml.CharData:
			if len(inTitle) > 0 && inTitle[len(inTitle)-1] {
				title.Write(el)
			}
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced </%s>", el.Name.Local)
			}
			if inTitle[len(inTitle)-1] {
				f := stack[len(stack)-2]
				m := titleRe.FindStringSubmatch(strings.TrimSpace(title.String()))
				if m == nil {
					return nil, fmt.Errorf("frame title %q: want NAME: N events (P %%)", title.String())
				}
				f.Name = m[1]
				f.Count, _ = strconv.ParseInt(m[2], 10, 64)
			}
			stack, inTitle = stack[:len(stack)-1], inTitle[:len(inTitle)-1]
		}
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("%d root frames, want 1", len(roots))
	}
	var fix func(n *node) error
	fix = func(n *node) error {
		if n.Count < 0 {
			return errors.New("a frame without a title")
		}
		n.Self = n.Count
		for _, c := range n.Children {
			if err := fix(c); err != nil {
				return err
			}
			n.Self -= c.Count
		}
		if n.Self < 0 {
			return fmt.Errorf("frame %q: %d events, fewer than its children's", n.Name, n.Count)
		}
		return nil
	}
	return roots[0], fix(roots[0])
}

func hasClass(v, c string) bool {
	for _, f := range strings.Fields(v) {
		if f == c {
			return true
		}
	}
	return false
}
