package capture

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of one trigger event. The CLI allows --ustack up to 100 frames;
// a string longer than a symbol name ever is, or an event larger than a
// full stack of long names, is not something an agent sends in good faith.
const (
	MaxEventFrames = 128      // user frames, and kernel frames, each
	MaxEventString = 512      // bytes of one frame's module or function, the process, the probe
	MaxEventBytes  = 64 << 10 // the whole encoded event
	maxEventIDLen  = 64
)

// Default per-agent event rate: the load generator sends 40 events a second
// per agent; a real capture's per-agent cap keeps agents far below this.
const (
	DefaultEventRate  = 200
	DefaultEventBurst = 1000
)

// Reasons an event is refused: the values of the reason label of
// livedump_controller_events_refused_total, and the first word of the reason
// the agent is told.
const (
	RefusedCaptureUnknown   = "capture_unknown"
	RefusedCaptureNotActive = "capture_not_active"
	RefusedNotTarget        = "not_target"
	RefusedInvalid          = "invalid"
	RefusedTooLarge         = "too_large"
	RefusedRateLimited      = "rate_limited"
)

var refusalReasons = []string{RefusedCaptureUnknown, RefusedCaptureNotActive, RefusedNotTarget, RefusedInvalid, RefusedTooLarge, RefusedRateLimited}

// maxInactive bounds the remembered ended and unknown captures.
const maxInactive = 1000

// refusal is an event the controller will not store, and why.
type refusal struct {
	reason, detail string
}

func (r *refusal) String() string { return r.reason + ": " + r.detail }

// checkEvent checks the shape of what an agent sent, before it is queued:
// who it claims to be, its identifiers, and its size.
func checkEvent(agentID string, ev *livedumpv1.TriggerEvent) *refusal {
	if n := len(ev.GetId()); n < 8 || n > maxEventIDLen {
		return &refusal{RefusedInvalid, fmt.Sprintf("id: must be 8 to %d characters, got %d", maxEventIDLen, n)}
	}
	if ev.GetAgentId() != agentID {
		return &refusal{RefusedInvalid, fmt.Sprintf("agent_id: %q on agent %s's stream", truncate(ev.GetAgentId(), 64), agentID)}
	}
	if err := checkCaptureID(ev.GetCaptureId()); err != nil {
		return &refusal{RefusedInvalid, "capture_id: " + err.Error()}
	}
	if n := len(ev.GetUserFrames()); n > MaxEventFrames {
		return &refusal{RefusedTooLarge, fmt.Sprintf("user_frames: %d frames, at most %d", n, MaxEventFrames)}
	}
	if n := len(ev.GetKernelFrames()); n > MaxEventFrames {
		return &refusal{RefusedTooLarge, fmt.Sprintf("kernel_frames: %d frames, at most %d", n, MaxEventFrames)}
	}
	// Arrays, not maps: this runs for every event, and a map literal
	// allocates.
	for _, f := range [...]struct{ name, s string }{{"process", ev.GetProcess()}, {"probe", ev.GetProbe()},
		{"status_name", ev.GetStatusName()}, {"hostname", ev.GetHostname()}, {"signature", ev.GetSignature()}} {
		if len(f.s) > MaxEventString {
			return &refusal{RefusedTooLarge, fmt.Sprintf("%s: %d bytes, at most %d", f.name, len(f.s), MaxEventString)}
		}
	}
	for _, st := range [...]struct {
		name string
		fs   []*livedumpv1.Frame
	}{{"user_frames", ev.GetUserFrames()}, {"kernel_frames", ev.GetKernelFrames()}} {
		for i, f := range st.fs {
			if len(f.GetModule()) > MaxEventString || len(f.GetFunction()) > MaxEventString {
				return &refusal{RefusedTooLarge, fmt.Sprintf("%s[%d]: a module or function name longer than %d bytes", st.name, i, MaxEventString)}
			}
		}
	}
	if n := proto.Size(ev); n > MaxEventBytes {
		return &refusal{RefusedTooLarge, fmt.Sprintf("event of %d bytes, at most %d", n, MaxEventBytes)}
	}
	return nil
}

// checkCaptureID accepts what newID makes, and nothing that could not be a
// capture ID.
func checkCaptureID(id string) error {
	if len(id) < 3 || len(id) > 64 {
		return fmt.Errorf("%q is not a capture ID", truncate(id, 64))
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q is not a capture ID", truncate(id, 64))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// LateEventGrace is how long after its part in a capture ended (the
// capture was cancelled, expired or reached its limits, or the target
// finished) a target may still deliver events it fired before: events in
// flight, or spooled on a machine that was offline or restarting. It never
// gets more than the capture's per-agent cap stored.
const LateEventGrace = 10 * time.Minute

// admission knows which captures are active and whom they target, so the
// ingest path checks an event without a store query. The scheduler refreshes
// it at every pass; a capture it does not know yet (created a moment ago,
// perhaps on another replica, or ended) is read from the store once.
type admission struct {
	mu       sync.Mutex
	active   map[string]map[string]struct{} // capture -> target agents
	inactive map[string]*inactiveCapture
}

// inactiveCapture is a capture that takes no new events: unknown, or ended
// with what its targets may still deliver late.
type inactiveCapture struct {
	reason string
	late   map[string]*lateTarget // by agent
}

type lateTarget struct {
	until time.Time
	left  int64 // events below the per-agent cap
}

func newAdmission() *admission {
	return &admission{active: map[string]map[string]struct{}{}, inactive: map[string]*inactiveCapture{}}
}

// refresh replaces the active captures with what the scheduler just read.
func (a *admission) refresh(active map[string]map[string]struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active = active
}

// ended forgets an active capture; its next event reads what its targets
// may still deliver from the store.
func (a *admission) ended(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.active, id)
	delete(a.inactive, id)
}

// rememberInactive records a capture that takes no new events; the caller
// holds a.mu.
func (a *admission) rememberInactive(id string, ic *inactiveCapture) {
	if len(a.inactive) >= maxInactive {
		a.inactive = map[string]*inactiveCapture{}
	}
	a.inactive[id] = ic
}

// check admits an event of agentID for captureID from what is known; known
// is false when the store must be asked.
func (a *admission) check(captureID, agentID string, now time.Time) (r *refusal, known bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if targets, ok := a.active[captureID]; ok {
		if _, ok := targets[agentID]; !ok {
			return &refusal{RefusedNotTarget, fmt.Sprintf("capture %s does not target agent %s", captureID, agentID)}, true
		}
		return nil, true
	}
	ic := a.inactive[captureID]
	switch {
	case ic == nil:
		return nil, false
	case ic.reason == RefusedCaptureUnknown:
		return &refusal{RefusedCaptureUnknown, fmt.Sprintf("capture %s does not exist", captureID)}, true
	}
	if lt := ic.late[agentID]; lt != nil && now.Before(lt.until) && lt.left > 0 {
		lt.left--
		return nil, true
	}
	return &refusal{RefusedCaptureNotActive, fmt.Sprintf("capture %s has ended (its targets' late events are taken for %s after, up to the per-agent cap)", captureID, LateEventGrace)}, true
}

// load reads a capture the admission does not know from the store.
func (a *admission) load(ctx context.Context, st admissionStore, captureID string, now time.Time) error {
	c, err := st.GetCapture(ctx, captureID)
	if errors.Is(err, store.ErrNotFound) {
		a.mu.Lock()
		a.rememberInactive(captureID, &inactiveCapture{reason: RefusedCaptureUnknown})
		a.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	targets, err := st.ListTargets(ctx, captureID)
	if err != nil {
		return err
	}
	if c.State == StateActive {
		set := make(map[string]struct{}, len(targets))
		for _, t := range targets {
			set[t.AgentID] = struct{}{}
		}
		a.mu.Lock()
		a.active[captureID] = set
		a.mu.Unlock()
		return nil
	}
	ic := &inactiveCapture{reason: RefusedCaptureNotActive, late: map[string]*lateTarget{}}
	spec := &livedumpv1.CaptureSpec{}
	if err := protojson.Unmarshal([]byte(c.Spec), spec); err != nil {
		return fmt.Errorf("capture %s spec: %w", captureID, err)
	}
	limit := int64(probe.FromArm(armOf(captureID, spec, nil, time.Time{})).PerAgentCap)
	for _, t := range targets {
		if until := t.Updated.Add(LateEventGrace); now.Before(until) && t.Events < limit {
			ic.late[t.AgentID] = &lateTarget{until: until, left: limit - t.Events}
		}
	}
	a.mu.Lock()
	a.rememberInactive(captureID, ic)
	a.mu.Unlock()
	return nil
}

// admissionStore is what admission reads of a capture it does not know.
type admissionStore interface {
	GetCapture(ctx context.Context, id string) (store.Capture, error)
	ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error)
}

// limiters holds one token bucket per agent that sent events recently.
type limiters struct {
	mu    sync.Mutex
	rate  rate.Limit
	burst int
	m     map[string]*rate.Limiter
}

func (l *limiters) allow(agentID string, now time.Time) bool {
	l.mu.Lock()
	lim := l.m[agentID]
	if lim == nil {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.m[agentID] = lim
	}
	l.mu.Unlock()
	return lim.AllowN(now, 1)
}

// forgetFull drops buckets that have filled up again: a new one is the same.
func (l *limiters) forgetFull(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, id)
		}
	}
}
