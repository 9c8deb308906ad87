package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// HeartbeatReplica records the replica and renews its presence lease.
func (s *Store) HeartbeatReplica(ctx context.Context, r store.Replica) error {
	r = store.PrepareHeartbeat(r, time.Now())
	if _, err := s.w.Exec(ctx, HeartbeatReplica, r.ID, r.Addr, TimeArg(r.Started), r.Heartbeat.UnixMilli()); err != nil {
		return fmt.Errorf("heartbeat replica %s: %w", r.ID, err)
	}
	return nil
}

// ListReplicas returns every replica ordered by ID.
func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	return list(ctx, s.r, "list replicas", ScanReplica, ListReplicas)
}

// SetPresence records which replica holds the agent's stream.
func (s *Store) SetPresence(ctx context.Context, agentID, replicaID, session string, at time.Time) error {
	if _, err := s.w.Exec(ctx, SetPresence, agentID, replicaID, session, at.UnixMilli()); err != nil {
		return fmt.Errorf("set presence of %s: %w", agentID, err)
	}
	return nil
}

// ClearPresence removes the agent's presence if it is still this stream's.
// Matching on the session as well as the replica keeps a reconnect to the
// same replica from being undone by the old stream's late cleanup.
func (s *Store) ClearPresence(ctx context.Context, agentID, replicaID, session string) error {
	if _, err := s.w.Exec(ctx, ClearPresence, agentID, replicaID, session); err != nil {
		return fmt.Errorf("clear presence of %s: %w", agentID, err)
	}
	return nil
}

// ClearReplicaPresence removes every presence naming replicaID.
func (s *Store) ClearReplicaPresence(ctx context.Context, replicaID string) error {
	if _, err := s.w.Exec(ctx, ClearReplicaPresence, replicaID); err != nil {
		return fmt.Errorf("clear presence of replica %s: %w", replicaID, err)
	}
	return nil
}

// Presence maps each agent to the replica holding its stream, leaving out
// replicas whose lease ran out: their streams died with them.
func (s *Store) Presence(ctx context.Context, liveSince time.Time) (map[string]string, error) {
	rows, err := list(ctx, s.r, "presence", ScanPresence, Presence, liveSince.UnixMilli())
	if err != nil {
		return nil, err
	}
	return PresenceMap(rows), nil
}

// EnqueueDirective stores a new directive (store.PrepareDirective) and
// returns its Seq.
func (s *Store) EnqueueDirective(ctx context.Context, d store.Directive) (int64, error) {
	d = store.PrepareDirective(d, time.Now())
	var seq int64
	err := s.w.QueryRow(ctx, EnqueueDirective,
		d.AgentID, d.ID, BlobArg(d.Body), d.State, d.Result, d.Origin,
		d.Created.UnixMilli(), d.Updated.UnixMilli()).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("enqueue directive %s for %s: %w", d.ID, d.AgentID, err)
	}
	return seq, nil
}

// PendingDirectives returns the pending directives this replica should send.
func (s *Store) PendingDirectives(ctx context.Context, replicaID string, limit int) ([]store.Directive, error) {
	return list(ctx, s.r, "pending directives of "+replicaID, ScanDirective, PendingDirectives,
		replicaID, store.DirectivePending, store.DirectiveLimit(limit))
}

// SetDirectiveState records a directive's progress.
func (s *Store) SetDirectiveState(ctx context.Context, seq int64, state string, result []byte, at time.Time) error {
	if err := exec(ctx, s.w, SetDirectiveState, state, BlobArg(result), at.UnixMilli(), seq); err != nil {
		return fmt.Errorf("set directive %d state: %w", seq, err)
	}
	return nil
}

// GetDirective returns one directive.
func (s *Store) GetDirective(ctx context.Context, seq int64) (store.Directive, error) {
	d, err := ScanDirective(s.r.QueryRow(ctx, GetDirective, seq))
	if err != nil {
		return store.Directive{}, fmt.Errorf("get directive %d: %w", seq, err)
	}
	return d, nil
}

// DeleteDirectivesBefore prunes finished directives and abandons old ones.
func (s *Store) DeleteDirectivesBefore(ctx context.Context, t time.Time) (int, error) {
	ms := t.UnixMilli()
	n, err := s.w.Exec(ctx, DeleteDirectivesBefore, store.DirectiveDone, store.DirectiveFailed, ms, ms)
	if err != nil {
		return 0, fmt.Errorf("delete directives before %v: %w", t, err)
	}
	return int(n), nil
}
