package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// HeartbeatReplica records the replica and renews its presence lease.
func (s *Store) HeartbeatReplica(ctx context.Context, r store.Replica) error {
	r = store.PrepareHeartbeat(r, time.Now())
	_, err := s.pool.Exec(ctx, `INSERT INTO replicas (id, addr, started, heartbeat) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, started = excluded.started, heartbeat = excluded.heartbeat`,
		r.ID, r.Addr, timeArg(r.Started), r.Heartbeat.UnixMilli())
	if err != nil {
		return fmt.Errorf("heartbeat replica %s: %w", r.ID, err)
	}
	return nil
}

// ListReplicas returns every replica ordered by ID.
func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, addr, started, heartbeat FROM replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	out, err := collect(rows, func(row pgx.Row) (store.Replica, error) {
		var r store.Replica
		var started, hb *int64
		err := row.Scan(&r.ID, &r.Addr, &started, &hb)
		r.Started, r.Heartbeat = timeVal(started), timeVal(hb)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}

// SetPresence records which replica holds the agent's stream.
func (s *Store) SetPresence(ctx context.Context, agentID, replicaID, session string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO presence (agent_id, replica_id, session, since) VALUES ($1, $2, $3, $4)
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
	_, err := s.pool.Exec(ctx, `DELETE FROM presence WHERE agent_id = $1 AND replica_id = $2 AND session = $3`,
		agentID, replicaID, session)
	if err != nil {
		return fmt.Errorf("clear presence of %s: %w", agentID, err)
	}
	return nil
}

// Presence maps each agent to the replica holding its stream, leaving out
// replicas whose lease ran out.
func (s *Store) Presence(ctx context.Context, liveSince time.Time) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT p.agent_id, p.replica_id FROM presence p
		JOIN replicas r ON r.id = p.replica_id WHERE r.heartbeat >= $1`, liveSince.UnixMilli())
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

func scanDirective(row pgx.Row) (store.Directive, error) {
	var d store.Directive
	var created, updated int64
	if err := row.Scan(&d.Seq, &d.AgentID, &d.ID, &d.Body, &d.State, &d.Result, &d.Origin, &created, &updated); err != nil {
		return store.Directive{}, mapErr(err)
	}
	d.Created, d.Updated = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return d, nil
}

// EnqueueDirective stores a new directive (store.PrepareDirective) and
// returns its Seq.
func (s *Store) EnqueueDirective(ctx context.Context, d store.Directive) (int64, error) {
	d = store.PrepareDirective(d, time.Now())
	var seq int64
	err := s.pool.QueryRow(ctx, `INSERT INTO directives (agent_id, id, body, state, result, origin, created, updated)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq`,
		d.AgentID, d.ID, sqlstore.BlobArg(d.Body), d.State, d.Result, d.Origin, d.Created.UnixMilli(), d.Updated.UnixMilli()).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("enqueue directive %s for %s: %w", d.ID, d.AgentID, err)
	}
	return seq, nil
}

// PendingDirectives returns the pending directives this replica should send.
func (s *Store) PendingDirectives(ctx context.Context, replicaID string, limit int) ([]store.Directive, error) {
	rows, err := s.pool.Query(ctx, `SELECT d.seq, d.agent_id, d.id, d.body, d.state, d.result, d.origin, d.created, d.updated
		FROM directives d JOIN presence p ON p.agent_id = d.agent_id
		WHERE p.replica_id = $1 AND d.state = $2 ORDER BY d.seq LIMIT $3`, replicaID, store.DirectivePending, store.DirectiveLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("pending directives of %s: %w", replicaID, err)
	}
	out, err := collect(rows, scanDirective)
	if err != nil {
		return nil, fmt.Errorf("pending directives of %s: %w", replicaID, err)
	}
	return out, nil
}

// SetDirectiveState records a directive's progress.
func (s *Store) SetDirectiveState(ctx context.Context, seq int64, state string, result []byte, at time.Time) error {
	err := expectOne(s.pool.Exec(ctx, `UPDATE directives SET state = $1, result = $2, updated = $3 WHERE seq = $4`,
		state, sqlstore.BlobArg(result), at.UnixMilli(), seq))
	if err != nil {
		return fmt.Errorf("set directive %d state: %w", seq, err)
	}
	return nil
}

// GetDirective returns one directive.
func (s *Store) GetDirective(ctx context.Context, seq int64) (store.Directive, error) {
	d, err := scanDirective(s.pool.QueryRow(ctx, `SELECT `+directiveColumns+` FROM directives WHERE seq = $1`, seq))
	if err != nil {
		return store.Directive{}, fmt.Errorf("get directive %d: %w", seq, err)
	}
	return d, nil
}

// DeleteDirectivesBefore prunes finished directives and abandons old ones.
func (s *Store) DeleteDirectivesBefore(ctx context.Context, t time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM directives WHERE (state IN ($1, $2) AND updated < $3) OR created < $3`,
		store.DirectiveDone, store.DirectiveFailed, t.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("delete directives before %v: %w", t, err)
	}
	return int(tag.RowsAffected()), nil
}
