package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/stack"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// liveEvent is what a capture page's script gets for one trigger event:
// the columns of its events table, nothing it would have to interpret.
type liveEvent struct {
	ID       string `json:"id"`
	Time     string `json:"time"`
	Host     string `json:"host"`
	AgentID  string `json:"agent_id"`
	Process  string `json:"process"`
	PID      int32  `json:"pid"`
	Probe    string `json:"probe"`
	Status   string `json:"status"`
	TopFrame string `json:"top_frame"`
}

type liveTarget struct {
	AgentID string `json:"agent_id"`
	Host    string `json:"host"`
	State   string `json:"state"`
	Detail  string `json:"detail"`
	Events  int64  `json:"events"`
}

// liveKeepalive is how often an idle live stream sends a comment, so that
// a dead page is noticed and proxies do not cut it.
const liveKeepalive = 15 * time.Second

// liveCapture streams a capture's progress to its page as Server-Sent
// Events: "trigger" and "target" carry JSON, "ended" ends it. The
// controller's WatchCapture replays the capture's history first; the page
// drops events it already shows (by ID).
func (s *Server) liveCapture(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "capture")
	if !ok {
		return
	}
	select {
	case s.live <- struct{}{}:
		defer func() { <-s.live }()
	default:
		s.refuse(w, r, http.StatusServiceUnavailable, fmt.Sprintf("%d live pages are open already: close one", MaxLiveStreams), "live streams at their limit")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	stream, err := s.cfg.Client.WatchCapture(r.Context(), &livedumpv1.WatchCaptureRequest{Id: id})
	if err != nil {
		s.fail(w, r, "watch capture "+id, err, "/captures/"+id)
		return
	}
	msgs := make(chan *livedumpv1.WatchCaptureResponse)
	errs := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errs <- err
				return
			}
			select {
			case msgs <- m:
			case <-r.Context().Done():
				return
			}
		}
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 5000\n\n")
	flusher.Flush()
	tick := time.NewTicker(liveKeepalive)
	defer tick.Stop()
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		flusher.Flush()
		return err == nil
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case err := <-errs:
			// The stream ended without "ended": the page shows why and
			// its EventSource reconnects.
			send("failed", map[string]string{"error": err.Error()})
			return
		case m := <-msgs:
			switch {
			case m.GetEvent() != nil:
				if !send("trigger", toLiveEvent(m.GetEvent())) {
					return
				}
			case m.GetTarget() != nil:
				t := m.GetTarget()
				if !send("target", liveTarget{AgentID: t.GetAgentId(), Host: t.GetHostname(), State: enumName(t.GetState()), Detail: t.GetDetail(), Events: t.GetEvents()}) {
					return
				}
			case m.GetEnded() != nil:
				send("ended", map[string]string{"state": enumName(m.GetEnded().GetState()), "detail": m.GetEnded().GetDetail()})
				return
			}
		}
	}
}

func toLiveEvent(e *livedumpv1.TriggerEvent) liveEvent {
	ev := liveEvent{
		ID: e.GetId(), Host: e.GetHostname(), AgentID: e.GetAgentId(), Process: e.GetProcess(), PID: e.GetPid(),
		Probe: e.GetProbe(), Status: ntstatus.Describe(e.GetStatus()),
	}
	if ev.Host == "" {
		ev.Host = e.GetAgentId()
	}
	if e.GetTime() != nil {
		ev.Time = e.GetTime().AsTime().UTC().Format("2006-01-02 15:04:05Z")
	}
	if fs := e.GetUserFrames(); len(fs) > 0 {
		ev.TopFrame = stack.Frame(fs[0])
	}
	return ev
}
