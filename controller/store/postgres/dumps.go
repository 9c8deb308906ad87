package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// PutDump inserts or updates a dump's agent-reported fields
// (sqlstore.PutDump); store.CheckPutDump says what it refuses.
func (s *Store) PutDump(ctx context.Context, d store.Dump) error {
	if err := store.CheckPutDump(d); err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	_, err := s.pool.Exec(ctx, putDumpSQL,
		d.ID, d.AgentID, d.CaptureID, d.EventID, d.FileName, d.Size, d.SHA256, d.State, d.Detail, sqlstore.TimeArg(d.Written), sqlstore.TimeArg(d.Updated), d.Signature,
		d.DumpType, int64(d.BugCheckCode), int64(d.OSBuild), d.DeclaredSize)
	if err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	return nil
}

// GetDump returns one dump.
func (s *Store) GetDump(ctx context.Context, id string) (store.Dump, error) {
	d, err := sqlstore.ScanDump(s.pool.QueryRow(ctx, getDumpSQL, id))
	if err != nil {
		return store.Dump{}, fmt.Errorf("get dump %s: %w", id, err)
	}
	return d, nil
}

// ListDumps returns dumps newest first.
func (s *Store) ListDumps(ctx context.Context, captureID string) ([]store.Dump, error) {
	if captureID != "" {
		return list(ctx, s.pool, "list dumps", sqlstore.ScanDump, listCaptureDumpsSQL, captureID)
	}
	return list(ctx, s.pool, "list dumps", sqlstore.ScanDump, sqlstore.ListDumps)
}

// SetDumpProgress records upload progress and state.
func (s *Store) SetDumpProgress(ctx context.Context, id string, committed, compressed int64, state, detail string, at time.Time) error {
	err := expectOne(s.pool.Exec(ctx, setDumpProgressSQL,
		committed, compressed, state, detail, sqlstore.TimeArg(at), id))
	if err != nil {
		return fmt.Errorf("set dump %s progress: %w", id, err)
	}
	return nil
}

// CountDumps counts dumps of a capture and signature in a state.
func (s *Store) CountDumps(ctx context.Context, captureID, signature, state string) (int, error) {
	var n int64
	err := s.pool.QueryRow(ctx, countDumpsSQL, captureID, signature, state).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count dumps: %w", err)
	}
	return int(n), nil
}

// MarkDumpPulled records an operator's pull.
func (s *Store) MarkDumpPulled(ctx context.Context, id string) error {
	if err := expectOne(s.pool.Exec(ctx, `UPDATE dumps SET pulled = true WHERE id = $1`, id)); err != nil {
		return fmt.Errorf("mark dump %s pulled: %w", id, err)
	}
	return nil
}

// AdmitDump decides whether a dump may upload under its capture's quotas
// (store.AdmitAllowed).
//
// Admissions for one capture are serialised by locking the capture row
// (SELECT ... FOR UPDATE), or, for a dump whose capture has no row, a
// transaction advisory lock on the capture ID. Only then are the dump
// re-read and the admitted dumps counted, each statement with a fresh READ
// COMMITTED snapshot that includes every admission committed before the
// lock was granted, so replicas admitting at once cannot both take the last
// slot.
func (s *Store) AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error) {
	admitted := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
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
	if err != nil {
		return false, fmt.Errorf("admit dump %s: %w", id, err)
	}
	return admitted, nil
}

// DumpBytes sums what dumps hold: uploaded ones whole, others what was
// committed of them.
func (s *Store) DumpBytes(ctx context.Context, agentID string) (int64, error) {
	q, args := dumpBytesSQL, []any{}
	if agentID != "" {
		q, args = agentDumpBytesSQL, []any{agentID}
	}
	var n int64
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sum dump bytes: %w", err)
	}
	return n, nil
}

// StaleDumpUploads lists partial uploads not updated since t.
func (s *Store) StaleDumpUploads(ctx context.Context, t time.Time, limit int) ([]store.Dump, error) {
	return list(ctx, s.pool, "list stale dump uploads", sqlstore.ScanDump, staleDumpUploadsSQL, sqlstore.TimeArg(t), limit)
}

// ExpireDumpUpload forgets a partial upload if it is still stale.
func (s *Store) ExpireDumpUpload(ctx context.Context, id string, t time.Time, detail string, at time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, expireDumpUploadSQL, detail, sqlstore.TimeArg(at), id, sqlstore.TimeArg(t))
	if err != nil {
		return false, fmt.Errorf("expire dump upload %s: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// SetAgentMemory records an agent's physical memory.
func (s *Store) SetAgentMemory(ctx context.Context, agentID string, bytes int64) error {
	if err := expectOne(s.pool.Exec(ctx, setAgentMemorySQL, bytes, agentID)); err != nil {
		return fmt.Errorf("set agent %s memory: %w", agentID, err)
	}
	return nil
}

// AgentMemory returns an agent's recorded physical memory.
func (s *Store) AgentMemory(ctx context.Context, agentID string) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, agentMemorySQL, agentID).Scan(&n); err != nil {
		return 0, fmt.Errorf("agent %s memory: %w", agentID, sqlstore.NotFound(err))
	}
	return n, nil
}

// GetTarget returns one capture target.
func (s *Store) GetTarget(ctx context.Context, captureID, agentID string) (store.CaptureTarget, error) {
	t, err := sqlstore.ScanTarget(s.pool.QueryRow(ctx, getTargetSQL, captureID, agentID))
	if err != nil {
		return store.CaptureTarget{}, fmt.Errorf("get target %s/%s: %w", captureID, agentID, err)
	}
	return t, nil
}
