package postgres

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedump/livedump/controller/store/sqlstore"
)

// querier is what pgxpool.Pool and pgx.Tx have in common, so a read can run
// either on its own or inside the transaction that just wrote.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgDB adapts pgx to sqlstore.DB, keeping pgx's native protocol: a pool,
// or a transaction when pool is nil. Statements come with ? placeholders
// and are numbered ($1, $2, ...) once each, then remembered.
type pgDB struct {
	q    querier
	pool *pgxpool.Pool // the pool transactions begin on; nil inside one
}

func (d pgDB) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := d.q.Exec(ctx, rebind(q), args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (d pgDB) Query(ctx context.Context, q string, args ...any) (sqlstore.QueryRows, error) {
	return d.q.Query(ctx, rebind(q), args...)
}

func (d pgDB) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Scanner {
	return d.q.QueryRow(ctx, rebind(q), args...)
}

func (d pgDB) InTx(ctx context.Context, fn func(tx sqlstore.DB) error) error {
	if d.pool == nil {
		return fn(d)
	}
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error { return fn(pgDB{q: tx}) })
}

// rebound maps a statement written with ? to its numbered form. The
// statements are the package's and sqlstore's constants, so it stays small.
var rebound sync.Map

// rebind is sqlstore.Rebind, computed once per statement.
func rebind(q string) string {
	if b, ok := rebound.Load(q); ok {
		return b.(string)
	}
	b := sqlstore.Rebind(q)
	rebound.Store(q, b)
	return b
}
