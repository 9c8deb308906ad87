package console

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/ids"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/agents", http.StatusSeeOther)
	})
	m.HandleFunc("GET /agents", s.agents)
	m.HandleFunc("GET /agents/{id}", s.agent)
	m.HandleFunc("GET /captures", s.captures)
	m.HandleFunc("GET /captures/new", s.newCapture)
	m.HandleFunc("POST /captures/preview", s.previewCapture)
	m.HandleFunc("POST /captures", s.createCapture)
	m.HandleFunc("POST /captures/edit", s.editCapture)
	m.HandleFunc("GET /captures/{id}", s.capture)
	m.HandleFunc("POST /captures/{id}/cancel", s.cancelCapture)
	m.HandleFunc("GET /captures/{id}/live", s.liveCapture)
	m.HandleFunc("GET /captures/{id}/flamegraph", s.flamePage)
	m.HandleFunc("GET /captures/{id}/flamegraph.svg", s.flameSVG)
	m.HandleFunc("GET /dumps/{id}/download", s.downloadDump)
	m.HandleFunc("GET /audit", s.audit)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.render(w, r, http.StatusNotFound, "error", "Not found", "", errorView{Code: http.StatusNotFound, What: "open " + r.URL.Path, Message: "no such page", Back: "/agents"})
	})
	s.mux = m
}

// pathID checks an ID from the path against the IDs' own syntax, so that
// nothing else reaches the controller or a file name.
func (s *Server) pathID(w http.ResponseWriter, r *http.Request, what string) (string, bool) {
	id := r.PathValue("id")
	var err error
	switch what {
	case "agent":
		err = pki.ValidateAgentID(id)
	case "capture":
		err = ids.CaptureID(id)
	case "dump":
		err = ids.DumpID(id)
	default:
		err = errors.New("unknown kind")
	}
	if err != nil {
		s.badInput(w, r, "open "+what+" "+strconv.Quote(id), err, "")
		return "", false
	}
	return id, true
}

type agentsView struct {
	Selector string
	Agents   []*livedumpv1.Agent
	More     bool
	Online   int
}

func (s *Server) agents(w http.ResponseWriter, r *http.Request) {
	sel := r.URL.Query().Get("selector")
	if _, err := selector.Parse(sel); err != nil {
		s.badInput(w, r, "list agents", fmt.Errorf("selector: %v", err), "/agents")
		return
	}
	ctx, cancel := s.call(r)
	defer cancel()
	v := agentsView{Selector: sel}
	after := ""
	for {
		resp, err := s.cfg.Client.ListAgents(ctx, &livedumpv1.ListAgentsRequest{Selector: sel, After: after})
		if err != nil {
			s.fail(w, r, "list agents", err, "/agents")
			return
		}
		v.Agents = append(v.Agents, resp.GetAgents()...)
		if after = resp.GetNext(); after == "" {
			break
		}
		if len(v.Agents) >= pageRows {
			v.More = true
			break
		}
	}
	for _, a := range v.Agents {
		if a.GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE {
			v.Online++
		}
	}
	s.render(w, r, http.StatusOK, "agents", "Fleet", "agents", v)
}

func (s *Server) agent(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "agent")
	if !ok {
		return
	}
	// ?log=1 also reads the agent's own log over its stream, as
	// `agents describe` does (role operator; the controller decides).
	req := &livedumpv1.DescribeAgentRequest{AgentId: id, Limit: 20}
	timeout := s.cfg.Timeout
	wantLog := r.URL.Query().Get("log") == "1"
	if wantLog {
		req.LogLines, req.LogWait = agentLogLines, durationpb.New(agentLogWait)
		timeout += agentLogWait
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	resp, err := s.cfg.Client.DescribeAgent(ctx, req)
	if err != nil {
		s.fail(w, r, "describe agent "+id, err, "/agents/"+id)
		return
	}
	s.render(w, r, http.StatusOK, "agent", resp.GetAgent().GetHostname(), "agents", agentView{DescribeAgentResponse: resp, WantLog: wantLog})
}

// The agent page's log: as `agents describe` reads it by default.
const (
	agentLogLines = 50
	agentLogWait  = 10 * time.Second
)

type agentView struct {
	*livedumpv1.DescribeAgentResponse
	WantLog bool
}

type capturesView struct {
	Captures []*livedumpv1.Capture
	Next     string
}

func (s *Server) captures(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.call(r)
	defer cancel()
	resp, err := s.cfg.Client.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{After: r.URL.Query().Get("after")})
	if err != nil {
		s.fail(w, r, "list captures", err, "/captures")
		return
	}
	s.render(w, r, http.StatusOK, "captures", "Captures", "captures", capturesView{Captures: resp.GetCaptures(), Next: resp.GetNext()})
}

type captureView struct {
	Capture   *livedumpv1.Capture
	Targets   []*livedumpv1.CaptureTarget
	Events    []*livedumpv1.TriggerEvent // newest first
	EventNote string
	Buckets   *livedumpv1.BucketEventsResponse
	Dumps     []*livedumpv1.Dump
	Active    bool
}

// eventRows bounds the events a capture page lists; the buckets and the
// flame graph count them all.
const eventRows = 200

func (s *Server) capture(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "capture")
	if !ok {
		return
	}
	ctx, cancel := s.call(r)
	defer cancel()
	var v captureView
	after := ""
	for {
		resp, err := s.cfg.Client.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: id, After: after})
		if err != nil {
			s.fail(w, r, "get capture "+id, err, "/captures")
			return
		}
		if v.Capture == nil {
			v.Capture = resp.GetCapture()
		}
		v.Targets = append(v.Targets, resp.GetCapture().GetTargets()...)
		if after = resp.GetNext(); after == "" || len(v.Targets) >= pageRows {
			break
		}
	}
	sort.SliceStable(v.Targets, func(i, j int) bool { return v.Targets[i].GetHostname() < v.Targets[j].GetHostname() })
	switch v.Capture.GetState() {
	case livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE:
		v.Active = true
	}
	// The newest events: read up to pageRows from the start, show the
	// last eventRows of them.
	var events []*livedumpv1.TriggerEvent
	after = ""
	for len(events) < pageRows {
		resp, err := s.cfg.Client.ListEvents(ctx, &livedumpv1.ListEventsRequest{CaptureId: id, Limit: pageRows, After: after})
		if err != nil {
			s.fail(w, r, "list the events of capture "+id, err, "/captures")
			return
		}
		events = append(events, resp.GetEvents()...)
		if after = resp.GetNext(); after == "" {
			break
		}
	}
	if after != "" {
		v.EventNote = fmt.Sprintf("The first %d events are read here; the buckets and the flame graph count all %d.", len(events), v.Capture.GetEvents())
	}
	if n := len(events); n > eventRows {
		events = events[n-eventRows:]
	}
	for i := len(events) - 1; i >= 0; i-- {
		v.Events = append(v.Events, events[i])
	}
	b, err := s.cfg.Client.BucketEvents(ctx, &livedumpv1.BucketEventsRequest{CaptureId: id})
	if err != nil {
		s.fail(w, r, "bucket the events of capture "+id, err, "/captures")
		return
	}
	v.Buckets = b
	after = ""
	for len(v.Dumps) < pageRows {
		resp, err := s.cfg.Client.ListDumps(ctx, &livedumpv1.ListDumpsRequest{CaptureId: id, After: after})
		if err != nil {
			s.fail(w, r, "list the dumps of capture "+id, err, "/captures")
			return
		}
		v.Dumps = append(v.Dumps, resp.GetDumps()...)
		if after = resp.GetNext(); after == "" {
			break
		}
	}
	s.render(w, r, http.StatusOK, "capture", "Capture "+id, "captures", v)
}

func (s *Server) cancelCapture(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "capture")
	if !ok {
		return
	}
	ctx, cancel := s.call(r)
	defer cancel()
	if _, err := s.cfg.Client.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: id}); err != nil {
		s.fail(w, r, "cancel capture "+id, err, "/captures/"+id)
		return
	}
	http.Redirect(w, r, "/captures/"+url.PathEscape(id), http.StatusSeeOther)
}

type auditView struct {
	Entries []*livedumpv1.AuditEntry
	Next    string
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.call(r)
	defer cancel()
	after := r.URL.Query().Get("after")
	resp, err := s.cfg.Client.ListAudit(ctx, &livedumpv1.ListAuditRequest{Limit: 200, After: after})
	if err != nil {
		s.fail(w, r, "read the audit log", err, "/agents")
		return
	}
	s.render(w, r, http.StatusOK, "audit", "Audit log", "audit", auditView{Entries: resp.GetEntries(), Next: resp.GetNext()})
}
