package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// AppendAudit writes one audit entry (store.PrepareAudit) and returns its ID.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	e = store.PrepareAudit(e, time.Now())
	// RETURNING rather than LastInsertId so the statement also works on
	// PostgreSQL, whose driver has no LastInsertId.
	var id int64
	err := s.w.QueryRowContext(ctx, sqlstore.AppendAudit,
		e.Time.UnixMilli(), e.Actor, e.Action, e.Target, e.Outcome, e.Details, e.CertSerial).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return id, nil
}

// ListAudit returns entries at or after f.Since, newest first, at most
// store.AuditLimit(f.Limit) of them. Entries in the same millisecond are
// ordered by ID so the newest insert still comes first.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	q := store.ResolveAuditFilter(f)
	return list(ctx, s.r, "list audit", sqlstore.ScanAuditEntry, `SELECT `+sqlstore.AuditColumns+`
		FROM audit WHERE time >= ?
		AND (? = 0 OR time < ? OR (time = ? AND id < ?))
		ORDER BY time DESC, id DESC LIMIT ?`,
		q.SinceMS, q.BeforeID, q.BeforeMS, q.BeforeMS, q.BeforeID, q.Limit)
}
