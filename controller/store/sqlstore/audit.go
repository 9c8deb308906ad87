package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// AppendAudit writes one audit entry (store.PrepareAudit) and returns its
// ID, read with RETURNING, which both databases have.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	e = store.PrepareAudit(e, time.Now())
	var id int64
	err := s.w.QueryRow(ctx, AppendAudit,
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
	q, args := s.d.ListAudit(store.ResolveAuditFilter(f))
	return list(ctx, s.r, "list audit", ScanAuditEntry, q, args...)
}
