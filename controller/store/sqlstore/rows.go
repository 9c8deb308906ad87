package sqlstore

import (
	"database/sql"
	"errors"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Scanner reads one row into dest. *sql.Row, *sql.Rows, pgx.Row and
// pgx.Rows all satisfy it, so one scan function serves both stores.
type Scanner interface {
	Scan(dest ...any) error
}

// Rows is the part of a result set that Collect needs; *sql.Rows and
// pgx.Rows both satisfy it. Closing stays with the caller, because the two
// drivers' Close methods differ.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// Collect reads every row of rows with scan. The result is never nil, so
// that an empty list encodes as an empty JSON array.
func Collect[T any](rows Rows, scan func(Scanner) (T, error)) ([]T, error) {
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// NotFound maps "no row" to store.ErrNotFound and returns other errors
// as they are. It serves both drivers: pgx.ErrNoRows matches
// sql.ErrNoRows.
func NotFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// TimeArg encodes t as unix milliseconds, with NULL for the zero time so
// that "unset" survives the round trip instead of becoming year 1.
func TimeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// TimeVal decodes a column written by TimeArg and scanned into an *int64
// (nil for NULL).
func TimeVal(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.UnixMilli(*v).UTC()
}
