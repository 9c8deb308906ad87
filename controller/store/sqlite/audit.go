package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// AppendAudit writes one audit entry (store.PrepareAudit) and returns its ID.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	e = store.PrepareAudit(e, time.Now())
	// RETURNING rather than LastInsertId so the statement also works on
	// PostgreSQL, whose driver has no LastInsertId.
	var id int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO audit (time, actor, action, target, outcome, details, cert_serial)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
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
	rows, err := s.r.QueryContext(ctx, `SELECT id, time, actor, action, target, outcome, details, cert_serial
		FROM audit WHERE time >= ?
		AND (? = 0 OR time < ? OR (time = ? AND id < ?))
		ORDER BY time DESC, id DESC LIMIT ?`,
		q.SinceMS, q.BeforeID, q.BeforeMS, q.BeforeMS, q.BeforeID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []store.AuditEntry{}
	for rows.Next() {
		var (
			e  store.AuditEntry
			ts sql.NullInt64
		)
		if err := rows.Scan(&e.ID, &ts, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.Details, &e.CertSerial); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = timeVal(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
