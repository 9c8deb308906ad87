package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/livedump/livedump/internal/flamegraph"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

type flameView struct {
	Capture   *livedumpv1.Capture
	Agent     string
	Stack     string
	Stacks    []string
	Machines  []flameMachine
	SVG       template.HTML
	Truncated bool
	Events    int
	Query     string
}

type flameMachine struct {
	ID, Host string
	Events   int64
}

// flameOptions reads the filter (?agent=, ?stack=) of a flame graph.
func (s *Server) flameOptions(w http.ResponseWriter, r *http.Request) (flamegraph.Options, bool) {
	q := r.URL.Query()
	opts := flamegraph.Options{Agent: q.Get("agent")}
	st := q.Get("stack")
	if st == "" {
		st = "user"
	}
	var err error
	if opts.Stack, err = flamegraph.ParseStack(st); err != nil {
		s.badInput(w, r, "draw the flame graph", fmt.Errorf("stack: %v", err), "")
		return opts, false
	}
	if len(opts.Agent) > 255 || strings.ContainsFunc(opts.Agent, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		s.badInput(w, r, "draw the flame graph", fmt.Errorf("agent: %q: want an agent ID or a hostname", opts.Agent), "")
		return opts, false
	}
	return opts, true
}

// flame reads a capture's events (at most MaxFlameEvents) and draws them.
func (s *Server) flame(w http.ResponseWriter, r *http.Request, id string, opts flamegraph.Options) ([]byte, int, bool, bool) {
	select {
	case s.flames <- struct{}{}:
		defer func() { <-s.flames }()
	default:
		s.refuse(w, r, http.StatusServiceUnavailable, fmt.Sprintf("%d flame graphs are being drawn already: try again in a moment", MaxFlameGraphs), "flame graphs at their limit")
		return nil, 0, false, false
	}
	events, truncated, err := flamegraph.Collect(r.Context(), s.cfg.Client, id, MaxFlameEvents)
	if err != nil {
		s.fail(w, r, "read the events of capture "+id, err, "/captures/"+id)
		return nil, 0, false, false
	}
	opts.Title = "Capture " + id
	opts.Truncated = truncated
	var buf bytes.Buffer
	if err := flamegraph.Build(events, opts).WriteSVG(&buf, opts); err != nil {
		s.fail(w, r, "draw the flame graph", err, "/captures/"+id)
		return nil, 0, false, false
	}
	return buf.Bytes(), len(events), truncated, true
}

func (s *Server) flameSVG(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "capture")
	if !ok {
		return
	}
	opts, ok := s.flameOptions(w, r)
	if !ok {
		return
	}
	svg, _, _, ok := s.flame(w, r, id, opts)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	_, _ = w.Write(svg)
}

// flamePage shows the flame graph inline (so its hover titles work with
// no script), with the per-machine and per-stack filters.
func (s *Server) flamePage(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "capture")
	if !ok {
		return
	}
	opts, ok := s.flameOptions(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.call(r)
	c, err := s.cfg.Client.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: id})
	cancel()
	if err != nil {
		s.fail(w, r, "get capture "+id, err, "/captures")
		return
	}
	svg, n, truncated, ok := s.flame(w, r, id, opts)
	if !ok {
		return
	}
	v := flameView{
		Capture: c.GetCapture(), Agent: opts.Agent, Stack: r.URL.Query().Get("stack"),
		Stacks: []string{"user", "kernel", "both"},
		// The SVG is flamegraph's own output: every name in it is escaped
		// there (and tested to be).
		SVG: template.HTML(svg), Truncated: truncated, Events: n,
	}
	if v.Stack == "" {
		v.Stack = "user"
	}
	for _, t := range c.GetCapture().GetTargets() {
		v.Machines = append(v.Machines, flameMachine{ID: t.GetAgentId(), Host: t.GetHostname(), Events: t.GetEvents()})
	}
	sort.Slice(v.Machines, func(i, j int) bool { return v.Machines[i].Host < v.Machines[j].Host })
	q := url.Values{}
	q.Set("stack", v.Stack)
	if v.Agent != "" {
		q.Set("agent", v.Agent)
	}
	v.Query = q.Encode()
	s.render(w, r, http.StatusOK, "flamegraph", "Flame graph "+id, "captures", v)
}
