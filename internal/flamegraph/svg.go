package flamegraph

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Layout, in pixels: monospace 12px text in 16px rows.
const (
	rowHeight    = 16
	boxHeight    = 15
	margin       = 10
	headerHeight = 48 // two lines of header, and a gap
	fontSize     = 12
	charWidth    = 7.2 // 0.6 em: the advance of common monospace fonts
	textPad      = 3
)

// drawn is a node the SVG shows, with where.
type drawn struct {
	n        *Node
	depth    int
	order    int   // pre-order index, to break ties
	offset   int64 // events left of it, in the root's count
	children []*drawn
}

// WriteSVG draws the tree rooted at n as an icicle graph (the root on top)
// in a self-contained SVG, the same bytes for the same tree and options.
// The <svg> has id "flamegraph" and no XML declaration, so it can be
// inlined in an HTML page as it is.
//
// Each node drawn is a <g class="frame"> holding its <title>
// ("NAME: N events (P %)", the hover text), <rect>, <text> (the name,
// shortened to fit, or none when too narrow), and the <g> of its children,
// left to right by name. The header says opts.Title, the number of events,
// the stack and machine drawn, the events without frames, how many nodes
// are folded (narrower than MinWidth pixels, or beyond the MaxDrawn
// widest) and whether the events were truncated.
func (n *Node) WriteSVG(w io.Writer, opts Options) error {
	width := opts.Width
	if width == 0 {
		width = DefaultWidth
	}
	width = min(max(width, MinSVGWidth), MaxSVGWidth)
	title := opts.Title
	if title == "" {
		title = "Flame graph"
	}
	title = cleanName(title)

	// Every node with its place, in pre-order; those wide enough are the
	// candidates, of which the MaxDrawn widest are drawn. Ancestors are at
	// least as wide and come first on ties, so the set drawn is a tree.
	inner := float64(width - 2*margin)
	total := n.Count
	var all, cands []*drawn
	var walk func(m *Node, depth int, offset int64) *drawn
	walk = func(m *Node, depth int, offset int64) *drawn {
		d := &drawn{n: m, depth: depth, order: len(all), offset: offset}
		all = append(all, d)
		if depth == 0 || (total > 0 && float64(m.Count)*inner >= MinWidth*float64(total)) {
			cands = append(cands, d)
		}
		off := offset
		for _, c := range m.Children {
			d.children = append(d.children, walk(c, depth+1, off))
			off += c.Count
		}
		return d
	}
	root := walk(n, 0, 0)
	if len(cands) > MaxDrawn {
		slices.SortFunc(cands, func(a, b *drawn) int {
			switch {
			case a.n.Count != b.n.Count:
				if a.n.Count > b.n.Count {
					return -1
				}
				return 1
			case a.depth != b.depth:
				return a.depth - b.depth
			}
			return a.order - b.order
		})
		cands = cands[:MaxDrawn]
	}
	show := make(map[*drawn]bool, len(cands))
	depth := 0
	for _, d := range cands {
		show[d] = true
		depth = max(depth, d.depth)
	}
	folded := len(all) - len(cands)
	height := headerHeight + (depth+1)*rowHeight + margin

	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" id="flamegraph" version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" font-family="monospace" font-size="%d" role="img" aria-label="%s">`+"\n",
		width, height, width, height, fontSize, esc(title))
	p("<title>%s</title>\n", esc(title))
	p("<style>#flamegraph g.frame:hover>rect{stroke:#000;stroke-width:1}</style>\n")
	p(`<rect class="background" x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	p(`<text class="header" x="%d" y="%d" font-weight="bold">%s</text>`+"\n", margin, 16, esc(truncate(title, float64(width-2*margin))))
	p(`<text class="header" x="%d" y="%d">%s</text>`+"\n", margin, 32, esc(headerLine(n, opts, folded, len(all))))

	scale := 0.0
	if total > 0 {
		scale = inner / float64(total)
	}
	var draw func(d *drawn)
	draw = func(d *drawn) {
		m := d.n
		x := float64(float64(d.offset)*scale) + margin
		wd := float64(m.Count) * scale
		if total == 0 && d.depth == 0 {
			wd = inner
		}
		y := headerHeight + d.depth*rowHeight
		pct := 0.0
		if total > 0 {
			pct = float64(m.Count) * 100 / float64(total)
		}
		p(`<g class="frame"><title>%s: %d events (%.2f %%)</title>`, esc(m.Name), m.Count, pct)
		p(`<rect x="%.2f" y="%d" width="%.2f" height="%d" rx="2" fill="%s"/>`, x, y, wd, boxHeight, color(m.Name, d.depth))
		if t := truncate(m.Name, wd); t != "" {
			p(`<text x="%.2f" y="%d">%s</text>`, x+textPad, y+fontSize, esc(t))
		}
		p("\n")
		for _, c := range d.children {
			if show[c] {
				draw(c)
			}
		}
		p("</g>\n")
	}
	draw(root)
	p("</svg>\n")
	return bw.Flush()
}

// headerLine is the second line of the header.
func headerLine(n *Node, opts Options, folded, nodes int) string {
	parts := []string{fmt.Sprintf("%d events", n.Count)}
	switch opts.Stack {
	case Kernel:
		parts = append(parts, "kernel stacks")
	case Both:
		parts = append(parts, "user and kernel stacks")
	default:
		parts = append(parts, "user stacks")
	}
	if opts.Agent != "" {
		parts = append(parts, "agent "+cleanName(opts.Agent))
	} else {
		parts = append(parts, "all agents")
	}
	if n.Self > 0 {
		what := map[Stack]string{Kernel: "kernel ", Both: ""}[opts.Stack]
		if opts.Stack != Kernel && opts.Stack != Both {
			what = "user "
		}
		parts = append(parts, fmt.Sprintf("%d without %sframes", n.Self, what))
	}
	if folded > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d frames folded (narrower than %.1f px, or beyond the %d widest)", folded, nodes, MinWidth, MaxDrawn))
	}
	if opts.Truncated {
		parts = append(parts, "truncated: the capture has more events than these")
	}
	return strings.Join(parts, " · ")
}

// truncate shortens name to fit in a box px wide ("" if not even three
// characters fit).
func truncate(name string, px float64) string {
	fit := int((px - 2*textPad) / charWidth)
	if fit < 3 {
		return ""
	}
	if utf8.RuneCountInString(name) <= fit {
		return name
	}
	r := []rune(name)
	return string(r[:fit-2]) + ".."
}

// color is a warm colour from a hash of the frame's module (its name up to
// "!"); the root and the frames that stand for no code are grey.
func color(name string, depth int) string {
	if depth == 0 || strings.HasPrefix(name, "<") {
		return "#c8c8c8"
	}
	module := name
	if i := strings.IndexByte(name, '!'); i >= 0 {
		module = name[:i]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(strings.ToLower(module)))
	v := h.Sum32()
	r := 205 + v%51
	g := (v / 51) % 231
	b := (v / (51 * 231)) % 56
	return fmt.Sprintf("#%02x%02x%02x", r, g, b)
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// Decode reads back the tree from an SVG written by WriteSVG: the nodes
// drawn, with their names and counts. A node folded in the drawing is not
// there; its count stays in its parent's Count and shows in its parent's
// Self (Self = Count - the sum of the drawn children's Counts). The tests
// and the console's tests use it to check a graph against its events.
func Decode(r io.Reader) (*Node, error) {
	dec := xml.NewDecoder(r)
	var stack []*Node // open frames; nil for a <g> that is not a frame
	var root *Node
	inTitle := false
	var title strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "g":
				var n *Node
				for _, a := range t.Attr {
					if a.Name.Local == "class" && a.Value == "frame" {
						n = &Node{Count: -1}
					}
				}
				stack = append(stack, n)
			case "title":
				if len(stack) > 0 && stack[len(stack)-1] != nil && stack[len(stack)-1].Count < 0 {
					inTitle = true
					title.Reset()
				}
			}
		case xml.CharData:
			if inTitle {
				title.Write(t)
			}
		case xml.EndElement:
			switch t.Name.Local {
			case "title":
				if inTitle {
					inTitle = false
					n := stack[len(stack)-1]
					name, count, err := parseTitle(title.String())
					if err != nil {
						return nil, err
					}
					n.Name, n.Count = name, count
				}
			case "g":
				if len(stack) == 0 {
					return nil, errors.New("flamegraph: unbalanced <g>")
				}
				n := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if n == nil {
					continue
				}
				if n.Count < 0 {
					return nil, errors.New("flamegraph: a frame without a title")
				}
				n.Self = n.Count
				for _, c := range n.Children {
					n.Self -= c.Count
				}
				var parent *Node
				for i := len(stack) - 1; i >= 0; i-- {
					if stack[i] != nil {
						parent = stack[i]
						break
					}
				}
				switch {
				case parent != nil:
					parent.Children = append(parent.Children, n)
				case root != nil:
					return nil, errors.New("flamegraph: more than one root frame")
				default:
					root = n
				}
			}
		}
	}
	if root == nil {
		return nil, errors.New("flamegraph: no frame")
	}
	return root, nil
}

// parseTitle reads "NAME: N events (P %)".
func parseTitle(s string) (string, int64, error) {
	i := strings.LastIndex(s, ": ")
	if i < 0 {
		return "", 0, fmt.Errorf("flamegraph: frame title %q: no count", s)
	}
	num, _, ok := strings.Cut(s[i+2:], " events (")
	count, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil {
		return "", 0, fmt.Errorf("flamegraph: frame title %q: no count", s)
	}
	return s[:i], count, nil
}
