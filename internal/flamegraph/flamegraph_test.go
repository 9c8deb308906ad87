package flamegraph

import (
	"bytes"
	"context"
	"encoding/xml"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// frames builds frames from lines as dtrace prints them, innermost first.
func frames(lines ...string) []*livedumpv1.Frame {
	var fs []*livedumpv1.Frame
	for _, l := range lines {
		f := probe.ParseFrame(l)
		fs = append(fs, &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address})
	}
	return fs
}

func event(id, agent, host string, user, kernel []*livedumpv1.Frame) *livedumpv1.TriggerEvent {
	return &livedumpv1.TriggerEvent{Id: id, CaptureId: "c-1", AgentId: agent, Hostname: host, Process: "ms-teams.exe",
		Probe: "NtCreateFile:return", Status: 0xC000000D, UserFrames: user, KernelFrames: kernel}
}

// sample is a capture's events: two machines, a common path, a JIT frame,
// an unsymbolized module, one event without user frames.
func sample() []*livedumpv1.TriggerEvent {
	kernel := frames("nt`NtCreateFile+0x77", "nt`KiSystemServiceCopyEnd+0x25")
	open := frames("ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileInternal+0x590", "KERNELBASE`CreateFileW+0x66",
		"ms-teams`CFileCache::Open+0x1a", "ms-teams`ConfigStore::Load+0x2b", "ms-teams`Main+0x10",
		"KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28")
	jit := frames("ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileW+0x66", "0x1f012345678", "0x1f012345600",
		"ms-teams`WorkerThread::Run+0x4c", "KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28")
	nosym := frames("ntdll`NtCreateFile+0x14", "ms-teams`0x7ff6a1b21234", "KERNEL32`BaseThreadInitThunk+0x1d", "ntdll`RtlUserThreadStart+0x28")
	var evs []*livedumpv1.TriggerEvent
	for i := range 5 {
		evs = append(evs, event(fmt.Sprintf("e%d", i), "a-1", "WS-0001", open, kernel))
	}
	for i := range 3 {
		evs = append(evs, event(fmt.Sprintf("j%d", i), "a-2", "WS-0002", jit, kernel))
	}
	evs = append(evs,
		event("n0", "a-2", "WS-0002", nosym, nil),
		event("z0", "a-1", "WS-0001", nil, kernel),
	)
	return evs
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (go test ./internal/flamegraph -update rewrites it); got:\n%s", path, got)
	}
}

func render(t *testing.T, evs []*livedumpv1.TriggerEvent, opts Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Build(evs, opts).WriteSVG(&b, opts); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestFlameGolden: the graphs of the sample, byte for byte.
func TestFlameGolden(t *testing.T) {
	for _, c := range []struct {
		file string
		opts Options
	}{
		{"user.svg", Options{Title: "capture c-1"}},
		{"kernel.svg", Options{Stack: Kernel, Title: "capture c-1"}},
		{"both.svg", Options{Stack: Both, Title: "capture c-1", Width: 800}},
		{"agent.svg", Options{Agent: "ws-0002", Title: "capture c-1", Truncated: true}},
	} {
		t.Run(c.file, func(t *testing.T) {
			out := render(t, sample(), c.opts)
			golden(t, c.file, out)
			checkSVG(t, out)
		})
	}
}

// checkSVG checks what every graph must be: well-formed XML, no script,
// no reference outside itself.
func checkSVG(t *testing.T, out []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(out))
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not well-formed XML: %v\n%s", err, out)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "script", "image", "use", "a", "foreignObject", "iframe":
				t.Errorf("element <%s>", se.Name.Local)
			}
			for _, a := range se.Attr {
				if strings.HasPrefix(strings.ToLower(a.Name.Local), "on") || a.Name.Local == "href" {
					t.Errorf("attribute %s=%q on <%s>", a.Name.Local, a.Value, se.Name.Local)
				}
			}
		}
	}
	if !utf8.Valid(out) {
		t.Error("not UTF-8")
	}
	s := string(out)
	for _, bad := range []string{"<script", "javascript:", "url(", "@import", "xlink"} {
		if strings.Contains(s, bad) {
			t.Errorf("contains %q", bad)
		}
	}
	if strings.Count(s, "http://") != 1 { // the SVG namespace only
		t.Errorf("%d http:// references", strings.Count(s, "http://"))
	}
}

// TestFlameTree: the paths (outermost first, the buckets' tokens), and
// the counts.
func TestFlameTree(t *testing.T) {
	root := Build(sample(), Options{})
	if root.Name != Root || root.Count != 10 || root.Self != 1 {
		t.Fatalf("root %q count %d self %d, want all 10 1", root.Name, root.Count, root.Self)
	}
	checkCounts(t, root)
	paths := leaves(root, nil, nil)
	want := []string{
		"ntdll!RtlUserThreadStart;KERNEL32!BaseThreadInitThunk;ms-teams!?+0x1234;ntdll!NtCreateFile 1",
		"ntdll!RtlUserThreadStart;KERNEL32!BaseThreadInitThunk;ms-teams!Main;ms-teams!ConfigStore::Load;ms-teams!CFileCache::Open;KERNELBASE!CreateFileW;KERNELBASE!CreateFileInternal;ntdll!NtCreateFile 5",
		"ntdll!RtlUserThreadStart;KERNEL32!BaseThreadInitThunk;ms-teams!WorkerThread::Run;<unresolved>;KERNELBASE!CreateFileW;ntdll!NtCreateFile 3",
	}
	if !slices.Equal(paths, want) {
		t.Errorf("paths:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(want, "\n"))
	}
	// Both: the user stack goes on into the kernel's.
	both := leaves(Build(sample(), Options{Stack: Both}), nil, nil)
	if !slices.Contains(both, "nt!KiSystemServiceCopyEnd;nt!NtCreateFile 1") ||
		!slices.Contains(both, want[1][:len(want[1])-2]+";nt!KiSystemServiceCopyEnd;nt!NtCreateFile 5") {
		t.Errorf("both:\n%s", strings.Join(both, "\n"))
	}
	kernel := Build(sample(), Options{Stack: Kernel})
	if kernel.Count != 10 || kernel.Self != 1 || len(kernel.Children) != 1 || kernel.Children[0].Count != 9 {
		t.Errorf("kernel: %+v", kernel)
	}
	// The innermost frames are the buckets' signatures' first tokens.
	for _, ev := range sample()[:8] {
		sig := capture.Signature(ev, 2)
		inner := strings.Split(sig, " < ")
		if !slices.ContainsFunc(paths, func(p string) bool {
			return strings.Contains(p, ";"+inner[1]+";"+inner[0]+" ")
		}) {
			t.Errorf("signature %q: no path ends in its frames", sig)
		}
	}
}

// leaves lists the path to each node with Self > 0 but the root, with
// its Self.
func leaves(n *Node, path []string, out []string) []string {
	if len(path) > 0 && n.Self > 0 {
		out = append(out, fmt.Sprintf("%s %d", strings.Join(path, ";"), n.Self))
	}
	for _, c := range n.Children {
		out = leaves(c, append(path[:len(path):len(path)], c.Name), out)
	}
	return out
}

func checkCounts(t *testing.T, n *Node) {
	t.Helper()
	sum := n.Self
	for i, c := range n.Children {
		sum += c.Count
		if i > 0 && n.Children[i-1].Name >= c.Name {
			t.Errorf("%q: children not sorted: %q, %q", n.Name, n.Children[i-1].Name, c.Name)
		}
		checkCounts(t, c)
	}
	if sum != n.Count || n.Self < 0 {
		t.Errorf("%q: count %d, self %d + children = %d", n.Name, n.Count, n.Self, sum)
	}
}

// same compares two trees: names, counts and selves.
func same(a, b *Node) bool {
	if a.Name != b.Name || a.Count != b.Count || a.Self != b.Self || len(a.Children) != len(b.Children) {
		return false
	}
	for i := range a.Children {
		if !same(a.Children[i], b.Children[i]) {
			return false
		}
	}
	return true
}

func size(n *Node) int {
	s := 1
	for _, c := range n.Children {
		s += size(c)
	}
	return s
}

// TestFlamePermutation: the events in any order make the same bytes.
func TestFlamePermutation(t *testing.T) {
	evs := sample()
	for _, opts := range []Options{{}, {Stack: Both, Width: 640}, {Agent: "a-1"}} {
		want := render(t, evs, opts)
		r := rand.New(rand.NewPCG(1, 2))
		for range 20 {
			shuffled := slices.Clone(evs)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got := render(t, shuffled, opts); !bytes.Equal(got, want) {
				t.Fatalf("%+v: another order, other bytes", opts)
			}
		}
	}
}

// TestFlameDecode: what is drawn reads back as the tree built.
func TestFlameDecode(t *testing.T) {
	for _, opts := range []Options{{}, {Stack: Kernel}, {Stack: Both}, {Agent: "WS-0001"}, {Agent: "nobody"}} {
		tree := Build(append(sample(), hostile()...), opts)
		var b bytes.Buffer
		if err := tree.WriteSVG(&b, opts); err != nil {
			t.Fatal(err)
		}
		got, err := Decode(&b)
		if err != nil {
			t.Fatal(err)
		}
		if !same(got, tree) {
			t.Errorf("%+v: decoded tree differs", opts)
		}
	}
	if _, err := Decode(strings.NewReader("<svg></svg>")); err == nil {
		t.Error("Decode of an SVG without frames: no error")
	}
}

// TestFlameAgent: the filter is the agent ID, or the hostname in any case.
func TestFlameAgent(t *testing.T) {
	for agent, want := range map[string]int64{"": 10, "a-1": 6, "A-1": 0, "WS-0001": 6, "ws-0001": 6, "a-2": 4, "ws-00": 0, "ws-0002": 4} {
		if got := Build(sample(), Options{Agent: agent}).Count; got != want {
			t.Errorf("agent %q: %d events, want %d", agent, got, want)
		}
	}
}

// hostile are events with frame names a remote machine could send.
func hostile() []*livedumpv1.TriggerEvent {
	names := []string{
		`<script>alert(1)</script>`, `a&b`, `"quoted"`, `it's`, "bad\xff\xfeutf8", "ctl\x00\x01\x1b[31m\nnew",
		"]]>", strings.Repeat("long::", 1000) + "end", "日本語!関数",
	}
	var evs []*livedumpv1.TriggerEvent
	for i, n := range names {
		evs = append(evs, event(fmt.Sprintf("h%d", i), "a-3", "<WS&3>", []*livedumpv1.Frame{{Module: n, Function: n}, {Module: "m", Function: "outer"}}, nil))
	}
	return evs
}

// TestFlameEscaping: whatever the names, the SVG is well-formed, holds
// no markup of theirs, and the names read back (made valid UTF-8 without
// control characters, and cut).
func TestFlameEscaping(t *testing.T) {
	opts := Options{Agent: "<WS&3>", Title: `t<"&'>`, Width: 4000}
	tree := Build(hostile(), opts)
	out := render(t, hostile(), opts)
	checkSVG(t, out)
	if bytes.Contains(out, []byte("<script>")) || bytes.Contains(out, []byte("]]>")) || bytes.Contains(out, []byte("\x1b")) {
		t.Errorf("markup or control characters through:\n%s", out)
	}
	got, err := Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if !same(got, tree) {
		t.Error("decoded tree differs")
	}
	outer := tree.Children[0]
	if outer.Name != "m!outer" || len(outer.Children) != len(hostile()) {
		t.Fatalf("tree: %q with %d children", outer.Name, len(outer.Children))
	}
	for _, c := range outer.Children {
		if !utf8.ValidString(c.Name) || len(c.Name) > MaxName || strings.ContainsAny(c.Name, "\x00\x01\x1b\n") {
			t.Errorf("name %q", c.Name)
		}
	}
	if !slices.ContainsFunc(outer.Children, func(c *Node) bool { return c.Name == "bad\uFFFDutf8!bad\uFFFDutf8" }) {
		t.Error("invalid UTF-8 not replaced as in the signatures")
	}
	if !slices.ContainsFunc(outer.Children, func(c *Node) bool { return strings.HasSuffix(c.Name, "…") && len(c.Name) <= MaxName }) {
		t.Error("long name not cut")
	}
}

// TestFlameFolding: frames too narrow to see are not drawn, their counts
// stay in their parents', and the header says how many.
func TestFlameFolding(t *testing.T) {
	var evs []*livedumpv1.TriggerEvent
	for i := range 10000 {
		fn := "Hot"
		if i%1000 < 2 {
			fn = fmt.Sprintf("Rare%d", i/1000) // 2 events of 10,001 in 980 px: 0.196 px
		}
		evs = append(evs, event(fmt.Sprint(i), "a-1", "h", frames("app`"+fn+"+0x1", "app`Main+0x1"), nil))
	}
	evs = append(evs, event("tiny", "a-1", "h", frames("app`Tiny+0x1", "app`Main+0x1"), nil))
	opts := Options{Width: 1000} // 980 px: 1 event of 10,001 is 0.098 px
	tree := Build(evs, opts)
	var b bytes.Buffer
	if err := tree.WriteSVG(&b, opts); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, got)
	main := got.Children[0]
	if got.Count != 10001 || main.Name != "app!Main" || main.Count != 10001 || main.Self != 1 || len(main.Children) != 11 {
		t.Fatalf("decoded: %d events, %q %d self %d, %d children", got.Count, main.Name, main.Count, main.Self, len(main.Children))
	}
	if !bytes.Contains(b.Bytes(), []byte("1 of 14 frames folded")) {
		t.Errorf("header does not say 1 of 14 frames folded:\n%s", b.Bytes()[:600])
	}
}

// TestFlameCaps: a stack keeps its MaxFrames innermost frames; the tree
// and the drawing are bounded.
func TestFlameCaps(t *testing.T) {
	var deep []string
	for i := range 1000 {
		deep = append(deep, fmt.Sprintf("app`F%04d+0x1", i))
	}
	tree := Build([]*livedumpv1.TriggerEvent{event("d", "a", "h", frames(deep...), nil)}, Options{})
	n, depth := tree, 0
	for len(n.Children) > 0 {
		n = n.Children[0]
		depth++
		if depth == 1 && n.Name != FramesCut {
			t.Errorf("outermost frame %q, want %q", n.Name, FramesCut)
		}
	}
	if depth != MaxFrames || n.Name != "app!F0000" {
		t.Errorf("depth %d, innermost %q; want %d, app!F0000", depth, n.Name, MaxFrames)
	}

	// Wide: 30,000 distinct leaves of 3 frames each.
	var evs []*livedumpv1.TriggerEvent
	for i := range 30000 {
		evs = append(evs, event(fmt.Sprint(i), "a", "h", frames(fmt.Sprintf("app`Leaf%05d+0x1", i), fmt.Sprintf("app`Mid%03d+0x1", i%300), "app`Main+0x1"), nil))
	}
	opts := Options{Width: MaxSVGWidth}
	tree = Build(evs, opts)
	checkCounts(t, tree)
	var b bytes.Buffer
	if err := tree.WriteSVG(&b, opts); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if s := size(got); s != MaxDrawn {
		t.Errorf("%d nodes drawn, want %d", s, MaxDrawn)
	}
	checkCounts(t, got)
	if got.Count != 30000 {
		t.Errorf("root %d", got.Count)
	}
	if !bytes.Contains(b.Bytes(), []byte(fmt.Sprintf("%d of %d frames folded", size(tree)-MaxDrawn, size(tree)))) {
		t.Error("header does not say how many were folded")
	}
}

// TestFlameNodeBudget: past MaxNodes, stacks end in a NodesCut frame and
// the counts still add up.
func TestFlameNodeBudget(t *testing.T) {
	var evs []*livedumpv1.TriggerEvent
	for i := range MaxNodes/2 + 100 {
		evs = append(evs, event(fmt.Sprint(i), "a", "h", frames(fmt.Sprintf("app`A%d+0x1", i), fmt.Sprintf("app`B%d+0x1", i)), nil))
	}
	tree := Build(evs, Options{})
	checkCounts(t, tree)
	if s := size(tree); s > 2*MaxNodes || tree.Count != int64(len(evs)) {
		t.Fatalf("%d nodes, %d events", size(tree), tree.Count)
	}
	cut := 0
	for _, c := range tree.Children {
		if len(c.Children) == 1 && c.Children[0].Name == NodesCut {
			cut++
		}
	}
	if cut == 0 {
		t.Error("no stack ends in " + NodesCut)
	}
}

func TestParseStack(t *testing.T) {
	for s, want := range map[string]Stack{"": User, "user": User, "kernel": Kernel, "both": Both} {
		if got, err := ParseStack(s); err != nil || got != want {
			t.Errorf("%q: %v, %v", s, got, err)
		}
		if s != "" && want.String() != s {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	if _, err := ParseStack("User"); err == nil || !strings.Contains(err.Error(), `"User"`) {
		t.Errorf("ParseStack(User): %v", err)
	}
}

// pager serves ListEvents in pages of at most 3.
type pager struct {
	livedumpv1.FleetServiceClient
	n     int
	calls []*livedumpv1.ListEventsRequest
}

func (p *pager) ListEvents(_ context.Context, req *livedumpv1.ListEventsRequest, _ ...grpc.CallOption) (*livedumpv1.ListEventsResponse, error) {
	p.calls = append(p.calls, req)
	start := 0
	if req.GetAfter() != "" {
		_, _ = fmt.Sscanf(req.GetAfter(), "ev-%d", &start)
		start++
	}
	resp := &livedumpv1.ListEventsResponse{}
	for i := start; i < p.n && len(resp.Events) < min(3, int(req.GetLimit())); i++ {
		resp.Events = append(resp.Events, &livedumpv1.TriggerEvent{Id: fmt.Sprintf("ev-%d", i)})
	}
	if k := len(resp.Events); k > 0 {
		resp.Next = resp.Events[k-1].GetId() // "more may follow", even at the end
	}
	return resp, nil
}

func TestFlameCollect(t *testing.T) {
	for _, c := range []struct {
		n, max    int
		want      int
		truncated bool
	}{
		{8, 0, 8, false}, {8, 8, 8, false}, {8, 7, 7, true}, {8, 3, 3, true}, {0, 5, 0, false},
	} {
		p := &pager{n: c.n}
		evs, truncated, err := Collect(context.Background(), p, "c-1", c.max)
		if err != nil || len(evs) != c.want || truncated != c.truncated {
			t.Errorf("%d events, max %d: %d, truncated %v, %v; want %d, %v", c.n, c.max, len(evs), truncated, err, c.want, c.truncated)
		}
		for i, ev := range evs {
			if ev.GetId() != fmt.Sprintf("ev-%d", i) {
				t.Errorf("event %d is %s", i, ev.GetId())
			}
		}
		if p.calls[0].GetCaptureId() != "c-1" || (c.max == 0 && p.calls[0].GetLimit() != pageLimit) {
			t.Errorf("first call %v", p.calls[0])
		}
	}
}
