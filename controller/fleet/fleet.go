// Package fleet tracks the agents whose Connect streams live on this
// controller. An agent is online while its stream is attached and its
// heartbeats arrive in time; everything else about agents is in the store.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Disconnect causes, passed to a session's context so the stream handler can
// return the matching status to the agent.
var (
	ErrReplaced         = errors.New("a newer session of this agent connected")
	ErrRevoked          = errors.New("agent revoked")
	ErrHeartbeatTimeout = errors.New("heartbeat timeout")
	ErrShutdown         = errors.New("controller shutting down")
	// ErrStoreUnavailable ends a stream whose events could not be stored:
	// the agent reconnects, to this replica or another, and sends its
	// spool again.
	ErrStoreUnavailable = errors.New("store unavailable")
)

// outboxSize bounds what may wait for a slow agent: a session whose agent
// does not read its stream is ended (the agent reconnects) instead of
// buffering without bound.
const outboxSize = 64

// ErrOutboxFull is returned when an agent is not keeping up with its stream.
var ErrOutboxFull = errors.New("agent is not reading its stream")

// ErrOffline is returned by Call for an agent with no attached session.
var ErrOffline = errors.New("agent is offline")

// Session is one attached agent stream.
type Session struct {
	AgentID string
	cancel  context.CancelCauseFunc
	outbox  chan *livedumpv1.ConnectResponse
	onSend  atomic.Pointer[func()]

	mu            sync.Mutex
	lastHeartbeat time.Time
	waiters       map[string]waiter
	closed        bool
}

// Closed reports whether the session has been detached.
func (s *Session) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Outbox is drained by the stream handler's writer, the only goroutine that
// sends on the stream.
func (s *Session) Outbox() <-chan *livedumpv1.ConnectResponse { return s.outbox }

// OnSend sets f to be called after Send queues a message: the stream
// handler starts its writer from it, so no goroutine waits on an idle
// outbox.
func (s *Session) OnSend(f func()) { s.onSend.Store(&f) }

// Send queues a message for the agent without blocking. When the outbox is
// full the agent has stopped reading: the session is ended with
// ErrOutboxFull, and whatever was queued is sent again on its next stream
// (captures are re-armed, events re-acked, calls fail to their callers).
func (s *Session) Send(m *livedumpv1.ConnectResponse) error {
	select {
	case s.outbox <- m:
		if f := s.onSend.Load(); f != nil {
			(*f)()
		}
		return nil
	default:
		s.End(ErrOutboxFull)
		return ErrOutboxFull
	}
}

// Report is an agent's answer to a directive that a caller waits for: a
// ProvisionReport, a SelfTestReport or an AgentLogReport.
type Report interface {
	proto.Message
	GetDirectiveId() string
}

// Deliver hands a report to the Call waiting for its directive, if any, and
// reports whether one was waiting. Waiters belong to this session, so an
// agent can only answer directives sent to itself; a report of another
// type than the one waited for (a SelfTestReport for a provisioning
// directive, say) is not delivered either.
func (s *Session) Deliver(r Report) bool {
	s.mu.Lock()
	w, ok := s.waiters[r.GetDirectiveId()]
	s.mu.Unlock()
	if !ok || w.kind != r.ProtoReflect().Descriptor().FullName() {
		return false
	}
	ch := w.ch
	select {
	case ch <- r:
	default: // a duplicate report; the first one answered the call
	}
	return true
}

// waiter is a Call waiting for the report of one directive.
type waiter struct {
	kind protoreflect.FullName // the report message type expected
	ch   chan Report
}

// ReportKind is the report message a directive is answered with:
// SelfTestReport for a self-test, AgentLogReport for a log tail,
// ProvisionReport for everything else.
func ReportKind(d *livedumpv1.Directive) protoreflect.FullName {
	return NewReport(d).ProtoReflect().Descriptor().FullName()
}

// NewReport returns an empty report of the kind that answers d, to decode
// one into (a report relayed by another replica).
func NewReport(d *livedumpv1.Directive) Report {
	switch {
	case d.GetSelfTest() != nil:
		return &livedumpv1.SelfTestReport{}
	case d.GetAgentLog() != nil:
		return &livedumpv1.AgentLogReport{}
	}
	return &livedumpv1.ProvisionReport{}
}

func (s *Session) wait(id string, kind protoreflect.FullName) (chan Report, func()) {
	ch := make(chan Report, 1)
	s.mu.Lock()
	if s.waiters == nil {
		s.waiters = map[string]waiter{}
	}
	s.waiters[id] = waiter{kind: kind, ch: ch}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.waiters, id)
		s.mu.Unlock()
	}
}

// Heartbeat records that the agent showed signs of life at t.
func (s *Session) Heartbeat(t time.Time) {
	s.mu.Lock()
	s.lastHeartbeat = t
	s.mu.Unlock()
}

// LastHeartbeat returns when the agent last showed signs of life.
func (s *Session) LastHeartbeat() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeartbeat
}

// Registry holds the sessions attached to this controller.
type Registry struct {
	mu        sync.Mutex
	sessions  map[string]*Session
	connected prometheus.Gauge
}

// NewRegistry returns an empty registry that keeps connected up to date.
// connected may be nil.
func NewRegistry(connected prometheus.Gauge) *Registry {
	return &Registry{sessions: map[string]*Session{}, connected: connected}
}

// Attach registers a session for agentID; cancel ends the stream. A session
// already attached for the same agent is cancelled: the newer connection wins,
// since the older one is most likely a half-open TCP connection.
func (r *Registry) Attach(agentID string, now time.Time, cancel context.CancelCauseFunc) *Session {
	s := &Session{AgentID: agentID, cancel: cancel, lastHeartbeat: now, outbox: make(chan *livedumpv1.ConnectResponse, outboxSize)}
	r.mu.Lock()
	old := r.sessions[agentID]
	r.sessions[agentID] = s
	r.update()
	r.mu.Unlock()
	if old != nil {
		old.cancel(ErrReplaced)
	}
	return s
}

// Detach removes s if it is still the agent's current session.
func (r *Registry) Detach(s *Session) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	r.mu.Lock()
	if r.sessions[s.AgentID] == s {
		delete(r.sessions, s.AgentID)
		r.update()
	}
	r.mu.Unlock()
}

// Session returns the agent's attached session, or nil.
func (r *Registry) Session(agentID string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[agentID]
}

// Online reports whether the agent has an attached session.
func (r *Registry) Online(agentID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.sessions[agentID]
	return ok
}

// LastHeartbeat returns when the agent's attached session last showed signs
// of life, and whether it has one.
func (r *Registry) LastHeartbeat(agentID string) (time.Time, bool) {
	r.mu.Lock()
	s := r.sessions[agentID]
	r.mu.Unlock()
	if s == nil {
		return time.Time{}, false
	}
	return s.LastHeartbeat(), true
}

// Exchanger sends a directive to an agent and waits for the report
// answering it: the local Registry, or the cluster for an agent on any
// replica.
type Exchanger interface {
	Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (Report, error)
}

// Call sends a provisioning directive through x and waits for the
// provisioning report answering it, until ctx ends. Through the Registry a
// session replaced while waiting is not followed: the caller sees the
// timeout and the agent's next state report tells the rest; through the
// cluster an agent no live replica holds is ErrOffline at once
// (provisioning is not queued).
func Call(ctx context.Context, x Exchanger, agentID string, d *livedumpv1.Directive) (*livedumpv1.ProvisionReport, error) {
	rep, err := x.Exchange(ctx, agentID, d)
	if err != nil {
		return nil, err
	}
	pr, ok := rep.(*livedumpv1.ProvisionReport)
	if !ok {
		return nil, fmt.Errorf("directive %s was answered with a %T", d.GetId(), rep)
	}
	return pr, nil
}

// Exchange is Call for any directive that is answered with a report: the
// report is of the type ReportKind names.
func (r *Registry) Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (Report, error) {
	r.mu.Lock()
	s := r.sessions[agentID]
	r.mu.Unlock()
	if s == nil {
		return nil, ErrOffline
	}
	ch, done := s.wait(d.GetId(), ReportKind(d))
	defer done()
	if err := s.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: d}}); err != nil {
		return nil, err
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// End cancels s with cause, if it is still attached.
func (s *Session) End(cause error) {
	if !s.Closed() {
		s.cancel(cause)
	}
}

// Disconnect cancels the agent's session, if any, with cause.
func (r *Registry) Disconnect(agentID string, cause error) bool {
	r.mu.Lock()
	s := r.sessions[agentID]
	r.mu.Unlock()
	if s == nil {
		return false
	}
	s.cancel(cause)
	return true
}

// Len returns the number of attached sessions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// ExpireStale cancels every session whose last heartbeat is older than
// timeout at now, and returns how many it cancelled. The stream handlers
// detach them as they return.
func (r *Registry) ExpireStale(now time.Time, timeout time.Duration) int {
	r.mu.Lock()
	var stale []*Session
	for _, s := range r.sessions {
		if now.Sub(s.LastHeartbeat()) > timeout {
			stale = append(stale, s)
		}
	}
	r.mu.Unlock()
	for _, s := range stale {
		s.cancel(ErrHeartbeatTimeout)
	}
	return len(stale)
}

// CloseAll cancels every session with cause.
func (r *Registry) CloseAll(cause error) {
	r.mu.Lock()
	all := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.cancel(cause)
	}
}

func (r *Registry) update() {
	if r.connected != nil {
		r.connected.Set(float64(len(r.sessions)))
	}
}
