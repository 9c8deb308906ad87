package sqlstore

import (
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/livedump/livedump/controller/store"
)

// fakeRows yields vals one row at a time, then fails with err (nil: ends
// cleanly).
type fakeRows struct {
	vals []int
	err  error
	i    int // the current row, 1-based; 0 before Next
}

func (r *fakeRows) Next() bool {
	if r.i >= len(r.vals) {
		return false
	}
	r.i++
	return true
}

func (r *fakeRows) Err() error { return r.err }

func (r *fakeRows) Scan(dest ...any) error {
	*dest[0].(*int) = r.vals[r.i-1]
	return nil
}

func scanInt(sc Scanner) (int, error) {
	var v int
	err := sc.Scan(&v)
	return v, err
}

func TestCollect(t *testing.T) {
	errRead := errors.New("connection lost")
	errOdd := errors.New("odd value")
	scanEven := func(sc Scanner) (int, error) {
		v, err := scanInt(sc)
		if err == nil && v%2 != 0 {
			err = fmt.Errorf("row %d: %w", v, errOdd)
		}
		return v, err
	}
	for _, tc := range []struct {
		name    string
		rows    *fakeRows
		scan    func(Scanner) (int, error)
		want    []int
		wantErr error
	}{
		{"empty", &fakeRows{}, scanInt, []int{}, nil},
		{"rows", &fakeRows{vals: []int{3, 1, 2}}, scanInt, []int{3, 1, 2}, nil},
		{"error after some rows", &fakeRows{vals: []int{1, 2}, err: errRead}, scanInt, nil, errRead},
		{"error before any row", &fakeRows{err: errRead}, scanInt, nil, errRead},
		{"scan error", &fakeRows{vals: []int{2, 4, 5, 6}}, scanEven, nil, errOdd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Collect(tc.rows, tc.scan)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if got != nil {
					t.Errorf("got %v with an error, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("got nil, want a non-nil slice")
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("scan error stops reading", func(t *testing.T) {
		rows := &fakeRows{vals: []int{2, 3, 4, 6}}
		if _, err := Collect(rows, scanEven); !errors.Is(err, errOdd) {
			t.Fatalf("err = %v", err)
		}
		if rows.i != 2 {
			t.Errorf("read %d rows, want 2", rows.i)
		}
	})
}

func TestNotFound(t *testing.T) {
	other := errors.New("disk full")
	for _, tc := range []struct {
		in, want error
	}{
		{nil, nil},
		{sql.ErrNoRows, store.ErrNotFound},
		{fmt.Errorf("wrapped: %w", sql.ErrNoRows), store.ErrNotFound},
		{other, other},
	} {
		if got := NotFound(tc.in); got != tc.want {
			t.Errorf("NotFound(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// rowOf is a Scanner over one row of values, assigned by the destination's
// type as database/sql would; err replaces the row (sql.ErrNoRows: none).
type rowOf struct {
	vals []any
	err  error
}

func (r rowOf) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	if len(dest) != len(r.vals) {
		return fmt.Errorf("%d destinations for %d columns", len(dest), len(r.vals))
	}
	for i, v := range r.vals {
		switch d := dest[i].(type) {
		case **int64:
			if v == nil {
				*d = nil
			} else {
				n := v.(int64)
				*d = &n
			}
		case *int64:
			*d = v.(int64)
		case *bool:
			*d = v.(bool)
		case *string:
			*d = v.(string)
		default:
			return fmt.Errorf("column %d: unexpected destination %T", i, dest[i])
		}
	}
	return nil
}

func TestScanNoRowIsNotFound(t *testing.T) {
	none := rowOf{err: sql.ErrNoRows}
	for name, scan := range map[string]func(Scanner) error{
		"agent":         func(sc Scanner) error { _, err := ScanAgent(sc); return err },
		"token":         func(sc Scanner) error { _, err := ScanToken(sc); return err },
		"capture":       func(sc Scanner) error { _, err := ScanCapture(sc); return err },
		"target":        func(sc Scanner) error { _, err := ScanTarget(sc); return err },
		"event":         func(sc Scanner) error { _, err := ScanEvent(sc); return err },
		"dump":          func(sc Scanner) error { _, err := ScanDump(sc); return err },
		"artifact":      func(sc Scanner) error { _, err := ScanArtifact(sc); return err },
		"operator cert": func(sc Scanner) error { _, err := ScanOperatorCert(sc); return err },
		"replica":       func(sc Scanner) error { _, err := ScanReplica(sc); return err },
		"directive":     func(sc Scanner) error { _, err := ScanDirective(sc); return err },
		"audit entry":   func(sc Scanner) error { _, err := ScanAuditEntry(sc); return err },
	} {
		if err := scan(none); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: no row = %v, want store.ErrNotFound", name, err)
		}
	}
}

func TestScanOperatorRevocation(t *testing.T) {
	at := int64(1_700_000_000_000)
	r, ok, err := ScanOperatorRevocation(rowOf{vals: []any{false, at, "root"}}, "0a", "alice")
	if err != nil || !ok || r.Name != "alice" || r.Serial != "" || r.By != "root" || r.At.UnixMilli() != at {
		t.Errorf("by name = %+v, %v, %v", r, ok, err)
	}
	if _, ok, err := ScanOperatorRevocation(rowOf{err: sql.ErrNoRows}, "0a", "alice"); ok || err != nil {
		t.Errorf("no row = %v, %v; want not revoked", ok, err)
	}
	other := errors.New("disk full")
	if _, ok, err := ScanOperatorRevocation(rowOf{err: other}, "0a", "alice"); ok || !errors.Is(err, other) {
		t.Errorf("failed read = %v, %v", ok, err)
	}
}

func TestPresenceMap(t *testing.T) {
	if got := PresenceMap(nil); got == nil || len(got) != 0 {
		t.Errorf("PresenceMap(nil) = %#v, want an empty map", got)
	}
	got := PresenceMap([]PresenceRow{{"a1", "r1"}, {"a2", "r2"}})
	if len(got) != 2 || got["a1"] != "r1" || got["a2"] != "r2" {
		t.Errorf("PresenceMap = %v", got)
	}
	var p PresenceRow
	if p, _ = ScanPresence(rowOf{vals: []any{"a1", "r1"}}); p != (PresenceRow{"a1", "r1"}) {
		t.Errorf("ScanPresence = %+v", p)
	}
}
