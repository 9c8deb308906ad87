package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
)

// Audit listing bounds, the same as SQLite's: the default keeps casual
// queries cheap, and the cap stops one request from reading the whole log.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 10000
)

func auditLimit(n int) int {
	switch {
	case n <= 0:
		return defaultAuditLimit
	case n > maxAuditLimit:
		return maxAuditLimit
	default:
		return n
	}
}

// AppendAudit writes one audit entry and returns its ID; a zero Time is
// replaced with the current time.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
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
// f.Limit of them (100 if unset, never more than 10000).
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	var since int64 = -1 << 62
	if !f.Since.IsZero() {
		since = f.Since.UnixMilli()
	}
	rows, err := s.pool.Query(ctx, `SELECT id, time, actor, action, target, outcome, details, cert_serial
		FROM audit WHERE time >= $1
		AND ($3::bigint = 0 OR (time, id) < ($4::bigint, $3::bigint))
		ORDER BY time DESC, id DESC LIMIT $2`, since, auditLimit(f.Limit), f.BeforeID, f.BeforeTime.UnixMilli())
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
