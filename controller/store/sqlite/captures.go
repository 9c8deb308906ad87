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

const captureColumns = `id, spec, state, detail, created, expires, created_by, rendered, statuses, warnings`

func scanCapture(sc rowScanner) (store.Capture, error) {
	var (
		c                store.Capture
		created, expires sql.NullInt64
		warnings         string
	)
	if err := sc.Scan(&c.ID, &c.Spec, &c.State, &c.Detail, &created, &expires, &c.CreatedBy, &c.Rendered, &c.Statuses, &warnings); err != nil {
		return store.Capture{}, err
	}
	c.Created, c.Expires = timeVal(created), timeVal(expires)
	var err error
	if c.Warnings, err = sqlstore.DecodeWarnings(c.ID, warnings); err != nil {
		return store.Capture{}, err
	}
	return c, nil
}

// CreateCapture stores a capture and its targets atomically: a capture is
// never visible without the agents it was created for.
func (s *Store) CreateCapture(ctx context.Context, c store.Capture, targets []store.CaptureTarget) error {
	warnings, err := sqlstore.EncodeWarnings(c.Warnings)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO captures (`+captureColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`,
			c.ID, c.Spec, c.State, c.Detail, timeArg(c.Created), timeArg(c.Expires), c.CreatedBy, c.Rendered, c.Statuses, warnings)
		if err != nil {
			return err
		}
		if err := conflictIfNone(res); err != nil {
			return err
		}
		for _, t := range targets {
			if _, err := tx.ExecContext(ctx, `INSERT INTO capture_targets (capture_id, agent_id, state, detail, events, updated) VALUES (?, ?, ?, ?, 0, ?)`,
				c.ID, t.AgentID, t.State, t.Detail, timeArg(t.Updated)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create capture %s: %w", c.ID, err)
	}
	return nil
}

// GetCapture returns one capture.
func (s *Store) GetCapture(ctx context.Context, id string) (store.Capture, error) {
	c, err := scanCapture(s.r.QueryRowContext(ctx, `SELECT `+captureColumns+` FROM captures WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Capture{}, store.ErrNotFound
	}
	if err != nil {
		return store.Capture{}, fmt.Errorf("get capture %s: %w", id, err)
	}
	return c, nil
}

// ListCaptures returns captures newest first, optionally only in state.
func (s *Store) ListCaptures(ctx context.Context, state string) ([]store.Capture, error) {
	q := `SELECT ` + captureColumns + ` FROM captures`
	var args []any
	if state != "" {
		q += ` WHERE state = ?`
		args = append(args, state)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY created DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list captures: %w", err)
	}
	defer rows.Close()
	out := []store.Capture{}
	for rows.Next() {
		c, err := scanCapture(rows)
		if err != nil {
			return nil, fmt.Errorf("list captures: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// SetCaptureState records a capture's state.
func (s *Store) SetCaptureState(ctx context.Context, id, state, detail string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE captures SET state = ?, detail = ? WHERE id = ?`, state, detail, id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set capture %s state: %w", id, err)
	}
	return nil
}

// ListTargets returns a capture's targets.
func (s *Store) ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT capture_id, agent_id, state, detail, events, updated FROM capture_targets
		WHERE capture_id = ? ORDER BY agent_id`, captureID)
	if err != nil {
		return nil, fmt.Errorf("list targets of %s: %w", captureID, err)
	}
	defer rows.Close()
	out := []store.CaptureTarget{}
	for rows.Next() {
		var t store.CaptureTarget
		var updated sql.NullInt64
		if err := rows.Scan(&t.CaptureID, &t.AgentID, &t.State, &t.Detail, &t.Events, &updated); err != nil {
			return nil, fmt.Errorf("list targets of %s: %w", captureID, err)
		}
		t.Updated = timeVal(updated)
		out = append(out, t)
	}
	return out, rows.Err()
}

// SetTargetState records one target's state.
func (s *Store) SetTargetState(ctx context.Context, captureID, agentID, state, detail string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE capture_targets SET state = ?, detail = ?, updated = ? WHERE capture_id = ? AND agent_id = ?`,
		state, detail, timeArg(at), captureID, agentID)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set target %s/%s: %w", captureID, agentID, err)
	}
	return nil
}

// SetTargetStates applies a batch of target states in one transaction: a
// fan-out to 10,000 agents answers with 10,000 "armed" reports, which one
// commit each would make the writer's bottleneck.
func (s *Store) SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error) {
	changed := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		changed = 0
		st, err := tx.PrepareContext(ctx, `UPDATE capture_targets SET state = ?, detail = ?, updated = ? WHERE capture_id = ? AND agent_id = ?`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, u := range updates {
			res, err := st.ExecContext(ctx, u.State, u.Detail, timeArg(u.Updated), u.CaptureID, u.AgentID)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			changed += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("set %d target states: %w", len(updates), err)
	}
	return changed, nil
}

// InsertEvents stores a batch in one transaction, which is what makes the
// ingest rate: one fsync per batch, not per event.
func (s *Store) InsertEvents(ctx context.Context, events []store.Event) (int, error) {
	inserted := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ins, err := tx.PrepareContext(ctx, `INSERT INTO events (id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`)
		if err != nil {
			return err
		}
		defer ins.Close()
		count, err := tx.PrepareContext(ctx, `UPDATE capture_targets SET events = events + 1 WHERE capture_id = ? AND agent_id = ?`)
		if err != nil {
			return err
		}
		defer count.Close()
		inserted = 0
		for _, e := range events {
			res, err := ins.ExecContext(ctx, e.ID, e.CaptureID, e.AgentID, timeArg(e.Time), e.PID, e.TID, e.Process, e.Probe, int64(e.Status), e.User, e.Kernel, e.Signature)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue // a re-sent event: already stored
			}
			inserted++
			if _, err := count.ExecContext(ctx, e.CaptureID, e.AgentID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("insert %d events: %w", len(events), err)
	}
	return inserted, nil
}

// ListEvents returns a capture's events after a sequence number.
func (s *Store) ListEvents(ctx context.Context, captureID string, afterSeq int64, limit int) ([]store.Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature
		FROM events WHERE capture_id = ? AND seq > ? ORDER BY seq LIMIT ?`, captureID, afterSeq, store.EventLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list events of %s: %w", captureID, err)
	}
	defer rows.Close()
	out := []store.Event{}
	for rows.Next() {
		var e store.Event
		var t sql.NullInt64
		var status int64
		if err := rows.Scan(&e.Seq, &e.ID, &e.CaptureID, &e.AgentID, &t, &e.PID, &e.TID, &e.Process, &e.Probe, &status, &e.User, &e.Kernel, &e.Signature); err != nil {
			return nil, fmt.Errorf("list events of %s: %w", captureID, err)
		}
		e.Time, e.Status = timeVal(t), uint32(status)
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventSeq returns the sequence number of an event.
func (s *Store) EventSeq(ctx context.Context, id string) (int64, error) {
	var seq int64
	err := s.r.QueryRowContext(ctx, `SELECT seq FROM events WHERE id = ?`, id).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, store.ErrNotFound
	}
	return seq, err
}

// EventSignature returns the stack signature stored with an event.
func (s *Store) EventSignature(ctx context.Context, id string) (string, error) {
	var sig string
	err := s.r.QueryRowContext(ctx, `SELECT signature FROM events WHERE id = ?`, id).Scan(&sig)
	if errors.Is(err, sql.ErrNoRows) {
		return "", store.ErrNotFound
	}
	return sig, err
}

// ClaimTarget moves a pending target to delivered while the capture's
// rollout limit allows. The limit check and the move are one statement on
// the single writer connection, and BEGIN IMMEDIATE serialises it against
// other processes, so concurrent claims can never overshoot allowed.
func (s *Store) ClaimTarget(ctx context.Context, captureID, agentID string, allowed int, at time.Time) (bool, error) {
	claimed := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE capture_targets SET state = 'delivered', updated = ?
			WHERE capture_id = ? AND agent_id = ? AND state = 'pending'
			AND (? < 0 OR (SELECT COUNT(*) FROM capture_targets WHERE capture_id = ? AND state <> 'pending') < ?)`,
			timeArg(at), captureID, agentID, allowed, captureID, allowed)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			claimed = true
			return nil
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM capture_targets WHERE capture_id = ? AND agent_id = ?`, captureID, agentID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("claim target %s/%s: %w", captureID, agentID, err)
	}
	return claimed, nil
}

// ClaimTargets claims many targets in one write transaction: the count of
// targets that left pending is read once, then each UPDATE is by primary
// key, so a fan-out to 10,000 agents is one transaction, not 10,000.
func (s *Store) ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error) {
	var claimed []string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		claimed = claimed[:0]
		room := -1
		if allowed >= 0 {
			var left int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM capture_targets WHERE capture_id = ? AND state <> 'pending'`, captureID).Scan(&left); err != nil {
				return err
			}
			room = store.RolloutRoom(allowed, left)
		}
		st, err := tx.PrepareContext(ctx, `UPDATE capture_targets SET state = 'delivered', updated = ? WHERE capture_id = ? AND agent_id = ? AND state = 'pending'`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, a := range agentIDs {
			if room == 0 {
				break
			}
			res, err := st.ExecContext(ctx, timeArg(at), captureID, a)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				claimed = append(claimed, a)
				if room > 0 {
					room--
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim targets of %s: %w", captureID, err)
	}
	return claimed, nil
}

// FinishCapture ends an active capture; the state condition in the UPDATE
// is what lets exactly one replica win when several notice the end at once.
func (s *Store) FinishCapture(ctx context.Context, id, state, detail string) (bool, error) {
	finished := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE captures SET state = ?, detail = ? WHERE id = ? AND state = 'active'`, state, detail, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			finished = true
			return nil
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM captures WHERE id = ?`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("finish capture %s: %w", id, err)
	}
	return finished, nil
}
