package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
)

// AppendAudit writes one audit entry (store.PrepareAudit) and returns its ID.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	e = store.PrepareAudit(e, time.Now())
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO audit (time, actor, action, target, outcome, details, cert_serial)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
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
	rows, err := s.pool.Query(ctx, `SELECT id, time, actor, action, target, outcome, details, cert_serial
		FROM audit WHERE time >= $1
		AND ($3::bigint = 0 OR (time, id) < ($4::bigint, $3::bigint))
		ORDER BY time DESC, id DESC LIMIT $2`, q.SinceMS, q.Limit, q.BeforeID, q.BeforeMS)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	out, err := collect(rows, func(row pgx.Row) (store.AuditEntry, error) {
		var e store.AuditEntry
		var ts *int64
		err := row.Scan(&e.ID, &ts, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.Details, &e.CertSerial)
		e.Time = timeVal(ts)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
