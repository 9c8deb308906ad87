package postgres

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
	var id int64
	err := s.pool.QueryRow(ctx, appendAuditSQL,
		e.Time.UnixMilli(), e.Actor, e.Action, e.Target, e.Outcome, e.Details, e.CertSerial).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return id, nil
}

// ListAudit returns entries at or after f.Since, newest first, at most
// store.AuditLimit(f.Limit) of them.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	q := store.ResolveAuditFilter(f)
	return list(ctx, s.pool, "list audit", sqlstore.ScanAuditEntry, `SELECT `+sqlstore.AuditColumns+`
		FROM audit WHERE time >= $1
		AND ($3::bigint = 0 OR (time, id) < ($4::bigint, $3::bigint))
		ORDER BY time DESC, id DESC LIMIT $2`, q.SinceMS, q.Limit, q.BeforeID, q.BeforeMS)
}
