package fakes

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/livedump/livedump/controller/fleet"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Peers stands in for cluster.Cluster: which agents some replica holds,
// directives sent through the cluster, revocations broadcast. Directives
// are answered as scripted with Answer.
type Peers struct {
	answers

	// AttachErr is returned by Attached.
	AttachErr error
	// SendErr is returned by Send.
	SendErr error

	mu        sync.Mutex
	presence  map[string]string // agent -> session
	online    map[string]bool   // agents held by another replica
	detached  Log[string]
	delivered Log[Sent]
	revoked   []string
	serials   []string
	names     []string
}

func (f *Peers) init() {
	if f.presence == nil {
		f.presence, f.online = map[string]string{}, map[string]bool{}
		f.answers.reached = func(id string) bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.isOnline(id)
		}
	}
}

func (f *Peers) isOnline(id string) bool { return f.presence[id] != "" || f.online[id] }

// SetOnline says whether another replica holds the agent's stream.
func (f *Peers) SetOnline(agentID string, online bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.online[agentID] = online
}

// Presence returns the session recorded for the agent, "" if none.
func (f *Peers) Presence(agentID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.presence[agentID]
}

// DetachedSessions returns "agent/session" of each Detached, in order.
func (f *Peers) DetachedSessions() []string { return f.detached.All() }

// Delivered returns the directives given to Send.
func (f *Peers) Delivered() []Sent { return f.delivered.All() }

// Revocations returns the agents, certificate serials and operator names
// whose revocation was broadcast.
func (f *Peers) Revocations() (agents, serials, names []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked), slices.Clone(f.serials), slices.Clone(f.names)
}

// Attached implements api.Presence.
func (f *Peers) Attached(_ context.Context, agentID, session string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if f.AttachErr != nil {
		return f.AttachErr
	}
	f.presence[agentID] = session
	return nil
}

// Detached implements api.Presence.
func (f *Peers) Detached(_ context.Context, agentID, session string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.detached.add(agentID + "/" + session)
	if f.presence[agentID] == session {
		delete(f.presence, agentID)
	}
	return nil
}

// Online implements api.Peers.
func (f *Peers) Online(_ context.Context, agentID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.isOnline(agentID)
}

// Send implements api.Peers.
func (f *Peers) Send(_ context.Context, agentID string, d *livedumpv1.Directive) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delivered.add(Sent{agentID, d})
	return f.SendErr
}

// Exchange implements api.Peers (see Answer).
func (f *Peers) Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (fleet.Report, error) {
	f.mu.Lock()
	f.init()
	f.mu.Unlock()
	return f.answers.Exchange(ctx, agentID, d)
}

// Revoked implements api.Revocations.
func (f *Peers) Revoked(_ context.Context, agentID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, agentID)
}

// OperatorCertRevoked implements api.Revocations.
func (f *Peers) OperatorCertRevoked(_ context.Context, serial string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serials = append(f.serials, serial)
}

// OperatorNameRevoked implements api.Revocations.
func (f *Peers) OperatorNameRevoked(_ context.Context, name string, before time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append(f.names, name+" before "+before.UTC().Format(time.RFC3339))
}
