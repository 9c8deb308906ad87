package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// DB is what Store needs of a database: statements written with ?
// placeholders (the adapter binds them as its driver wants), the number of
// rows a write changed, and transactions. The sqlite package adapts
// database/sql to it and the postgres package a pgx pool.
type DB interface {
	// Exec runs a statement and returns how many rows it changed.
	Exec(ctx context.Context, q string, args ...any) (int64, error)
	// Query runs a statement that returns rows; the caller closes them.
	Query(ctx context.Context, q string, args ...any) (QueryRows, error)
	// QueryRow runs a statement that returns at most one row; scanning
	// it reports "no row" as the driver does (see NotFound).
	QueryRow(ctx context.Context, q string, args ...any) Scanner
	// InTx runs fn in a write transaction and commits it if fn returns
	// nil, or rolls it back. Inside a transaction it runs fn in the same
	// one.
	InTx(ctx context.Context, fn func(tx DB) error) error
}

// QueryRows is an open result set of DB.Query.
type QueryRows interface {
	Rows
	Close()
}

// Dialect is what one database does its own way: the statements whose text
// differs, how it locks, and the operations whose logic differs (batching
// with prepared statements or with arrays, row locks or a single writer).
// Store runs everything else.
type Dialect interface {
	// ForUpdate is the clause that locks the rows a SELECT read until
	// the transaction ends, or "" where the transaction already holds
	// the only write lock (SQLite).
	ForUpdate() string
	// Conflict maps the driver's unique-violation error to
	// store.ErrConflict, and returns other errors as they are.
	Conflict(err error) error
	// LockCapture serialises rollout claims on one capture until tx ends;
	// store.ErrNotFound if there is no such capture. A database whose
	// transactions are serialised anyway does nothing.
	LockCapture(ctx context.Context, tx DB, captureID string) error

	// ListAgentsPage is the statement and arguments of one page of
	// agents after (afterHostname, afterID); see store.Store.
	ListAgentsPage(afterHostname, afterID string, limit int) (string, []any)
	// ListAudit is the statement and arguments of one page of the audit
	// log, newest first.
	ListAudit(q store.AuditQuery) (string, []any)

	// InsertTargets inserts a new capture's targets inside tx.
	InsertTargets(ctx context.Context, tx DB, captureID string, targets []store.CaptureTarget) error
	// FinishCapture is store.Store's FinishCapture, errors unwrapped.
	FinishCapture(ctx context.Context, id, state, detail string) (bool, error)
	// SetTargetStates is store.Store's SetTargetStates, errors unwrapped.
	SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error)
	// ClaimTargets is store.Store's ClaimTargets, errors unwrapped.
	ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error)
	// InsertEvents is store.Store's InsertEvents, errors unwrapped.
	InsertEvents(ctx context.Context, events []store.Event) (int, error)
	// AdmitDump is store.Store's AdmitDump, errors unwrapped.
	AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error)
}

// Store implements store.Store, but Close, over a DB and a Dialect. The
// sqlite and postgres packages embed it and add Open and Close.
type Store struct {
	w DB // writes and transactions
	r DB // plain reads; may be w
	d Dialect
}

// New returns a Store that writes through w, reads through r (which may be
// w), and asks d for what its database does its own way.
func New(w, r DB, d Dialect) *Store {
	return &Store{w: w, r: r, d: d}
}

// exec runs a write that must change exactly one row: none is
// store.ErrNotFound.
func exec(ctx context.Context, db DB, q string, args ...any) error {
	n, err := db.Exec(ctx, q, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// insert runs an INSERT ... ON CONFLICT DO NOTHING: a skipped row is
// store.ErrConflict, and so is the driver's unique violation.
func (s *Store) insert(ctx context.Context, db DB, q string, args ...any) error {
	n, err := db.Exec(ctx, q, args...)
	if err != nil {
		return s.d.Conflict(err)
	}
	if n == 0 {
		return store.ErrConflict
	}
	return nil
}

// list runs a read query on db and collects its rows with scan, wrapping
// any error with op.
func list[T any](ctx context.Context, db DB, op string, scan func(Scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer rows.Close()
	out, err := Collect(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}
