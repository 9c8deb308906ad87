// Package postgres implements store.Store on PostgreSQL with pgx, for
// several controller replicas sharing one database. It passes the same
// conformance suite as the embedded SQLite store; the difference is that
// here atomicity across replicas comes from row locks and conditional
// updates rather than from SQLite's single writer.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// Store is the PostgreSQL implementation of store.Store. It is safe for
// concurrent use, and several Stores (in several processes) may share one
// database.
//
// The methods are sqlstore's, over the pgDB adapter and this package's
// dialect; Open, Close, Notify and Listen are the package's own.
type Store struct {
	*shared
	pool *pgxpool.Pool
}

// shared is the store implementation both SQL backends run; the alias
// keeps the embedded field unexported.
type shared = sqlstore.Store

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres:// or postgresql://, with
// any libpq parameters pgx understands, e.g. sslmode, and pool_max_conns
// for the pool size) and applies any pending schema migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, fmt.Errorf("open postgres store %s: invalid URL", redact(url))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: %w", redact(url), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", redact(url), err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", redact(url), err)
	}
	db := pgDB{q: pool, pool: pool}
	return &Store{shared: sqlstore.New(db, db, dialect{pool: pool}), pool: pool}, nil
}

// redact hides the password of a URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Close closes the connection pool, waiting for connections in use.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// uniqueViolation is SQLSTATE 23505.
const uniqueViolation = "23505"

// mapErr turns driver errors into the store's sentinel errors: no row is
// store.ErrNotFound and a unique violation is store.ErrConflict.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		return fmt.Errorf("%w (%s)", store.ErrConflict, pgErr.ConstraintName)
	}
	return sqlstore.NotFound(err)
}
