package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Audit listing bounds: the default keeps casual queries cheap, and the cap
// stops a single request from materialising the whole log in memory.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 10000
)

// auditLimit applies the default and the cap to a requested limit.
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

// AppendAudit writes one audit entry and returns its ID. A zero Time is
// replaced with the current time, because an audit record without a time
// would be useless and would sort inconsistently across databases.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
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
// f.Limit of them (100 if unset, never more than 10000). Entries in the same
// millisecond are ordered by ID so the newest insert still comes first.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	var since int64 = -1 << 62 // before any representable entry; avoids a second query shape
	if !f.Since.IsZero() {
		since = f.Since.UnixMilli()
	}
	beforeTime := f.BeforeTime.UnixMilli()
	rows, err := s.r.QueryContext(ctx, `SELECT id, time, actor, action, target, outcome, details, cert_serial
		FROM audit WHERE time >= ?
		AND (? = 0 OR time < ? OR (time = ? AND id < ?))
		ORDER BY time DESC, id DESC LIMIT ?`,
		since, f.BeforeID, beforeTime, beforeTime, f.BeforeID, auditLimit(f.Limit))
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
