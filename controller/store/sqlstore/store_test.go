package sqlstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// fakeDB answers every Exec with rows changed and err, and records the
// statements it ran.
type fakeDB struct {
	rows int64
	err  error
	ran  []string
	txs  int
}

func (f *fakeDB) Exec(_ context.Context, q string, _ ...any) (int64, error) {
	f.ran = append(f.ran, q)
	return f.rows, f.err
}

func (f *fakeDB) Query(context.Context, string, ...any) (QueryRows, error) {
	return nil, errors.New("fakeDB: no Query")
}

func (f *fakeDB) QueryRow(_ context.Context, q string, _ ...any) Scanner {
	f.ran = append(f.ran, q)
	return errScanner{errors.New("fakeDB: no rows")}
}

func (f *fakeDB) InTx(_ context.Context, fn func(DB) error) error {
	f.txs++
	return fn(f)
}

type errScanner struct{ err error }

func (e errScanner) Scan(...any) error { return e.err }

// fakeDialect embeds Dialect so the test sets only what it uses; Conflict
// marks the errors it saw.
type fakeDialect struct {
	Dialect
	forUpdate string
}

var errUnique = errors.New("unique violation")

func (fakeDialect) Conflict(err error) error {
	if errors.Is(err, errUnique) {
		return store.ErrConflict
	}
	return err
}

func (d fakeDialect) ForUpdate() string { return d.forUpdate }

func TestStoreMapsRowsAndErrors(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		db   fakeDB
		call func(*Store) error
		want error // nil: success
	}{
		{"update of a missing row", fakeDB{rows: 0}, func(s *Store) error { return s.TouchAgent(ctx, "a1", time.Now()) }, store.ErrNotFound},
		{"update of one row", fakeDB{rows: 1}, func(s *Store) error { return s.TouchAgent(ctx, "a1", time.Now()) }, nil},
		{"driver error passes through", fakeDB{err: boom}, func(s *Store) error { return s.TouchAgent(ctx, "a1", time.Now()) }, boom},
		{"insert skipped by ON CONFLICT", fakeDB{rows: 0}, func(s *Store) error { return s.CreateAgent(ctx, store.Agent{ID: "a1"}) }, store.ErrConflict},
		{"insert hit a unique index", fakeDB{err: errUnique}, func(s *Store) error { return s.CreateToken(ctx, store.Token{ID: "t1"}) }, store.ErrConflict},
		{"insert of one row", fakeDB{rows: 1}, func(s *Store) error { return s.CreateToken(ctx, store.Token{ID: "t1"}) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := tc.db
			err := tc.call(New(&db, &db, fakeDialect{}))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConsumeTokenLocksWithTheDialectsClause(t *testing.T) {
	db := &fakeDB{}
	s := New(db, db, fakeDialect{forUpdate: " FOR UPDATE"})
	_, err := s.ConsumeToken(context.Background(), "t1", nil, time.Now())
	if err == nil || !strings.HasPrefix(err.Error(), "consume token t1: ") {
		t.Fatalf("err = %v, want the read's error wrapped", err)
	}
	if db.txs != 1 || len(db.ran) != 1 || !strings.HasSuffix(db.ran[0], GetToken+" FOR UPDATE") {
		t.Fatalf("ran %q in %d transactions, want GetToken FOR UPDATE in one", db.ran, db.txs)
	}
}
