package postgres

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedump/livedump/controller/store"
)

// migrationFS holds the schema history. Files are named NNNN_description.sql
// and are never edited once released: a change is always a new file. The
// numbering is this store's own; it does not follow SQLite's, whose first
// six steps 0001_init.sql reproduces at once.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// migrateLockKey is the pg_advisory_xact_lock key that serialises
// migrations across controllers starting at once ("livedump" in ASCII).
const migrateLockKey int64 = 0x6c69766564756d70

// loadMigrations returns this store's embedded migrations.
func loadMigrations() ([]store.Migration, error) {
	return store.LoadMigrations(migrationFS, "migrations")
}

// migrate brings the schema up to date in one transaction. PostgreSQL DDL
// is transactional, so a failing step leaves the database as it was. The
// transaction first takes an advisory lock, which PostgreSQL releases at
// commit or rollback: a second controller starting at the same moment waits
// for it, then finds every step applied. (A plain CREATE TABLE IF NOT
// EXISTS race between two sessions can fail on the catalog's unique index,
// so even schema_migrations is only created under the lock.)
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER     PRIMARY KEY,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("migrate: create schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("migrate: read applied versions: %w", err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("migrate: read applied versions: %w", err)
		}
		applied := map[int]bool{}
		newest := 0
		for _, v := range versions {
			applied[int(v)] = true
			newest = max(newest, int(v))
		}
		// A newer binary may have changed the schema in ways this one does
		// not understand; refusing to start is safer than writing rows it
		// would misinterpret.
		if known := ms[len(ms)-1].Version; newest > known {
			return fmt.Errorf("migrate: database schema version %d is newer than this build supports (%d)", newest, known)
		}
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			// No arguments: pgx sends it as a simple query, which may hold
			// several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migrate: apply %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, m.Version); err != nil {
				return fmt.Errorf("migrate: record %s: %w", m.Name, err)
			}
		}
		return nil
	})
}
