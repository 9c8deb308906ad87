package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// markDumpPulled records an operator's pull. Argument: id.
const markDumpPulled = `UPDATE dumps SET pulled = TRUE WHERE id = ?`

// PutDump inserts or updates a dump's agent-reported fields (PutDump's
// statement); store.CheckPutDump says what it refuses.
func (s *Store) PutDump(ctx context.Context, d store.Dump) error {
	if err := store.CheckPutDump(d); err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	_, err := s.w.Exec(ctx, PutDump,
		d.ID, d.AgentID, d.CaptureID, d.EventID, d.FileName, d.Size, d.SHA256, d.State, d.Detail, TimeArg(d.Written), TimeArg(d.Updated), d.Signature,
		d.DumpType, int64(d.BugCheckCode), int64(d.OSBuild), d.DeclaredSize)
	if err != nil {
		return fmt.Errorf("put dump %s: %w", d.ID, err)
	}
	return nil
}

// GetDump returns one dump.
func (s *Store) GetDump(ctx context.Context, id string) (store.Dump, error) {
	d, err := ScanDump(s.r.QueryRow(ctx, GetDump, id))
	if err != nil {
		return store.Dump{}, fmt.Errorf("get dump %s: %w", id, err)
	}
	return d, nil
}

// ListDumps returns dumps newest first.
func (s *Store) ListDumps(ctx context.Context, captureID string) ([]store.Dump, error) {
	if captureID != "" {
		return list(ctx, s.r, "list dumps", ScanDump, ListCaptureDumps, captureID)
	}
	return list(ctx, s.r, "list dumps", ScanDump, ListDumps)
}

// SetDumpProgress records upload progress and state.
func (s *Store) SetDumpProgress(ctx context.Context, id string, committed, compressed int64, state, detail string, at time.Time) error {
	if err := exec(ctx, s.w, SetDumpProgress, committed, compressed, state, detail, TimeArg(at), id); err != nil {
		return fmt.Errorf("set dump %s progress: %w", id, err)
	}
	return nil
}

// CountDumps counts dumps of a capture and signature in a state.
func (s *Store) CountDumps(ctx context.Context, captureID, signature, state string) (int, error) {
	var n int64
	if err := s.r.QueryRow(ctx, CountDumps, captureID, signature, state).Scan(&n); err != nil {
		return 0, fmt.Errorf("count dumps: %w", err)
	}
	return int(n), nil
}

// MarkDumpPulled records an operator's pull.
func (s *Store) MarkDumpPulled(ctx context.Context, id string) error {
	if err := exec(ctx, s.w, markDumpPulled, id); err != nil {
		return fmt.Errorf("mark dump %s pulled: %w", id, err)
	}
	return nil
}

// AdmitDump decides whether a dump may upload under its capture's quotas
// (store.AdmitAllowed); Dialect.AdmitDump says how two admissions at once
// are kept from both taking the last slot.
func (s *Store) AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error) {
	admitted, err := s.d.AdmitDump(ctx, id, maxDumps, perSignature)
	if err != nil {
		return false, fmt.Errorf("admit dump %s: %w", id, err)
	}
	return admitted, nil
}

// DumpBytes sums what dumps hold: uploaded ones whole, others what was
// committed of them.
func (s *Store) DumpBytes(ctx context.Context, agentID string) (int64, error) {
	q, args := DumpBytes, []any{}
	if agentID != "" {
		q, args = AgentDumpBytes, []any{agentID}
	}
	var n int64
	if err := s.r.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sum dump bytes: %w", err)
	}
	return n, nil
}

// StaleDumpUploads lists partial uploads not updated since t.
func (s *Store) StaleDumpUploads(ctx context.Context, t time.Time, limit int) ([]store.Dump, error) {
	return list(ctx, s.r, "list stale dump uploads", ScanDump, StaleDumpUploads, TimeArg(t), limit)
}

// ExpireDumpUpload forgets a partial upload if it is still stale.
func (s *Store) ExpireDumpUpload(ctx context.Context, id string, t time.Time, detail string, at time.Time) (bool, error) {
	n, err := s.w.Exec(ctx, ExpireDumpUpload, detail, TimeArg(at), id, TimeArg(t))
	if err != nil {
		return false, fmt.Errorf("expire dump upload %s: %w", id, err)
	}
	return n > 0, nil
}
