package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

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

// CreateCapture stores a capture and its targets atomically.
func (s *Store) CreateCapture(ctx context.Context, c store.Capture, targets []store.CaptureTarget) error {
	warnings, err := sqlstore.EncodeWarnings(c.Warnings)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := conflictIfNone(tx.Exec(ctx, createCaptureSQL,
			c.ID, c.Spec, c.State, c.Detail, sqlstore.TimeArg(c.Created), sqlstore.TimeArg(c.Expires), c.CreatedBy, c.Rendered, c.Statuses, warnings))
		if err != nil || len(targets) == 0 {
			return err
		}
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
		_, err = tx.Exec(ctx, `INSERT INTO capture_targets (capture_id, agent_id, state, detail, events, updated)
			SELECT $1, a, s, d, 0, u FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS t(a, s, d, u)`,
			c.ID, agents, states, details, updated)
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("create capture %s: %w", c.ID, err)
	}
	return nil
}

// GetCapture returns one capture.
func (s *Store) GetCapture(ctx context.Context, id string) (store.Capture, error) {
	c, err := sqlstore.ScanCapture(s.pool.QueryRow(ctx, getCaptureSQL, id))
	if err != nil {
		return store.Capture{}, fmt.Errorf("get capture %s: %w", id, err)
	}
	return c, nil
}

// ListCaptures returns captures newest first, optionally only in state.
func (s *Store) ListCaptures(ctx context.Context, state string) ([]store.Capture, error) {
	if state != "" {
		return list(ctx, s.pool, "list captures", sqlstore.ScanCapture, listCapturesInStateSQL, state)
	}
	return list(ctx, s.pool, "list captures", sqlstore.ScanCapture, sqlstore.ListCaptures)
}

// SetCaptureState records a capture's state.
func (s *Store) SetCaptureState(ctx context.Context, id, state, detail string) error {
	err := expectOne(s.pool.Exec(ctx, setCaptureStateSQL, state, detail, id))
	if err != nil {
		return fmt.Errorf("set capture %s state: %w", id, err)
	}
	return nil
}

// FinishCapture ends an active capture. Concurrent updates of one row wait
// for each other and re-check the WHERE clause against the committed row,
// so exactly one replica sees the capture still active.
func (s *Store) FinishCapture(ctx context.Context, id, state, detail string) (bool, error) {
	var exists, finished bool
	err := s.pool.QueryRow(ctx, `WITH upd AS (
			UPDATE captures SET state = $1, detail = $2 WHERE id = $3 AND state = 'active' RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM captures WHERE id = $3), EXISTS (SELECT 1 FROM upd)`,
		state, detail, id).Scan(&exists, &finished)
	if err == nil && !exists {
		err = store.ErrNotFound
	}
	if err != nil {
		return false, fmt.Errorf("finish capture %s: %w", id, err)
	}
	return finished, nil
}

// ListTargets returns a capture's targets.
func (s *Store) ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error) {
	return list(ctx, s.pool, "list targets of "+captureID, sqlstore.ScanTarget, listTargetsSQL, captureID)
}

// SetTargetState records one target's state.
func (s *Store) SetTargetState(ctx context.Context, captureID, agentID, state, detail string, at time.Time) error {
	err := expectOne(s.pool.Exec(ctx, setTargetStateSQL,
		state, detail, sqlstore.TimeArg(at), captureID, agentID))
	if err != nil {
		return fmt.Errorf("set target %s/%s: %w", captureID, agentID, err)
	}
	return nil
}

// SetTargetStates applies a batch of target states in one transaction and
// one round trip (pgx.Batch), in order.
func (s *Store) SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error) {
	changed := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		changed = 0
		b := &pgx.Batch{}
		for _, u := range updates {
			b.Queue(setTargetStateSQL, u.State, u.Detail, sqlstore.TimeArg(u.Updated), u.CaptureID, u.AgentID)
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
		return 0, fmt.Errorf("set %d target states: %w", len(updates), err)
	}
	return changed, nil
}

// ClaimTarget moves a pending target to delivered while the rollout limit
// allows. Locking the capture row serialises claims for one capture across
// replicas; under READ COMMITTED the UPDATE that follows counts with a
// snapshot taken after the lock, so it sees every earlier claim.
func (s *Store) ClaimTarget(ctx context.Context, captureID, agentID string, allowed int, at time.Time) (bool, error) {
	claimed := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM captures WHERE id = $1 FOR UPDATE`, captureID).Scan(&one); err != nil {
			return mapErr(err)
		}
		tag, err := tx.Exec(ctx, `UPDATE capture_targets SET state = 'delivered', updated = $1
			WHERE capture_id = $2 AND agent_id = $3 AND state = 'pending'
			AND ($4 < 0 OR (SELECT count(*) FROM capture_targets WHERE capture_id = $2 AND state <> 'pending') < $4)`,
			sqlstore.TimeArg(at), captureID, agentID, int64(allowed))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			claimed = true
			return nil
		}
		return sqlstore.NotFound(tx.QueryRow(ctx, targetExistsSQL, captureID, agentID).Scan(&one))
	})
	if err != nil {
		return false, fmt.Errorf("claim target %s/%s: %w", captureID, agentID, err)
	}
	return claimed, nil
}

// ClaimTargets claims many targets in one transaction under the capture
// row's lock: one statement picks at most the remaining room among the
// given agents' pending targets, in the order given, and moves them.
func (s *Store) ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error) {
	var claimed []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		claimed = claimed[:0]
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM captures WHERE id = $1 FOR UPDATE`, captureID).Scan(&one); err != nil {
			return mapErr(err)
		}
		var room *int64 // NULL: LIMIT ALL
		if allowed >= 0 {
			var left int
			if err := tx.QueryRow(ctx, countClaimedTargetsSQL, captureID).Scan(&left); err != nil {
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
		return nil, fmt.Errorf("claim targets of %s: %w", captureID, err)
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
func (s *Store) InsertEvents(ctx context.Context, events []store.Event) (int, error) {
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
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("insert %d events: %w", len(events), err)
	}
	return int(inserted), nil
}

// ListEvents returns a capture's events after a sequence number.
func (s *Store) ListEvents(ctx context.Context, captureID string, afterSeq int64, limit int) ([]store.Event, error) {
	return list(ctx, s.pool, "list events of "+captureID, sqlstore.ScanEvent, listEventsSQL, captureID, afterSeq, store.EventLimit(limit))
}

// EventSeq returns the sequence number of an event.
func (s *Store) EventSeq(ctx context.Context, id string) (int64, error) {
	var seq int64
	if err := s.pool.QueryRow(ctx, eventSeqSQL, id).Scan(&seq); err != nil {
		return 0, fmt.Errorf("event %s seq: %w", id, sqlstore.NotFound(err))
	}
	return seq, nil
}

// EventSignature returns the stack signature stored with an event.
func (s *Store) EventSignature(ctx context.Context, id string) (string, error) {
	var sig string
	if err := s.pool.QueryRow(ctx, eventSignatureSQL, id).Scan(&sig); err != nil {
		return "", fmt.Errorf("event %s signature: %w", id, sqlstore.NotFound(err))
	}
	return sig, nil
}
