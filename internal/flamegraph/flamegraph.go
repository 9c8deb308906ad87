// Package flamegraph draws a capture's trigger stacks as an icicle graph
// (a flame graph with the root on top) in a self-contained SVG: no script,
// no external reference, a <title> per frame for hover. The console and
// "livedumpctl events flamegraph" serve the same bytes.
//
// Frames are named by internal/stack's tokens (module!function,
// module!?+0xNNNN, <unresolved>), the tokens of the controller's stack
// signatures, so a frame in the graph reads as in "events buckets". A path
// from the root ("all") to a leaf runs from the outermost frame to the
// innermost; with Both, the user stack (outermost..innermost) goes on into
// the kernel stack (outermost..innermost).
//
// The output is deterministic: the same events, in any order, with the
// same options, give the same bytes.
//
// Bounds (the frames come from remote machines):
//   - a stack (user or kernel) keeps its MaxFrames innermost frames; the
//     outer ones are one FramesCut frame;
//   - Build makes at most MaxNodes nodes; a stack that needs more ends in
//     a NodesCut frame under the last node it shares;
//   - a frame name is made valid XML text (invalid UTF-8 and control
//     characters become U+FFFD) and cut at MaxName bytes;
//   - WriteSVG draws at most MaxDrawn nodes, the widest, and none narrower
//     than MinWidth pixels; the others are folded: their counts stay in
//     their parents' counts and the header says how many were folded.
package flamegraph

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/livedump/livedump/internal/stack"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Stack says which stacks of the events are drawn.
type Stack int

const (
	// User draws the user stacks.
	User Stack = iota
	// Kernel draws the kernel stacks (recorded with kstack).
	Kernel
	// Both draws the user stack, continued by the kernel stack.
	Both
)

var stackNames = [...]string{User: "user", Kernel: "kernel", Both: "both"}

func (s Stack) String() string {
	if s >= 0 && int(s) < len(stackNames) {
		return stackNames[s]
	}
	return fmt.Sprintf("Stack(%d)", int(s))
}

// ParseStack reads "user", "kernel" or "both" (the empty string is user).
func ParseStack(s string) (Stack, error) {
	switch s {
	case "", "user":
		return User, nil
	case "kernel":
		return Kernel, nil
	case "both":
		return Both, nil
	}
	return User, fmt.Errorf("%q: must be user, kernel or both", s)
}

// Options chooses what is drawn and how.
type Options struct {
	// Stack: user (default), kernel, or both.
	Stack Stack
	// Agent keeps only the events of one machine: its agent ID, or its
	// hostname in any case. Empty: all machines.
	Agent string
	// Width of the SVG in pixels: 0 is DefaultWidth; the value is bounded
	// to MinSVGWidth..MaxSVGWidth.
	Width int
	// Title heads the graph (default "Flame graph").
	Title string
	// Truncated says the events are not all of the capture's (Collect's
	// truncated); the header says so. (An addition to the contract.)
	Truncated bool
}

// Bounds; see the package comment.
const (
	MaxFrames    = 256
	MaxNodes     = 200_000
	MaxName      = 1000
	MaxDrawn     = 20_000
	MinWidth     = 0.1
	DefaultWidth = 1200
	MinSVGWidth  = 200
	MaxSVGWidth  = 10_000
)

// Names of the frames that are not frames of the stacks.
const (
	// Root is the name of the root node.
	Root = "all"
	// FramesCut stands for the outer frames of a stack longer than
	// MaxFrames.
	FramesCut = "<frames cut>"
	// NodesCut stands for the rest of the stacks that did not fit in
	// MaxNodes nodes.
	NodesCut = "<nodes cut>"
)

// Node is one frame of the graph, reached by the path of frames from the
// root.
type Node struct {
	Name string
	// Count is the number of events whose stack passes here.
	Count int64
	// Self is the number of events whose stack ends here (for the root:
	// the events without frames in the stack drawn).
	Self int64
	// Children, sorted by Name; Count = Self + the sum of their Counts.
	Children []*Node
}

// builder keeps the children of each node by name while the tree grows.
type builder struct {
	nodes int
	kids  map[*Node]map[string]*Node
}

func (b *builder) child(n *Node, name string, force bool) *Node {
	m := b.kids[n]
	if c := m[name]; c != nil {
		return c
	}
	if !force && b.nodes >= MaxNodes {
		return nil
	}
	if m == nil {
		m = map[string]*Node{}
		b.kids[n] = m
	}
	c := &Node{Name: name}
	m[name] = c
	n.Children = append(n.Children, c)
	b.nodes++
	return c
}

// Matches reports whether ev is one of agent's events: agent is its agent
// ID, or its hostname in any case; an empty agent matches every event.
func Matches(ev *livedumpv1.TriggerEvent, agent string) bool {
	return agent == "" || ev.GetAgentId() == agent || (ev.GetHostname() != "" && strings.EqualFold(ev.GetHostname(), agent))
}

// Build makes the tree of the events' stacks (those of opts.Agent's events
// only, when set). The root's Count is the number of events drawn.
func Build(events []*livedumpv1.TriggerEvent, opts Options) *Node {
	root := &Node{Name: Root}
	b := &builder{nodes: 1, kids: map[*Node]map[string]*Node{}}
	var path []string
	for _, ev := range events {
		if ev == nil || !Matches(ev, opts.Agent) {
			continue
		}
		path = path[:0]
		if opts.Stack != Kernel {
			path = appendPath(path, ev.GetUserFrames())
		}
		if opts.Stack != User {
			path = appendPath(path, ev.GetKernelFrames())
		}
		n := root
		n.Count++
		for _, name := range path {
			c := b.child(n, name, false)
			if c == nil {
				// Out of nodes: the rest of this stack is one NodesCut
				// frame (at most one per node, so the tree stays within
				// twice MaxNodes).
				c = b.child(n, NodesCut, true)
				c.Count++
				n = c
				break
			}
			c.Count++
			n = c
		}
		n.Self++
	}
	sortTree(root)
	return root
}

// appendPath appends the tokens of a stack given innermost first (as
// dtrace and the events give it), outermost first.
func appendPath(path []string, fs []*livedumpv1.Frame) []string {
	toks, counted := stack.Tokens(fs, MaxFrames+1)
	if counted > MaxFrames || len(toks) > MaxFrames {
		toks = append(toks[:MaxFrames-1], FramesCut)
	}
	for i := len(toks) - 1; i >= 0; i-- {
		path = append(path, cleanName(toks[i]))
	}
	return path
}

// cleanName makes a frame name valid XML character data (a run of
// invalid UTF-8 becomes one U+FFFD, as in the signatures; control
// characters and the non-characters U+FFFE and U+FFFF become U+FFFD) of at
// most MaxName bytes (a longer one is cut, and ends in "…").
func cleanName(s string) string {
	if len(s) <= MaxName && utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !xmlChar(r) }) < 0 {
		return s
	}
	s = strings.Map(func(r rune) rune {
		if !xmlChar(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > MaxName {
		cut := MaxName - len("…")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// xmlChar reports whether r may appear in XML 1.0 text (tab, line feed
// and carriage return are kept out too: a frame name is one line).
func xmlChar(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f:
		return false
	case r >= 0x80 && r < 0xa0:
		return false
	case r >= 0xd800 && r < 0xe000, r == 0xfffe, r == 0xffff, r > 0x10ffff:
		return false
	}
	return true
}

func sortTree(n *Node) {
	slices.SortFunc(n.Children, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range n.Children {
		sortTree(c)
	}
}
