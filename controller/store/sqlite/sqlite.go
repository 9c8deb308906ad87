// Package sqlite implements store.Store on an embedded SQLite database using
// the pure-Go modernc.org/sqlite driver, so the controller builds without cgo
// on every platform it ships for.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// busyTimeoutMS bounds how long a connection waits for another process's
// lock before failing with SQLITE_BUSY. Within one process the single writer
// connection already serialises writes, so this only matters when something
// else (a backup tool, a second controller by mistake) opens the same file.
const busyTimeoutMS = 5000

// Store is the SQLite implementation of store.Store. It is safe for
// concurrent use.
//
// It keeps two connection pools on the same file: a single-connection writer
// pool, which serialises every write inside the process and so can never hit
// SQLITE_BUSY against itself or over-consume a token, and a read-only pool
// that lets lookups proceed concurrently with a write, as WAL mode permits.
//
// The methods are sqlstore's, over the sqlDB adapter and this package's
// dialect; Open and Close are the package's own.
type Store struct {
	*shared
	w *sql.DB // exactly one connection; all writes and read-modify-write transactions
	r *sql.DB // read-only connections for plain queries
}

// shared is the store implementation both SQL backends run; the alias
// keeps the embedded field unexported.
type shared = sqlstore.Store

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the SQLite database at path, configures it
// for WAL and applies any pending schema migrations. path must name a file:
// in-memory databases are not supported because the reader and writer pools
// would each see a different, private database.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.Contains(path, "?") || strings.HasPrefix(path, "file:") || strings.Contains(path, ":memory:") {
		// The driver splits the DSN at '?', and URI or memory names would
		// bypass the pragmas or split the two pools onto different databases.
		return nil, fmt.Errorf("open sqlite store: unsupported path %q", path)
	}

	// Pragmas go in the DSN rather than being executed once after Open
	// because database/sql may open new connections at any time and each one
	// needs them; the driver applies _pragma on every new connection.
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)", busyTimeoutMS)

	// BEGIN IMMEDIATE takes the write lock up front, so a transaction that
	// reads and then writes cannot fail halfway through with SQLITE_BUSY when
	// another process holds the lock.
	//
	// Event IDs are random, so each stored event lands on a random page of
	// the unique index on the ID. The writer therefore keeps a larger page
	// cache (32 MiB, filled only as pages are used; SQLite's default is
	// 2 MiB), so that index stays in memory instead of being read back, and
	// checkpoints every 10,000 WAL pages (about 40 MiB; default 1,000), so a
	// page changed by many batches is copied into the database once. With
	// random IDs this doubles the insert rate (BenchmarkInsertEventsRandomIDs).
	w, err := sql.Open("sqlite", path+"?"+common+"&_pragma=journal_mode(WAL)&_pragma=cache_size(-32768)&_pragma=wal_autocheckpoint(10000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}

	// journal_mode is persistent in the file, and the writer has already set
	// it, so readers do not repeat it; query_only turns an accidental write
	// through this pool into an error instead of a second, unserialised writer.
	r, err := sql.Open("sqlite", path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}
	n := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}

	return &Store{
		shared: sqlstore.New(sqlDB{q: w, db: w}, sqlDB{q: r, db: r}, dialect{w: w}),
		w:      w,
		r:      r,
	}, nil
}

// Close closes both pools. The writer closes last so that the final
// connection to the file checkpoints the WAL back into the main database.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}
