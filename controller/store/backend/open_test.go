package backend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/postgres"
	"github.com/livedump/livedump/controller/store/sqlite"
	"github.com/livedump/livedump/tests/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestSQLitePath(t *testing.T) {
	for _, tc := range []struct {
		url, path, err string
	}{
		{url: "sqlite:///var/lib/livedump/livedump.db", path: "/var/lib/livedump/livedump.db"},
		{url: "sqlite://data/livedump.db", path: "data/livedump.db"},
		{url: "sqlite://livedump.db", path: "livedump.db"},
		{url: "sqlite://./x.db", path: "./x.db"},
		{url: "sqlite://../x.db", path: "../x.db"},
		{url: "SQLite:///x.db", path: "/x.db"},
		{url: "sqlite:///C:/ProgramData/livedump/x.db", path: "C:/ProgramData/livedump/x.db"},
		{url: `sqlite:///D:\data\x.db`, path: `D:\data\x.db`},
		{url: "sqlite://C:/x.db", path: "C:/x.db"},
		// Taken literally: no percent-decoding.
		{url: "sqlite:///srv/live%20dump/x.db", path: "/srv/live%20dump/x.db"},
		{url: "sqlite:///srv/live dump/x.db", path: "/srv/live dump/x.db"},
		{url: "sqlite://", err: "missing database path"},
		{url: "sqlite:///", err: "missing database path"},
		{url: "sqlite:///x.db?mode=ro", err: "no query"},
		{url: "sqlite:///x.db#frag", err: "no query"},
		{url: "sqlite:x.db", err: "want sqlite:///absolute/path.db"},
		{url: "sqlite:/x.db", err: "want sqlite:///absolute/path.db"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, err := SQLitePath(tc.url)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("SQLitePath(%q) = %q, %v; want error containing %q", tc.url, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.path {
				t.Fatalf("SQLitePath(%q) = %q, %v; want %q", tc.url, got, err, tc.path)
			}
		})
	}
}

func TestSQLiteURLRoundTrip(t *testing.T) {
	for _, p := range []string{"/var/lib/livedump/livedump.db", "data/livedump.db", "C:/ProgramData/x.db", `C:\ProgramData\x.db`} {
		got, err := SQLitePath(SQLiteURL(p))
		if err != nil || got != p {
			t.Errorf("SQLitePath(SQLiteURL(%q)) = %q, %v", p, got, err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "no scheme"},
		{"/var/lib/livedump.db", "no scheme"},
		{"livedump.db", "no scheme"},
		{"mysql://u@h/db", `scheme "mysql" is not supported`},
		{"file:///x.db", `scheme "file" is not supported`},
		{"sqlite:x.db", "want sqlite:///absolute/path.db"},
	} {
		s, err := Open(context.Background(), tc.url)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want it to mention %q", tc.url, err, tc.want)
		}
		if strings.Contains(tc.want, "scheme") && !strings.Contains(err.Error(), "postgres://") {
			t.Errorf("Open(%q) = %v, want it to list the accepted forms", tc.url, err)
		}
	}
}

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "livedump.db")
	s, err := Open(ctx, SQLiteURL(path))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*sqlite.Store); !ok {
		t.Fatalf("Open returned %T, want *sqlite.Store", s)
	}
	if err := s.CreateAgent(ctx, store.Agent{ID: "a1"}); err != nil {
		t.Fatal(err)
	}

	// A relative URL is relative to the working directory.
	t.Chdir(t.TempDir())
	r, err := Open(ctx, "sqlite://sub.db")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := os.Stat("sub.db"); err != nil {
		t.Errorf("sqlite://sub.db did not create sub.db in the working directory: %v", err)
	}
}

func TestOpenPostgres(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	for _, u := range []string{url, "postgresql" + strings.TrimPrefix(url, "postgres")} {
		s, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open(%s): %v", u, err)
		}
		if _, ok := s.(*postgres.Store); !ok {
			t.Errorf("Open returned %T, want *postgres.Store", s)
		}
		s.Close()
	}
}
