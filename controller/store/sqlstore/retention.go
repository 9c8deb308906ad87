package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Retention: what controller/retention reads and deletes.
const (
	// OldestDumps lists dumps oldest updated first, then by ID. Arguments:
	// the updated cut-off in ms (0: none) twice, 1 for uploaded only (else
	// 0), the paging ID, the paging updated ms twice, the paging ID, the
	// limit. A dump without an update time sorts as the oldest.
	OldestDumps = `SELECT ` + DumpColumns + ` FROM dumps
		WHERE (CAST(? AS BIGINT) = 0 OR COALESCE(updated, 0) < ?)
		AND (CAST(? AS BIGINT) = 0 OR state = '` + store.DumpUploaded + `')
		AND (? = '' OR COALESCE(updated, 0) > ? OR (COALESCE(updated, 0) = ? AND id > ?))
		ORDER BY COALESCE(updated, 0), id LIMIT ?`

	// MarkDumpRead moves a dump's read_until later, never earlier.
	// Arguments: until twice, id.
	MarkDumpRead = `UPDATE dumps SET read_until = CASE WHEN read_until IS NULL OR read_until < ? THEN ? ELSE read_until END
		WHERE id = ?`

	// DeleteDumpUnread deletes a dump no download holds. Arguments: id,
	// now in ms.
	DeleteDumpUnread = `DELETE FROM dumps WHERE id = ? AND (read_until IS NULL OR read_until <= ?)`

	// BlobReferences counts the dumps and artifacts naming a content hash.
	// Arguments: sha256 twice.
	BlobReferences = `SELECT (SELECT COUNT(*) FROM dumps WHERE sha256 = ?) + (SELECT COUNT(*) FROM artifacts WHERE sha256 = ?)`

	// DeleteCaptureEvents, DeleteEventsBefore and DeleteEventsUpTo delete
	// one batch of events, lowest Seq first. Arguments: the capture ID, the
	// time cut-off in ms, or the highest Seq; then the batch size.
	DeleteCaptureEvents = `DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE capture_id = ? ORDER BY seq LIMIT ?)`
	DeleteEventsBefore  = `DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time < ? ORDER BY seq LIMIT ?)`
	DeleteEventsUpTo    = `DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ? ORDER BY seq LIMIT ?)`

	// EventSeqBeyond reads the Seq of the newest event past the newest
	// ones kept. Argument: how many are kept.
	EventSeqBeyond = `SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?`

	// EndedCaptures lists captures that ended, expired before a cut-off,
	// and hold neither dumps nor events. Arguments: the cut-off in ms, the
	// limit.
	EndedCaptures = `SELECT id FROM captures c WHERE state <> 'active' AND expires < ?
		AND NOT EXISTS (SELECT 1 FROM dumps d WHERE d.capture_id = c.id)
		AND NOT EXISTS (SELECT 1 FROM events e WHERE e.capture_id = c.id)
		ORDER BY expires, id LIMIT ?`

	// AcquireLease takes a lease that is free, expired, or the holder's
	// own, in one statement: a row the WHERE clause keeps is not changed.
	// Arguments: name, holder, expires in ms, now in ms.
	AcquireLease = `INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
		WHERE leases.holder = excluded.holder OR leases.expires <= ?`
)

// OldestDumps lists dumps for the retention sweep, oldest updated first.
func (s *Store) OldestDumps(ctx context.Context, q store.DumpAgeQuery) ([]store.Dump, error) {
	var before, afterMS, uploaded int64
	if !q.UpdatedBefore.IsZero() {
		before = q.UpdatedBefore.UnixMilli()
	}
	if q.UploadedOnly {
		uploaded = 1
	}
	if !q.AfterUpdated.IsZero() {
		afterMS = q.AfterUpdated.UnixMilli()
	}
	return list(ctx, s.r, "list oldest dumps", ScanDump, OldestDumps,
		before, before, uploaded, q.AfterID, afterMS, afterMS, q.AfterID, store.DumpAgeLimit(q.Limit))
}

// MarkDumpRead records a download under way until until.
func (s *Store) MarkDumpRead(ctx context.Context, id string, until time.Time) error {
	ms := until.UnixMilli()
	if err := exec(ctx, s.w, MarkDumpRead, ms, ms, id); err != nil {
		return fmt.Errorf("mark dump %s read: %w", id, err)
	}
	return nil
}

// DeleteDump deletes a dump no download holds. The row is read and locked
// first (Dialect.ForUpdate; SQLite's single writer), so a download cannot
// mark it between the read and the delete.
func (s *Store) DeleteDump(ctx context.Context, id string, now time.Time) (store.Dump, error) {
	var d store.Dump
	err := s.w.InTx(ctx, func(tx DB) error {
		var err error
		if d, err = ScanDump(tx.QueryRow(ctx, GetDump+s.d.ForUpdate(), id)); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, DeleteDumpUnread, id, now.UnixMilli())
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrInUse
		}
		return nil
	})
	if err != nil {
		return store.Dump{}, fmt.Errorf("delete dump %s: %w", id, err)
	}
	return d, nil
}

// BlobReferenced reports whether a dump or an artifact names the content.
func (s *Store) BlobReferenced(ctx context.Context, sha256 string) (bool, error) {
	var n int64
	if err := s.r.QueryRow(ctx, BlobReferences, sha256, sha256).Scan(&n); err != nil {
		return false, fmt.Errorf("blob %s references: %w", sha256, err)
	}
	return n > 0, nil
}

// DeleteEvents deletes one bounded batch of events (store.CheckEventPrune).
func (s *Store) DeleteEvents(ctx context.Context, p store.EventPrune) (int, error) {
	if err := store.CheckEventPrune(p); err != nil {
		return 0, err
	}
	q, arg := DeleteEventsUpTo, any(p.UpToSeq)
	switch {
	case p.CaptureID != "":
		q, arg = DeleteCaptureEvents, p.CaptureID
	case !p.Before.IsZero():
		q, arg = DeleteEventsBefore, p.Before.UnixMilli()
	}
	n, err := s.w.Exec(ctx, q, arg, p.Limit)
	if err != nil {
		return 0, fmt.Errorf("delete events: %w", err)
	}
	return int(n), nil
}

// EventSeqBeyond returns the newest Seq past the keep newest events.
func (s *Store) EventSeqBeyond(ctx context.Context, keep int) (int64, error) {
	var seq int64
	err := NotFound(s.r.QueryRow(ctx, EventSeqBeyond, max(keep, 0)).Scan(&seq))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("event seq beyond %d: %w", keep, err)
	}
	return seq, nil
}

// EndedCaptures lists ended captures with nothing left in them.
func (s *Store) EndedCaptures(ctx context.Context, t time.Time, limit int) ([]string, error) {
	scan := func(sc Scanner) (string, error) {
		var id string
		return id, sc.Scan(&id)
	}
	return list(ctx, s.r, "list ended captures", scan, EndedCaptures, t.UnixMilli(), orLimit(limit))
}

func orLimit(n int) int {
	if n <= 0 || n > 1000 {
		return 1000
	}
	return n
}

// DeleteCapture deletes an ended capture without dumps, its targets and
// the events left, in one transaction that holds the capture row.
func (s *Store) DeleteCapture(ctx context.Context, id string) error {
	err := s.w.InTx(ctx, func(tx DB) error {
		var state string
		if err := NotFound(tx.QueryRow(ctx, `SELECT state FROM captures WHERE id = ?`+s.d.ForUpdate(), id).Scan(&state)); err != nil {
			return err
		}
		if state == "active" {
			return fmt.Errorf("capture is active: %w", store.ErrInUse)
		}
		var dumps int64
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM dumps WHERE capture_id = ?`, id).Scan(&dumps); err != nil {
			return err
		}
		if dumps > 0 {
			return fmt.Errorf("capture has %d dumps: %w", dumps, store.ErrInUse)
		}
		for _, q := range []string{
			`DELETE FROM events WHERE capture_id = ?`,
			`DELETE FROM capture_targets WHERE capture_id = ?`,
			`DELETE FROM captures WHERE id = ?`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete capture %s: %w", id, err)
	}
	return nil
}

// AcquireLease takes or renews a named lease.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	n, err := s.w.Exec(ctx, AcquireLease, name, holder, now.Add(ttl).UnixMilli(), now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return n > 0, nil
}
