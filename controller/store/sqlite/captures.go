package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// CreateCapture stores a capture and its targets atomically: a capture is
// never visible without the agents it was created for.
func (s *Store) CreateCapture(ctx context.Context, c store.Capture, targets []store.CaptureTarget) error {
	warnings, err := sqlstore.EncodeWarnings(c.Warnings)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sqlstore.CreateCapture,
			c.ID, c.Spec, c.State, c.Detail, sqlstore.TimeArg(c.Created), sqlstore.TimeArg(c.Expires), c.CreatedBy, c.Rendered, c.Statuses, warnings)
		if err != nil {
			return err
		}
		if err := conflictIfNone(res); err != nil {
			return err
		}
		for _, t := range targets {
			if _, err := tx.ExecContext(ctx, `INSERT INTO capture_targets (capture_id, agent_id, state, detail, events, updated) VALUES (?, ?, ?, ?, 0, ?)`,
				c.ID, t.AgentID, t.State, t.Detail, sqlstore.TimeArg(t.Updated)); err != nil {
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
	c, err := sqlstore.ScanCapture(s.r.QueryRowContext(ctx, sqlstore.GetCapture, id))
	if err != nil {
		return store.Capture{}, fmt.Errorf("get capture %s: %w", id, err)
	}
	return c, nil
}

// ListCaptures returns captures newest first, optionally only in state.
func (s *Store) ListCaptures(ctx context.Context, state string) ([]store.Capture, error) {
	if state != "" {
		return list(ctx, s.r, "list captures", sqlstore.ScanCapture, sqlstore.ListCapturesInState, state)
	}
	return list(ctx, s.r, "list captures", sqlstore.ScanCapture, sqlstore.ListCaptures)
}

// SetCaptureState records a capture's state.
func (s *Store) SetCaptureState(ctx context.Context, id, state, detail string) error {
	if err := s.exec(ctx, sqlstore.SetCaptureState, state, detail, id); err != nil {
		return fmt.Errorf("set capture %s state: %w", id, err)
	}
	return nil
}

// ListTargets returns a capture's targets.
func (s *Store) ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error) {
	return list(ctx, s.r, "list targets of "+captureID, sqlstore.ScanTarget, sqlstore.ListTargets, captureID)
}

// SetTargetState records one target's state.
func (s *Store) SetTargetState(ctx context.Context, captureID, agentID, state, detail string, at time.Time) error {
	if err := s.exec(ctx, sqlstore.SetTargetState, state, detail, sqlstore.TimeArg(at), captureID, agentID); err != nil {
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
		st, err := tx.PrepareContext(ctx, sqlstore.SetTargetState)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, u := range updates {
			res, err := st.ExecContext(ctx, u.State, u.Detail, sqlstore.TimeArg(u.Updated), u.CaptureID, u.AgentID)
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
			res, err := ins.ExecContext(ctx, e.ID, e.CaptureID, e.AgentID, sqlstore.TimeArg(e.Time), e.PID, e.TID, e.Process, e.Probe, int64(e.Status), e.User, e.Kernel, e.Signature)
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
	return list(ctx, s.r, "list events of "+captureID, sqlstore.ScanEvent, sqlstore.ListEvents, captureID, afterSeq, store.EventLimit(limit))
}

// EventSeq returns the sequence number of an event.
func (s *Store) EventSeq(ctx context.Context, id string) (int64, error) {
	var seq int64
	if err := s.r.QueryRowContext(ctx, sqlstore.EventSeq, id).Scan(&seq); err != nil {
		return 0, fmt.Errorf("event %s seq: %w", id, sqlstore.NotFound(err))
	}
	return seq, nil
}

// EventSignature returns the stack signature stored with an event.
func (s *Store) EventSignature(ctx context.Context, id string) (string, error) {
	var sig string
	if err := s.r.QueryRowContext(ctx, sqlstore.EventSignature, id).Scan(&sig); err != nil {
		return "", fmt.Errorf("event %s signature: %w", id, sqlstore.NotFound(err))
	}
	return sig, nil
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
			sqlstore.TimeArg(at), captureID, agentID, allowed, captureID, allowed)
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
		return sqlstore.NotFound(tx.QueryRowContext(ctx, sqlstore.TargetExists, captureID, agentID).Scan(&one))
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
			if err := tx.QueryRowContext(ctx, sqlstore.CountClaimedTargets, captureID).Scan(&left); err != nil {
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
			res, err := st.ExecContext(ctx, sqlstore.TimeArg(at), captureID, a)
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
		return sqlstore.NotFound(tx.QueryRowContext(ctx, `SELECT 1 FROM captures WHERE id = ?`, id).Scan(&one))
	})
	if err != nil {
		return false, fmt.Errorf("finish capture %s: %w", id, err)
	}
	return finished, nil
}
