package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// claimTarget moves a pending target to delivered while fewer than the
// allowed number of the capture's targets have left pending (a negative
// limit: no limit). Arguments: updated, capture_id, agent_id, the limit,
// capture_id, the limit.
const claimTarget = `UPDATE capture_targets SET state = 'delivered', updated = ?
	WHERE capture_id = ? AND agent_id = ? AND state = 'pending'
	AND (? < 0 OR (SELECT COUNT(*) FROM capture_targets WHERE capture_id = ? AND state <> 'pending') < ?)`

// CreateCapture stores a capture and its targets atomically: a capture is
// never visible without the agents it was created for.
func (s *Store) CreateCapture(ctx context.Context, c store.Capture, targets []store.CaptureTarget) error {
	warnings, err := EncodeWarnings(c.Warnings)
	if err != nil {
		return err
	}
	err = s.w.InTx(ctx, func(tx DB) error {
		err := s.insert(ctx, tx, CreateCapture,
			c.ID, c.Spec, c.State, c.Detail, TimeArg(c.Created), TimeArg(c.Expires), c.CreatedBy, c.Rendered, c.Statuses, warnings)
		if err != nil || len(targets) == 0 {
			return err
		}
		return s.d.InsertTargets(ctx, tx, c.ID, targets)
	})
	if err != nil {
		return fmt.Errorf("create capture %s: %w", c.ID, err)
	}
	return nil
}

// GetCapture returns one capture.
func (s *Store) GetCapture(ctx context.Context, id string) (store.Capture, error) {
	c, err := ScanCapture(s.r.QueryRow(ctx, GetCapture, id))
	if err != nil {
		return store.Capture{}, fmt.Errorf("get capture %s: %w", id, err)
	}
	return c, nil
}

// ListCaptures returns captures newest first, optionally only in state.
func (s *Store) ListCaptures(ctx context.Context, state string) ([]store.Capture, error) {
	if state != "" {
		return list(ctx, s.r, "list captures", ScanCapture, ListCapturesInState, state)
	}
	return list(ctx, s.r, "list captures", ScanCapture, ListCaptures)
}

// SetCaptureState records a capture's state.
func (s *Store) SetCaptureState(ctx context.Context, id, state, detail string) error {
	if err := exec(ctx, s.w, SetCaptureState, state, detail, id); err != nil {
		return fmt.Errorf("set capture %s state: %w", id, err)
	}
	return nil
}

// FinishCapture ends an active capture so that exactly one replica wins
// when several notice the end at once (Dialect.FinishCapture).
func (s *Store) FinishCapture(ctx context.Context, id, state, detail string) (bool, error) {
	finished, err := s.d.FinishCapture(ctx, id, state, detail)
	if err != nil {
		return false, fmt.Errorf("finish capture %s: %w", id, err)
	}
	return finished, nil
}

// ListTargets returns a capture's targets.
func (s *Store) ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error) {
	return list(ctx, s.r, "list targets of "+captureID, ScanTarget, ListTargets, captureID)
}

// GetTarget returns one capture target.
func (s *Store) GetTarget(ctx context.Context, captureID, agentID string) (store.CaptureTarget, error) {
	t, err := ScanTarget(s.r.QueryRow(ctx, GetTarget, captureID, agentID))
	if err != nil {
		return store.CaptureTarget{}, fmt.Errorf("get target %s/%s: %w", captureID, agentID, err)
	}
	return t, nil
}

// SetTargetState records one target's state.
func (s *Store) SetTargetState(ctx context.Context, captureID, agentID, state, detail string, at time.Time) error {
	if err := exec(ctx, s.w, SetTargetState, state, detail, TimeArg(at), captureID, agentID); err != nil {
		return fmt.Errorf("set target %s/%s: %w", captureID, agentID, err)
	}
	return nil
}

// SetTargetStates applies a batch of target states in one transaction
// (Dialect.SetTargetStates): a fan-out to 10,000 agents answers with
// 10,000 "armed" reports, which one commit each would make the bottleneck.
func (s *Store) SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error) {
	n, err := s.d.SetTargetStates(ctx, updates)
	if err != nil {
		return 0, fmt.Errorf("set %d target states: %w", len(updates), err)
	}
	return n, nil
}

// ClaimTarget moves a pending target to delivered while the capture's
// rollout limit allows. The limit check and the move are one statement in
// a write transaction that holds the capture (Dialect.LockCapture: a row
// lock, or SQLite's single writer), so concurrent claims can never
// overshoot allowed.
func (s *Store) ClaimTarget(ctx context.Context, captureID, agentID string, allowed int, at time.Time) (bool, error) {
	claimed := false
	err := s.w.InTx(ctx, func(tx DB) error {
		if err := s.d.LockCapture(ctx, tx, captureID); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, claimTarget, TimeArg(at), captureID, agentID, int64(allowed), captureID, int64(allowed))
		if err != nil {
			return err
		}
		if n == 1 {
			claimed = true
			return nil
		}
		var one int
		return NotFound(tx.QueryRow(ctx, TargetExists, captureID, agentID).Scan(&one))
	})
	if err != nil {
		return false, fmt.Errorf("claim target %s/%s: %w", captureID, agentID, err)
	}
	return claimed, nil
}

// ClaimTargets claims many targets in one transaction (Dialect.ClaimTargets),
// so a fan-out to 10,000 agents is one transaction, not 10,000.
func (s *Store) ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error) {
	claimed, err := s.d.ClaimTargets(ctx, captureID, agentIDs, allowed, at)
	if err != nil {
		return nil, fmt.Errorf("claim targets of %s: %w", captureID, err)
	}
	return claimed, nil
}

// InsertEvents stores a batch in one transaction (Dialect.InsertEvents),
// which is what makes the ingest rate.
func (s *Store) InsertEvents(ctx context.Context, events []store.Event) (int, error) {
	n, err := s.d.InsertEvents(ctx, events)
	if err != nil {
		return 0, fmt.Errorf("insert %d events: %w", len(events), err)
	}
	return n, nil
}

// ListEvents returns a capture's events after a sequence number.
func (s *Store) ListEvents(ctx context.Context, captureID string, afterSeq int64, limit int) ([]store.Event, error) {
	return list(ctx, s.r, "list events of "+captureID, ScanEvent, ListEvents, captureID, afterSeq, store.EventLimit(limit))
}

// EventSeq returns the sequence number of an event.
func (s *Store) EventSeq(ctx context.Context, id string) (int64, error) {
	var seq int64
	if err := s.r.QueryRow(ctx, EventSeq, id).Scan(&seq); err != nil {
		return 0, fmt.Errorf("event %s seq: %w", id, NotFound(err))
	}
	return seq, nil
}

// EventSignature returns the stack signature stored with an event.
func (s *Store) EventSignature(ctx context.Context, id string) (string, error) {
	var sig string
	if err := s.r.QueryRow(ctx, EventSignature, id).Scan(&sig); err != nil {
		return "", fmt.Errorf("event %s signature: %w", id, NotFound(err))
	}
	return sig, nil
}
