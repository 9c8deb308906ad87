// Package backend opens the controller's store from a URL, so configuration
// names the backend and its location in one setting.
//
// Accepted URLs:
//
//	sqlite:///var/lib/livedump/livedump.db   absolute path /var/lib/livedump/livedump.db
//	sqlite://data/livedump.db                relative path data/livedump.db (to the working directory)
//	sqlite:///C:/ProgramData/livedump/x.db   absolute Windows path C:/ProgramData/livedump/x.db
//	postgres://user:pass@host:5432/livedump?sslmode=verify-full
//	postgresql://...                         the same
//
// Everything after "sqlite://" is the file path, taken literally: it is not
// percent-decoded and may not carry query parameters, so a path is exactly
// what the operator typed. The SQLite store sets its own pragmas (WAL,
// busy timeout, foreign keys), as it always has. PostgreSQL URLs are handed
// to pgx unchanged, so every libpq parameter it knows works, including
// pool_max_conns.
package backend

import (
	"context"
	"fmt"
	"strings"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/postgres"
	"github.com/livedump/livedump/controller/store/sqlite"
)

// Accepted describes the URL forms Open takes, for error messages and help.
const Accepted = "sqlite:///absolute/path.db, sqlite://relative/path.db, postgres://… or postgresql://…"

// Open opens the store named by url and applies pending migrations.
func Open(ctx context.Context, url string) (store.Store, error) {
	scheme, _, ok := strings.Cut(url, ":")
	if !ok || scheme == "" || strings.ContainsAny(scheme, "/\\") {
		return nil, fmt.Errorf("store URL %q has no scheme; want %s", url, Accepted)
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		path, err := SQLitePath(url)
		if err != nil {
			return nil, err
		}
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, err
		}
		return s, nil
	case "postgres", "postgresql":
		s, err := postgres.Open(ctx, url)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("store URL scheme %q is not supported; want %s", scheme, Accepted)
}

// SQLitePath returns the file path a sqlite:// URL names.
func SQLitePath(url string) (string, error) {
	const prefix = "sqlite://"
	if len(url) < len(prefix) || !strings.EqualFold(url[:len(prefix)], prefix) {
		return "", fmt.Errorf("store URL %q: want sqlite:///absolute/path.db or sqlite://relative/path.db", url)
	}
	path := url[len(prefix):]
	if path == "" || path == "/" {
		return "", fmt.Errorf("store URL %q: missing database path", url)
	}
	if strings.ContainsAny(path, "?#") {
		return "", fmt.Errorf("store URL %q: a SQLite path takes no query or fragment", url)
	}
	// sqlite:///C:/x.db: the slash before a drive letter belongs to the URL
	// syntax, not the path.
	if len(path) >= 4 && path[0] == '/' && isLetter(path[1]) && path[2] == ':' && (path[3] == '/' || path[3] == '\\') {
		path = path[1:]
	}
	return path, nil
}

// SQLiteURL is the URL of the SQLite database at path, for callers that
// start from a file path (such as the default under the data directory).
func SQLiteURL(path string) string {
	if len(path) >= 3 && isLetter(path[0]) && path[1] == ':' && (path[2] == '/' || path[2] == '\\') {
		return "sqlite:///" + path
	}
	return "sqlite://" + path
}

func isLetter(c byte) bool { return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
