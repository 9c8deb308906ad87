// Package fleet tracks the agents whose Connect streams live on this
// controller. An agent is online while its stream is attached and its
// heartbeats arrive in time; everything else about agents is in the store.
package fleet

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Disconnect causes, passed to a session's context so the stream handler can
// return the matching status to the agent.
var (
	ErrReplaced         = errors.New("a newer session of this agent connected")
	ErrRevoked          = errors.New("agent revoked")
	ErrHeartbeatTimeout = errors.New("heartbeat timeout")
	ErrShutdown         = errors.New("controller shutting down")
)

// Session is one attached agent stream.
type Session struct {
	AgentID string
	cancel  context.CancelCauseFunc

	mu            sync.Mutex
	lastHeartbeat time.Time
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
	s := &Session{AgentID: agentID, cancel: cancel, lastHeartbeat: now}
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
	r.mu.Lock()
	if r.sessions[s.AgentID] == s {
		delete(r.sessions, s.AgentID)
		r.update()
	}
	r.mu.Unlock()
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
