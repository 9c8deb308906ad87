package sqlite

import (
	"context"
	"database/sql"

	"github.com/livedump/livedump/controller/store/sqlstore"
)

// sqlQuerier is what *sql.DB and *sql.Tx have in common.
type sqlQuerier interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// sqlDB adapts database/sql to sqlstore.DB: a pool, or a transaction
// when db is nil.
type sqlDB struct {
	q  sqlQuerier
	db *sql.DB // the pool transactions begin on; nil inside one
}

func (d sqlDB) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := d.q.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (d sqlDB) Query(ctx context.Context, q string, args ...any) (sqlstore.QueryRows, error) {
	rows, err := d.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (d sqlDB) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Scanner {
	return d.q.QueryRowContext(ctx, q, args...)
}

func (d sqlDB) InTx(ctx context.Context, fn func(tx sqlstore.DB) error) error {
	if d.db == nil {
		return fn(d)
	}
	return inTx(ctx, d.db, func(tx *sql.Tx) error { return fn(sqlDB{q: tx}) })
}

// sqlRows gives *sql.Rows the Close sqlstore.QueryRows has.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

// inTx runs fn in a write transaction on db (BEGIN IMMEDIATE, see Open)
// and commits it if fn returns nil.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
