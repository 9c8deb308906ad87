package fakes

import (
	"context"
	"sync"
	"time"

	"github.com/livedump/livedump/controller/fleet"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Sessions stands in for fleet.Registry, the agent streams attached to this
// replica. Sessions are real fleet.Sessions (their outbox is what a test
// reads), held by a registry of the fake's own; the fake records attaches,
// detaches and disconnects, and answers directives as scripted with Answer.
type Sessions struct {
	answers

	once     sync.Once
	reg      *fleet.Registry
	mu       sync.Mutex
	attached Log[string]
	detached Log[string]
	discon   Log[AgentMsg[error]]
}

func (f *Sessions) registry() *fleet.Registry {
	f.once.Do(func() {
		f.reg = fleet.NewRegistry(nil)
		f.answers.reached = f.reg.Online
	})
	return f.reg
}

// Connect attaches a session for the agent as of at, as a Connect stream
// does; the session's cancel does nothing.
func (f *Sessions) Connect(agentID string, at time.Time) *fleet.Session {
	return f.registry().Attach(agentID, at, func(error) {})
}

// Attached returns the agents of each Attach, in order.
func (f *Sessions) Attached() []string { return f.attached.All() }

// Detached returns the agents of each Detach, in order.
func (f *Sessions) Detached() []string { return f.detached.All() }

// Disconnects returns the agent and cause of each Disconnect.
func (f *Sessions) Disconnects() []AgentMsg[error] { return f.discon.All() }

// Attach implements api.Sessions.
func (f *Sessions) Attach(agentID string, now time.Time, cancel context.CancelCauseFunc) *fleet.Session {
	f.mu.Lock()
	f.attached.add(agentID)
	f.mu.Unlock()
	return f.registry().Attach(agentID, now, cancel)
}

// Detach implements api.Sessions.
func (f *Sessions) Detach(s *fleet.Session) {
	f.mu.Lock()
	f.detached.add(s.AgentID)
	f.mu.Unlock()
	f.registry().Detach(s)
}

// Online implements api.LocalAgents.
func (f *Sessions) Online(agentID string) bool { return f.registry().Online(agentID) }

// LastHeartbeat implements api.LocalAgents.
func (f *Sessions) LastHeartbeat(agentID string) (time.Time, bool) {
	return f.registry().LastHeartbeat(agentID)
}

// Session implements api.LocalAgents.
func (f *Sessions) Session(agentID string) *fleet.Session { return f.registry().Session(agentID) }

// Disconnect implements api.LocalAgents.
func (f *Sessions) Disconnect(agentID string, cause error) bool {
	f.mu.Lock()
	f.discon.add(AgentMsg[error]{agentID, cause})
	f.mu.Unlock()
	return f.registry().Disconnect(agentID, cause)
}

// Exchange implements api.LocalAgents (see Answer).
func (f *Sessions) Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (fleet.Report, error) {
	f.registry()
	return f.answers.Exchange(ctx, agentID, d)
}
