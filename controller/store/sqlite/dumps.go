package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// PutDump inserts or updates a dump's agent-reported fields
// (sqlstore.PutDump); store.CheckPutDump says what it refuses.
func (s *Store) PutDump(ctx context.Context, d store.Dump) error {
	if err := store.CheckPutDump(d); err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	_, err := s.w.ExecContext(ctx, sqlstore.PutDump,
		d.ID, d.AgentID, d.CaptureID, d.EventID, d.FileName, d.Size, d.SHA256, d.State, d.Detail, sqlstore.TimeArg(d.Written), sqlstore.TimeArg(d.Updated), d.Signature,
		d.DumpType, int64(d.BugCheckCode), int64(d.OSBuild), d.DeclaredSize)
	if err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	return nil
}

// GetDump returns one dump.
func (s *Store) GetDump(ctx context.Context, id string) (store.Dump, error) {
	d, err := sqlstore.ScanDump(s.r.QueryRowContext(ctx, sqlstore.GetDump, id))
	if err != nil {
		return store.Dump{}, fmt.Errorf("get dump %s: %w", id, err)
	}
	return d, nil
}

// ListDumps returns dumps newest first.
func (s *Store) ListDumps(ctx context.Context, captureID string) ([]store.Dump, error) {
	if captureID != "" {
		return list(ctx, s.r, "list dumps", sqlstore.ScanDump, sqlstore.ListCaptureDumps, captureID)
	}
	return list(ctx, s.r, "list dumps", sqlstore.ScanDump, sqlstore.ListDumps)
}

// SetDumpProgress records upload progress and state.
func (s *Store) SetDumpProgress(ctx context.Context, id string, committed, compressed int64, state, detail string, at time.Time) error {
	if err := s.exec(ctx, sqlstore.SetDumpProgress, committed, compressed, state, detail, sqlstore.TimeArg(at), id); err != nil {
		return fmt.Errorf("set dump %s progress: %w", id, err)
	}
	return nil
}

// CountDumps counts dumps of a capture and signature in a state.
func (s *Store) CountDumps(ctx context.Context, captureID, signature, state string) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, sqlstore.CountDumps, captureID, signature, state).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count dumps: %w", err)
	}
	return n, nil
}

// MarkDumpPulled records an operator's pull.
func (s *Store) MarkDumpPulled(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE dumps SET pulled = 1 WHERE id = ?`, id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("mark dump %s pulled: %w", id, err)
	}
	return nil
}

// AdmitDump decides whether a dump may upload under its capture's quotas
// (store.AdmitAllowed). The counts and the mark share one write transaction, and writes are
// serialised (one writer connection, BEGIN IMMEDIATE across processes), so
// no two admissions can both see room for the last slot.
func (s *Store) AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error) {
	admitted := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var captureID, signature string
		var pulled, already int64
		err := tx.QueryRowContext(ctx, `SELECT capture_id, signature, pulled, admitted FROM dumps WHERE id = ?`, id).
			Scan(&captureID, &signature, &pulled, &already)
		if err != nil {
			return sqlstore.NotFound(err)
		}
		if already != 0 {
			admitted = true
			return nil
		}
		c := store.AdmitCounts{Pulled: pulled != 0, Signature: signature}
		if !c.Pulled && (maxDumps > 0 || perSignature > 0) {
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(signature = ?), 0)
				FROM dumps WHERE capture_id = ? AND admitted = 1`, signature, captureID).Scan(&c.Admitted, &c.SameSignature); err != nil {
				return err
			}
		}
		if !store.AdmitAllowed(c, maxDumps, perSignature) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE dumps SET admitted = 1 WHERE id = ?`, id); err != nil {
			return err
		}
		admitted = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("admit dump %s: %w", id, err)
	}
	return admitted, nil
}

// DumpBytes sums what dumps hold: uploaded ones whole, others what was
// committed of them.
func (s *Store) DumpBytes(ctx context.Context, agentID string) (int64, error) {
	q, args := sqlstore.DumpBytes, []any{}
	if agentID != "" {
		q, args = sqlstore.AgentDumpBytes, []any{agentID}
	}
	var n int64
	if err := s.r.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sum dump bytes: %w", err)
	}
	return n, nil
}

// StaleDumpUploads lists partial uploads not updated since t.
func (s *Store) StaleDumpUploads(ctx context.Context, t time.Time, limit int) ([]store.Dump, error) {
	return list(ctx, s.r, "list stale dump uploads", sqlstore.ScanDump, sqlstore.StaleDumpUploads, sqlstore.TimeArg(t), limit)
}

// ExpireDumpUpload forgets a partial upload if it is still stale.
func (s *Store) ExpireDumpUpload(ctx context.Context, id string, t time.Time, detail string, at time.Time) (bool, error) {
	res, err := s.w.ExecContext(ctx, sqlstore.ExpireDumpUpload, detail, sqlstore.TimeArg(at), id, sqlstore.TimeArg(t))
	if err != nil {
		return false, fmt.Errorf("expire dump upload %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("expire dump upload %s: %w", id, err)
	}
	return n > 0, nil
}

// SetAgentMemory records an agent's physical memory.
func (s *Store) SetAgentMemory(ctx context.Context, agentID string, bytes int64) error {
	if err := s.exec(ctx, sqlstore.SetAgentMemory, bytes, agentID); err != nil {
		return fmt.Errorf("set agent %s memory: %w", agentID, err)
	}
	return nil
}

// AgentMemory returns an agent's recorded physical memory.
func (s *Store) AgentMemory(ctx context.Context, agentID string) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, sqlstore.AgentMemory, agentID).Scan(&n); err != nil {
		return 0, fmt.Errorf("agent %s memory: %w", agentID, sqlstore.NotFound(err))
	}
	return n, nil
}

// GetTarget returns one capture target.
func (s *Store) GetTarget(ctx context.Context, captureID, agentID string) (store.CaptureTarget, error) {
	t, err := sqlstore.ScanTarget(s.r.QueryRowContext(ctx, sqlstore.GetTarget, captureID, agentID))
	if err != nil {
		return store.CaptureTarget{}, fmt.Errorf("get target %s/%s: %w", captureID, agentID, err)
	}
	return t, nil
}
