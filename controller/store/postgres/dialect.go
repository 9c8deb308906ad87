package postgres

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// Advisory lock classes for the two-key form pg_advisory_xact_lock(int,
// int), whose key space is separate from the one-key form the migration
// lock uses. The second key is hashtext of the capture ID.
const (
	eventsLockClass = 0x6c64_0001 // serialises event inserts per capture
	dumpsLockClass  = 0x6c64_0002 // dump admission for dumps without a capture row
)

// dialect is what PostgreSQL does its own way (sqlstore.Dialect). Several
// replicas write at once, so atomicity comes from row locks, advisory locks
// and conditional updates; batches travel as arrays (unnest) or pgx
// batches, one round trip each.
type dialect struct {
	pool *pgxpool.Pool
}

var _ sqlstore.Dialect = dialect{}

// ForUpdate locks the rows read until the transaction ends.
func (dialect) ForUpdate() string { return " FOR UPDATE" }

// Conflict maps a unique violation to store.ErrConflict.
func (dialect) Conflict(err error) error { return mapErr(err) }

// LockCapture locks the capture row, which serialises claims for one
// capture across replicas; under READ COMMITTED the statements that follow
// take snapshots after the lock, so they see every earlier claim.
func (dialect) LockCapture(ctx context.Context, tx sqlstore.DB, captureID string) error {
	var one int
	return mapErr(tx.QueryRow(ctx, `SELECT 1 FROM captures WHERE id = $1 FOR UPDATE`, captureID).Scan(&one))
}

// ListAgentsPage compares (hostname, id) as a row value.
func (dialect) ListAgentsPage(afterHostname, afterID string, limit int) (string, []any) {
	return `SELECT ` + sqlstore.AgentColumns + ` FROM agents
		WHERE $1 = '' OR (hostname, id) > ($2, $1)
		ORDER BY hostname, id LIMIT $3`, []any{afterID, afterHostname, limit}
}

// ListAudit pages newest first by the row value (time, id).
func (dialect) ListAudit(q store.AuditQuery) (string, []any) {
	return `SELECT ` + sqlstore.AuditColumns + `
		FROM audit WHERE time >= $1
		AND ($3::bigint = 0 OR (time, id) < ($4::bigint, $3::bigint))
		ORDER BY time DESC, id DESC LIMIT $2`, []any{q.SinceMS, q.Limit, q.BeforeID, q.BeforeMS}
}

// InsertTargets inserts all targets in one statement from arrays.
func (dialect) InsertTargets(ctx context.Context, tx sqlstore.DB, captureID string, targets []store.CaptureTarget) error {
	agents := make([]string, len(targets))
	states := make([]string, len(targets))
	details := make([]string, len(targets))
	updated := make([]*int64, len(targets))
	for i, t := range targets {
		agents[i], states[i], details[i] = t.AgentID, t.State, t.Detail
		if !t.Updated.IsZero() {
			ms := t.Updated.UnixMilli()
			updated[i] = &ms
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO capture_targets (capture_id, agent_id, state, detail, events, updated)
		SELECT $1, a, s, d, 0, u FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS t(a, s, d, u)`,
		captureID, agents, states, details, updated)
	return mapErr(err)
}

// FinishCapture ends an active capture in one statement. Concurrent
// updates of one row wait for each other and re-check the WHERE clause
// against the committed row, so exactly one replica sees the capture still
// active.
func (d dialect) FinishCapture(ctx context.Context, id, state, detail string) (bool, error) {
	var exists, finished bool
	err := d.pool.QueryRow(ctx, `WITH upd AS (
			UPDATE captures SET state = $1, detail = $2 WHERE id = $3 AND state = 'active' RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM captures WHERE id = $3), EXISTS (SELECT 1 FROM upd)`,
		state, detail, id).Scan(&exists, &finished)
	if err == nil && !exists {
		err = store.ErrNotFound
	}
	return finished, err
}

// SetTargetStates applies the updates in one transaction and one round
// trip (pgx.Batch), in order.
func (d dialect) SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error) {
	changed := 0
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		changed = 0
		q := rebind(sqlstore.SetTargetState)
		b := &pgx.Batch{}
		for _, u := range updates {
			b.Queue(q, u.State, u.Detail, sqlstore.TimeArg(u.Updated), u.CaptureID, u.AgentID)
		}
		br := tx.SendBatch(ctx, b)
		for range updates {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			changed += int(tag.RowsAffected())
		}
		return br.Close()
	})
	if err != nil {
		return 0, err
	}
	return changed, nil
}

// ClaimTargets claims under the capture row's lock: one statement picks at
// most the remaining room among the given agents' pending targets, in the
// order given, and moves them.
func (d dialect) ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error) {
	var claimed []string
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		claimed = claimed[:0]
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM captures WHERE id = $1 FOR UPDATE`, captureID).Scan(&one); err != nil {
			return mapErr(err)
		}
		var room *int64 // NULL: LIMIT ALL
		if allowed >= 0 {
			var left int
			if err := tx.QueryRow(ctx, rebind(sqlstore.CountClaimedTargets), captureID).Scan(&left); err != nil {
				return err
			}
			r := int64(store.RolloutRoom(allowed, left))
			room = &r
		}
		rows, err := tx.Query(ctx, `WITH pick AS (
			SELECT t.agent_id FROM unnest($2::text[]) WITH ORDINALITY AS a(agent_id, ord)
			JOIN capture_targets t ON t.capture_id = $1 AND t.agent_id = a.agent_id AND t.state = 'pending'
			ORDER BY a.ord LIMIT $3
		)
		UPDATE capture_targets t SET state = 'delivered', updated = $4 FROM pick
		WHERE t.capture_id = $1 AND t.agent_id = pick.agent_id
		RETURNING t.agent_id`, captureID, agentIDs, room, sqlstore.TimeArg(at))
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		// RETURNING has no order: give the claimed agents in the order asked.
		in := make(map[string]bool, len(got))
		for _, a := range got {
			in[a] = true
		}
		for _, a := range agentIDs {
			if in[a] {
				claimed = append(claimed, a)
				delete(in, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return claimed, nil
}

// insertEventsSQL inserts a batch given as parallel arrays, skipping IDs
// already stored (also a repeat within the batch), and adds the new events
// to their targets' counts, all in one statement and one round trip. WITH
// ORDINALITY and ORDER BY keep Seq in batch order.
const insertEventsSQL = `WITH input AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
		$7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[]) WITH ORDINALITY
		AS i(id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature, ord)
), ins AS (
	INSERT INTO events (id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature)
	SELECT id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature
	FROM input ORDER BY ord
	ON CONFLICT (id) DO NOTHING
	RETURNING capture_id, agent_id
), counts AS (
	SELECT capture_id, agent_id, count(*) AS n FROM ins GROUP BY capture_id, agent_id
), upd AS (
	UPDATE capture_targets t SET events = t.events + c.n FROM counts c
	WHERE t.capture_id = c.capture_id AND t.agent_id = c.agent_id
)
SELECT coalesce(sum(n), 0)::bigint FROM counts`

// InsertEvents stores a batch in one transaction and one round trip.
//
// Readers page through a capture's events by Seq (ListEvents after the last
// Seq seen), so a capture's events must become visible in Seq order. Two
// transactions inserting concurrently could commit out of order, the lower
// Seq last, and a reader between the commits would skip it for good. A
// per-capture advisory lock, held to commit, keeps the inserts for one
// capture in order; captures do not wait for each other. The locks are
// taken in sorted order so two batches spanning the same captures cannot
// deadlock.
func (d dialect) InsertEvents(ctx context.Context, events []store.Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	n := len(events)
	var (
		ids, captures, agents, processes = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		probes, users, kernels, sigs     = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times, pids, tids, statuses      = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, e := range events {
		ids[i], captures[i], agents[i], processes[i] = e.ID, e.CaptureID, e.AgentID, e.Process
		probes[i], users[i], kernels[i], sigs[i] = e.Probe, e.User, e.Kernel, e.Signature
		times[i], pids[i], tids[i], statuses[i] = e.Time.UnixMilli(), int64(e.PID), int64(e.TID), int64(e.Status)
	}
	lockOrder := slices.Clone(captures)
	slices.Sort(lockOrder)
	lockOrder = slices.Compact(lockOrder)

	// A batch without transaction control statements runs as one implicit
	// transaction (pgx sends a single Sync after it), so the locks are held
	// until the insert commits, and the whole call is one round trip.
	var inserted int64
	b := &pgx.Batch{}
	for _, c := range lockOrder {
		b.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(eventsLockClass), c)
	}
	b.Queue(insertEventsSQL, ids, captures, agents, times, pids, tids, processes, probes, statuses, users, kernels, sigs).
		QueryRow(func(row pgx.Row) error { return row.Scan(&inserted) })
	if err := d.pool.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	return int(inserted), nil
}

// AdmitDump serialises admissions for one capture by locking the capture
// row (SELECT ... FOR UPDATE), or, for a dump whose capture has no row, a
// transaction advisory lock on the capture ID. Only then are the dump
// re-read and the admitted dumps counted, each statement with a fresh READ
// COMMITTED snapshot that includes every admission committed before the
// lock was granted, so replicas admitting at once cannot both take the last
// slot.
func (d dialect) AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error) {
	admitted := false
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		var captureID string
		if err := tx.QueryRow(ctx, `SELECT capture_id, admitted FROM dumps WHERE id = $1`, id).Scan(&captureID, &admitted); err != nil {
			return mapErr(err)
		}
		if admitted {
			return nil
		}
		var locked bool
		err := tx.QueryRow(ctx, `SELECT true FROM captures WHERE id = $1 FOR UPDATE`, captureID).Scan(&locked)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if !locked {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(dumpsLockClass), captureID); err != nil {
				return err
			}
		}

		var signature string
		var pulled bool
		if err := tx.QueryRow(ctx, `SELECT signature, pulled, admitted FROM dumps WHERE id = $1`, id).Scan(&signature, &pulled, &admitted); err != nil {
			return mapErr(err)
		}
		if admitted {
			return nil
		}
		c := store.AdmitCounts{Pulled: pulled, Signature: signature}
		if !pulled {
			if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE signature = $2)
				FROM dumps WHERE capture_id = $1 AND admitted`, captureID, signature).Scan(&c.Admitted, &c.SameSignature); err != nil {
				return err
			}
		}
		if !store.AdmitAllowed(c, maxDumps, perSignature) {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE dumps SET admitted = true WHERE id = $1`, id); err != nil {
			return err
		}
		admitted = true
		return nil
	})
	return admitted, err
}
