package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
)

const dumpColumns = `id, agent_id, capture_id, event_id, file_name, size, sha256, state, detail, written, updated, committed, compressed, signature, pulled, admitted, dump_type, bug_check_code, os_build, declared_size`

func scanDump(row pgx.Row) (store.Dump, error) {
	var d store.Dump
	var bugCheck, build int64
	var written, updated *int64
	if err := row.Scan(&d.ID, &d.AgentID, &d.CaptureID, &d.EventID, &d.FileName, &d.Size, &d.SHA256, &d.State, &d.Detail,
		&written, &updated, &d.Committed, &d.Compressed, &d.Signature, &d.Pulled, &d.Admitted,
		&d.DumpType, &bugCheck, &build, &d.DeclaredSize); err != nil {
		return store.Dump{}, mapErr(err)
	}
	d.Written, d.Updated = timeVal(written), timeVal(updated)
	d.BugCheckCode, d.OSBuild = uint32(bugCheck), uint32(build)
	return d, nil
}

// PutDump inserts or updates a dump's agent-reported fields. Progress, the
// operator's pull and the admission are not the agent's to report, so a
// later report leaves them alone; nor are the hash and size once known, or
// the uploaded state, which only a verified upload sets.
func (s *Store) PutDump(ctx context.Context, d store.Dump) error {
	if d.State == store.DumpUploaded {
		return fmt.Errorf("put dump %s: state %s is set only by a verified upload", d.ID, d.State)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO dumps (`+dumpColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, $12, false, false, $13, $14, $15, $16)
		ON CONFLICT (id) DO UPDATE SET capture_id = excluded.capture_id, event_id = excluded.event_id, file_name = excluded.file_name,
			size = CASE WHEN dumps.sha256 = '' THEN excluded.size ELSE dumps.size END,
			sha256 = CASE WHEN dumps.sha256 = '' THEN excluded.sha256 ELSE dumps.sha256 END,
			state = CASE WHEN dumps.state = 'uploaded' THEN dumps.state ELSE excluded.state END,
			detail = CASE WHEN dumps.state = 'uploaded' THEN dumps.detail ELSE excluded.detail END,
			written = excluded.written, updated = excluded.updated, signature = excluded.signature,
			dump_type = CASE WHEN excluded.dump_type = '' THEN dumps.dump_type ELSE excluded.dump_type END,
			bug_check_code = CASE WHEN excluded.dump_type = '' THEN dumps.bug_check_code ELSE excluded.bug_check_code END,
			os_build = CASE WHEN excluded.dump_type = '' THEN dumps.os_build ELSE excluded.os_build END,
			declared_size = CASE WHEN excluded.dump_type = '' THEN dumps.declared_size ELSE excluded.declared_size END`,
		d.ID, d.AgentID, d.CaptureID, d.EventID, d.FileName, d.Size, d.SHA256, d.State, d.Detail, timeArg(d.Written), timeArg(d.Updated), d.Signature,
		d.DumpType, int64(d.BugCheckCode), int64(d.OSBuild), d.DeclaredSize)
	if err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	return nil
}

// GetDump returns one dump.
func (s *Store) GetDump(ctx context.Context, id string) (store.Dump, error) {
	d, err := scanDump(s.pool.QueryRow(ctx, `SELECT `+dumpColumns+` FROM dumps WHERE id = $1`, id))
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
		q += ` WHERE capture_id = $1`
		args = append(args, captureID)
	}
	// NULLS LAST matches SQLite, where NULL sorts first ascending and so
	// last descending.
	rows, err := s.pool.Query(ctx, q+` ORDER BY written DESC NULLS LAST, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	out, err := collect(rows, scanDump)
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	return out, nil
}

// SetDumpProgress records upload progress and state.
func (s *Store) SetDumpProgress(ctx context.Context, id string, committed, compressed int64, state, detail string, at time.Time) error {
	err := expectOne(s.pool.Exec(ctx, `UPDATE dumps SET committed = $1, compressed = $2, state = $3, detail = $4, updated = $5 WHERE id = $6`,
		committed, compressed, state, detail, timeArg(at), id))
	if err != nil {
		return fmt.Errorf("set dump %s progress: %w", id, err)
	}
	return nil
}

// CountDumps counts dumps of a capture and signature in a state.
func (s *Store) CountDumps(ctx context.Context, captureID, signature, state string) (int, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dumps WHERE capture_id = $1 AND signature = $2 AND state = $3`,
		captureID, signature, state).Scan(&n)
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

// AdmitDump decides whether a dump may upload under its capture's quotas.
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
		if !pulled {
			var total, sameSig int64
			if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE signature = $2)
				FROM dumps WHERE capture_id = $1 AND admitted`, captureID, signature).Scan(&total, &sameSig); err != nil {
				return err
			}
			if maxDumps > 0 && total >= int64(maxDumps) {
				return nil
			}
			if perSignature > 0 && signature != "" && sameSig >= int64(perSignature) {
				return nil
			}
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
	q := `SELECT COALESCE(SUM(CASE WHEN state = 'uploaded' THEN size ELSE committed END), 0)::BIGINT FROM dumps`
	var args []any
	if agentID != "" {
		q += ` WHERE agent_id = $1`
		args = append(args, agentID)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sum dump bytes: %w", err)
	}
	return n, nil
}

// StaleDumpUploads lists partial uploads not updated since t.
func (s *Store) StaleDumpUploads(ctx context.Context, t time.Time, limit int) ([]store.Dump, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+dumpColumns+` FROM dumps
		WHERE state <> 'uploaded' AND committed > 0 AND updated < $1 ORDER BY updated, id LIMIT $2`, timeArg(t), limit)
	if err != nil {
		return nil, fmt.Errorf("list stale dump uploads: %w", err)
	}
	out, err := collect(rows, scanDump)
	if err != nil {
		return nil, fmt.Errorf("list stale dump uploads: %w", err)
	}
	return out, nil
}

// ExpireDumpUpload forgets a partial upload if it is still stale.
func (s *Store) ExpireDumpUpload(ctx context.Context, id string, t time.Time, detail string, at time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE dumps SET committed = 0, compressed = 0, state = 'failed', detail = $1, updated = $2
		WHERE id = $3 AND state <> 'uploaded' AND updated < $4`, detail, timeArg(at), id, timeArg(t))
	if err != nil {
		return false, fmt.Errorf("expire dump upload %s: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// SetAgentMemory records an agent's physical memory.
func (s *Store) SetAgentMemory(ctx context.Context, agentID string, bytes int64) error {
	if err := expectOne(s.pool.Exec(ctx, `UPDATE agents SET memory_bytes = $1 WHERE id = $2`, bytes, agentID)); err != nil {
		return fmt.Errorf("set agent %s memory: %w", agentID, err)
	}
	return nil
}

// AgentMemory returns an agent's recorded physical memory.
func (s *Store) AgentMemory(ctx context.Context, agentID string) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT memory_bytes FROM agents WHERE id = $1`, agentID).Scan(&n); err != nil {
		return 0, fmt.Errorf("agent %s memory: %w", agentID, mapErr(err))
	}
	return n, nil
}

// GetTarget returns one capture target.
func (s *Store) GetTarget(ctx context.Context, captureID, agentID string) (store.CaptureTarget, error) {
	var t store.CaptureTarget
	var updated *int64
	err := s.pool.QueryRow(ctx, `SELECT capture_id, agent_id, state, detail, events, updated FROM capture_targets
		WHERE capture_id = $1 AND agent_id = $2`, captureID, agentID).Scan(&t.CaptureID, &t.AgentID, &t.State, &t.Detail, &t.Events, &updated)
	if err != nil {
		return store.CaptureTarget{}, fmt.Errorf("get target %s/%s: %w", captureID, agentID, mapErr(err))
	}
	t.Updated = timeVal(updated)
	return t, nil
}
