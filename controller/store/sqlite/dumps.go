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

const dumpColumns = sqlstore.DumpColumns

func scanDump(sc rowScanner) (store.Dump, error) {
	var d store.Dump
	var bugCheck, build int64
	var written, updated sql.NullInt64
	var pulled, admitted int64
	if err := sc.Scan(&d.ID, &d.AgentID, &d.CaptureID, &d.EventID, &d.FileName, &d.Size, &d.SHA256, &d.State, &d.Detail,
		&written, &updated, &d.Committed, &d.Compressed, &d.Signature, &pulled, &admitted,
		&d.DumpType, &bugCheck, &build, &d.DeclaredSize); err != nil {
		return store.Dump{}, err
	}
	d.Pulled, d.Admitted = pulled != 0, admitted != 0
	d.Written, d.Updated = timeVal(written), timeVal(updated)
	d.BugCheckCode, d.OSBuild = uint32(bugCheck), uint32(build)
	return d, nil
}

// PutDump inserts or updates a dump's agent-reported fields
// (sqlstore.PutDump); store.CheckPutDump says what it refuses.
func (s *Store) PutDump(ctx context.Context, d store.Dump) error {
	if err := store.CheckPutDump(d); err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	_, err := s.w.ExecContext(ctx, sqlstore.PutDump,
		d.ID, d.AgentID, d.CaptureID, d.EventID, d.FileName, d.Size, d.SHA256, d.State, d.Detail, timeArg(d.Written), timeArg(d.Updated), d.Signature,
		d.DumpType, int64(d.BugCheckCode), int64(d.OSBuild), d.DeclaredSize)
	if err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	return nil
}

// GetDump returns one dump.
func (s *Store) GetDump(ctx context.Context, id string) (store.Dump, error) {
	d, err := scanDump(s.r.QueryRowContext(ctx, `SELECT `+dumpColumns+` FROM dumps WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Dump{}, store.ErrNotFound
	}
	if err != nil {
		return store.Dump{}, fmt.Errorf("get dump %s: %w", id, err)
	}
	return d, nil
}

// ListDumps returns dumps newest first.
func (s *Store) ListDumps(ctx context.Context, captureID string) ([]store.Dump, error) {
	q := `SELECT ` + dumpColumns + ` FROM dumps`
	var args []any
	if captureID != "" {
		q += ` WHERE capture_id = ?`
		args = append(args, captureID)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY written DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	defer rows.Close()
	out := []store.Dump{}
	for rows.Next() {
		d, err := scanDump(rows)
		if err != nil {
			return nil, fmt.Errorf("list dumps: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// SetDumpProgress records upload progress and state.
func (s *Store) SetDumpProgress(ctx context.Context, id string, committed, compressed int64, state, detail string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE dumps SET committed = ?, compressed = ?, state = ?, detail = ?, updated = ? WHERE id = ?`,
		committed, compressed, state, detail, timeArg(at), id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set dump %s progress: %w", id, err)
	}
	return nil
}

// CountDumps counts dumps of a capture and signature in a state.
func (s *Store) CountDumps(ctx context.Context, captureID, signature, state string) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM dumps WHERE capture_id = ? AND signature = ? AND state = ?`, captureID, signature, state).Scan(&n)
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
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
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
	rows, err := s.r.QueryContext(ctx, sqlstore.StaleDumpUploads, timeArg(t), limit)
	if err != nil {
		return nil, fmt.Errorf("list stale dump uploads: %w", err)
	}
	defer rows.Close()
	out := []store.Dump{}
	for rows.Next() {
		d, err := scanDump(rows)
		if err != nil {
			return nil, fmt.Errorf("list stale dump uploads: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ExpireDumpUpload forgets a partial upload if it is still stale.
func (s *Store) ExpireDumpUpload(ctx context.Context, id string, t time.Time, detail string, at time.Time) (bool, error) {
	res, err := s.w.ExecContext(ctx, sqlstore.ExpireDumpUpload, detail, timeArg(at), id, timeArg(t))
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
	res, err := s.w.ExecContext(ctx, `UPDATE agents SET memory_bytes = ? WHERE id = ?`, bytes, agentID)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set agent %s memory: %w", agentID, err)
	}
	return nil
}

// AgentMemory returns an agent's recorded physical memory.
func (s *Store) AgentMemory(ctx context.Context, agentID string) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT memory_bytes FROM agents WHERE id = ?`, agentID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, store.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("agent %s memory: %w", agentID, err)
	}
	return n, nil
}

// GetTarget returns one capture target.
func (s *Store) GetTarget(ctx context.Context, captureID, agentID string) (store.CaptureTarget, error) {
	var t store.CaptureTarget
	var updated sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT capture_id, agent_id, state, detail, events, updated FROM capture_targets
		WHERE capture_id = ? AND agent_id = ?`, captureID, agentID).Scan(&t.CaptureID, &t.AgentID, &t.State, &t.Detail, &t.Events, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return store.CaptureTarget{}, store.ErrNotFound
	}
	if err != nil {
		return store.CaptureTarget{}, fmt.Errorf("get target %s/%s: %w", captureID, agentID, err)
	}
	t.Updated = timeVal(updated)
	return t, nil
}
