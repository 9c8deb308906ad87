package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/tests/storetest"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "livedump.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestReopenKeepsDataAndSkipsMigrations(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if err := s.CreateAgent(ctx, store.Agent{ID: "a1", Hostname: "h"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		a, err := s.GetAgent(ctx, "a1")
		if err != nil || a.Hostname != "h" {
			t.Fatalf("GetAgent after reopen = %+v, %v", a, err)
		}
		ms, err := loadMigrations()
		if err != nil {
			t.Fatal(err)
		}
		var n, maxV int
		if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
			t.Fatal(err)
		}
		if n != len(ms) || maxV != ms[len(ms)-1].Version {
			t.Errorf("schema_migrations has %d rows up to %d, want %d up to %d", n, maxV, len(ms), ms[len(ms)-1].Version)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRejectsNewerSchema(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 'x')`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "newer") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open on newer schema: err = %v, want schema-too-new error", err)
	}
}

func TestPragmas(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	defer s.Close()

	for name, db := range map[string]*sql.DB{"writer": s.w, "reader": s.r} {
		var mode, sync string
		var fk, busy int
		if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if !strings.EqualFold(mode, "wal") || fk != 1 || busy != busyTimeoutMS || sync != "1" {
			t.Errorf("%s: journal_mode=%s foreign_keys=%d busy_timeout=%d synchronous=%s; want wal, 1, %d, 1 (NORMAL)",
				name, mode, fk, busy, sync, busyTimeoutMS)
		}
	}

	// WAL is a property of the file, so a plain connection that sets no
	// pragmas must see it too.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var mode string
	if err := raw.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(mode, "wal") {
		t.Errorf("file journal_mode = %s, want wal", mode)
	}
}

func TestReaderPoolIsReadOnly(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	if _, err := s.r.ExecContext(context.Background(), `INSERT INTO audit (time) VALUES (1)`); err == nil {
		t.Fatal("write through the read pool succeeded")
	}
}

func TestOpenRejectsUnsupportedPaths(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		if s, err := Open(context.Background(), p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

func TestErrorsWrapContext(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	_, err := s.GetAgent(context.Background(), "nope")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("GetAgent error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.ListAgents(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ListAgents on cancelled ctx = %v, want context.Canceled", err)
	}
}

// TestConsumeAcrossStores covers two Stores (standing in for two processes)
// on one file, where the in-process single-writer pool no longer serialises
// anything and correctness rests on BEGIN IMMEDIATE and busy_timeout.
func TestConsumeAcrossStores(t *testing.T) {
	ctx := context.Background()
	a, path := openTemp(t)
	defer a.Close()
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	h := sha256.Sum256([]byte("s"))
	if err := a.CreateToken(ctx, store.Token{ID: "t", SecretHash: h[:], Uses: 5, UsesLeft: 5}); err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			_, err := s.ConsumeToken(ctx, "t", h[:], time.Now())
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, store.ErrTokenExhausted):
				t.Errorf("ConsumeToken: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 5 {
		t.Errorf("%d consumes succeeded, want 5", ok.Load())
	}
}
