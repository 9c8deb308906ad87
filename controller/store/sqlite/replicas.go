package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// HeartbeatReplica records the replica and renews its presence lease.
func (s *Store) HeartbeatReplica(ctx context.Context, r store.Replica) error {
	r = store.PrepareHeartbeat(r, time.Now())
	_, err := s.w.ExecContext(ctx, `INSERT INTO replicas (id, addr, started, heartbeat) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, started = excluded.started, heartbeat = excluded.heartbeat`,
		r.ID, r.Addr, timeArg(r.Started), r.Heartbeat.UnixMilli())
	if err != nil {
		return fmt.Errorf("heartbeat replica %s: %w", r.ID, err)
	}
	return nil
}

// ListReplicas returns every replica ordered by ID.
func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, addr, started, heartbeat FROM replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	out := []store.Replica{}
	for rows.Next() {
		var r store.Replica
		var started, hb sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Addr, &started, &hb); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		r.Started, r.Heartbeat = timeVal(started), timeVal(hb)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}

// SetPresence records which replica holds the agent's stream.
func (s *Store) SetPresence(ctx context.Context, agentID, replicaID, session string, at time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO presence (agent_id, replica_id, session, since) VALUES (?, ?, ?, ?)
		ON CONFLICT (agent_id) DO UPDATE SET replica_id = excluded.replica_id, session = excluded.session, since = excluded.since`,
		agentID, replicaID, session, at.UnixMilli())
	if err != nil {
		return fmt.Errorf("set presence of %s: %w", agentID, err)
	}
	return nil
}

// ClearPresence removes the agent's presence if it is still this stream's.
// Matching on the session as well as the replica keeps a reconnect to the
// same replica from being undone by the old stream's late cleanup.
func (s *Store) ClearPresence(ctx context.Context, agentID, replicaID, session string) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM presence WHERE agent_id = ? AND replica_id = ? AND session = ?`,
		agentID, replicaID, session)
	if err != nil {
		return fmt.Errorf("clear presence of %s: %w", agentID, err)
	}
	return nil
}

// Presence maps each agent to the replica holding its stream, leaving out
// replicas whose lease ran out: their streams died with them.
func (s *Store) Presence(ctx context.Context, liveSince time.Time) (map[string]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT p.agent_id, p.replica_id FROM presence p
		JOIN replicas r ON r.id = p.replica_id WHERE r.heartbeat >= ?`, liveSince.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var agent, replica string
		if err := rows.Scan(&agent, &replica); err != nil {
			return nil, fmt.Errorf("presence: %w", err)
		}
		out[agent] = replica
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	return out, nil
}

const directiveColumns = `seq, agent_id, id, body, state, result, origin, created, updated`

func scanDirective(sc rowScanner) (store.Directive, error) {
	var d store.Directive
	var created, updated sql.NullInt64
	if err := sc.Scan(&d.Seq, &d.AgentID, &d.ID, &d.Body, &d.State, &d.Result, &d.Origin, &created, &updated); err != nil {
		return store.Directive{}, err
	}
	d.Created, d.Updated = timeVal(created), timeVal(updated)
	return d, nil
}

// EnqueueDirective stores a new directive (store.PrepareDirective) and
// returns its Seq.
func (s *Store) EnqueueDirective(ctx context.Context, d store.Directive) (int64, error) {
	d = store.PrepareDirective(d, time.Now())
	var seq int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO directives (agent_id, id, body, state, result, origin, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
		d.AgentID, d.ID, sqlstore.BlobArg(d.Body), d.State, d.Result, d.Origin,
		d.Created.UnixMilli(), d.Updated.UnixMilli()).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("enqueue directive %s for %s: %w", d.ID, d.AgentID, err)
	}
	return seq, nil
}

// PendingDirectives returns the pending directives this replica should send.
func (s *Store) PendingDirectives(ctx context.Context, replicaID string, limit int) ([]store.Directive, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT d.seq, d.agent_id, d.id, d.body, d.state, d.result, d.origin, d.created, d.updated
		FROM directives d JOIN presence p ON p.agent_id = d.agent_id
		WHERE p.replica_id = ? AND d.state = ? ORDER BY d.seq LIMIT ?`, replicaID, store.DirectivePending, store.DirectiveLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("pending directives of %s: %w", replicaID, err)
	}
	defer rows.Close()
	out := []store.Directive{}
	for rows.Next() {
		d, err := scanDirective(rows)
		if err != nil {
			return nil, fmt.Errorf("pending directives of %s: %w", replicaID, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending directives of %s: %w", replicaID, err)
	}
	return out, nil
}

// SetDirectiveState records a directive's progress.
func (s *Store) SetDirectiveState(ctx context.Context, seq int64, state string, result []byte, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE directives SET state = ?, result = ?, updated = ? WHERE seq = ?`,
		state, sqlstore.BlobArg(result), at.UnixMilli(), seq)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set directive %d state: %w", seq, err)
	}
	return nil
}

// GetDirective returns one directive.
func (s *Store) GetDirective(ctx context.Context, seq int64) (store.Directive, error) {
	d, err := scanDirective(s.r.QueryRowContext(ctx, `SELECT `+directiveColumns+` FROM directives WHERE seq = ?`, seq))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Directive{}, fmt.Errorf("get directive %d: %w", seq, err)
	}
	return d, nil
}

// DeleteDirectivesBefore prunes finished directives and abandons old ones.
func (s *Store) DeleteDirectivesBefore(ctx context.Context, t time.Time) (int, error) {
	ms := t.UnixMilli()
	res, err := s.w.ExecContext(ctx, `DELETE FROM directives WHERE (state IN (?, ?) AND updated < ?) OR created < ?`,
		store.DirectiveDone, store.DirectiveFailed, ms, ms)
	if err != nil {
		return 0, fmt.Errorf("delete directives before %v: %w", t, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete directives before %v: %w", t, err)
	}
	return int(n), nil
}
