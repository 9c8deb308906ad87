package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/tests/netproxy"
	"github.com/livedump/livedump/tests/pgtest"
	"github.com/livedump/livedump/tests/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openFresh opens a Store on a new, empty database that is dropped when t
// ends; the caller closes the Store.
func openFresh(t *testing.T) (*Store, string) {
	t.Helper()
	url := pgtest.URL(t)
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, url
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openFresh(t)
		return s
	})
}

func TestReopenKeepsDataAndSkipsMigrations(t *testing.T) {
	ctx := context.Background()
	s, url := openFresh(t)
	if err := s.CreateAgent(ctx, store.Agent{ID: "a1", Hostname: "h"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err := Open(ctx, url)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if a, err := s.GetAgent(ctx, "a1"); err != nil || a.Hostname != "h" {
			t.Fatalf("GetAgent after reopen = %+v, %v", a, err)
		}
		var n, maxV int
		if err := s.pool.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
			t.Fatal(err)
		}
		if n != len(ms) || maxV != ms[len(ms)-1].Version {
			t.Errorf("schema_migrations has %d rows up to %d, want %d up to %d", n, maxV, len(ms), ms[len(ms)-1].Version)
		}
		s.Close()
	}
}

// TestConcurrentFirstOpen starts several controllers on an empty database
// at once: the advisory lock must let exactly one migrate and the others
// find the schema in place.
func TestConcurrentFirstOpen(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	const n = 6
	var wg sync.WaitGroup
	stores := make([]*Store, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(ctx, url) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	var rows int
	if err := stores[0].pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if ms, _ := loadMigrations(); rows != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", rows, len(ms))
	}
}

func TestRejectsNewerSchema(t *testing.T) {
	ctx := context.Background()
	s, url := openFresh(t)
	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES (9999)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, url); err == nil || !strings.Contains(err.Error(), "newer") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open on newer schema: err = %v, want schema-too-new error", err)
	}
}

func TestOpenErrorHidesPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback refuses at once.
	_, err := Open(ctx, "postgres://user:hunter2@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("Open on a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error reveals the password: %v", err)
	}
	_, err = Open(ctx, "postgres://user:hunter2@127.0.0.1:5432/db?pool_max_conns=zero")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Open with a bad parameter: %v", err)
	}
}

func TestUniqueViolationIsConflict(t *testing.T) {
	ctx := context.Background()
	s, _ := openFresh(t)
	defer s.Close()
	t0 := time.Now()
	err := s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0},
		[]store.CaptureTarget{{AgentID: "a1", State: "pending"}, {AgentID: "a1", State: "pending"}})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateCapture with a duplicate target: %v, want ErrConflict", err)
	}
	if _, err := s.GetCapture(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("capture stored without its targets: %v", err)
	}
}

// TestTwoStores covers two Stores (standing in for two controllers) on one
// database, where only the database's locks keep the limits.
func TestTwoStores(t *testing.T) {
	ctx := context.Background()
	a, url := openFresh(t)
	defer a.Close()
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pick := func(i int) *Store {
		if i%2 == 0 {
			return a
		}
		return b
	}
	run := func(n int, fn func(i int)) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() { <-start; fn(i) })
		}
		close(start)
		wg.Wait()
	}

	h := sha256.Sum256([]byte("s"))
	if err := a.CreateToken(ctx, store.Token{ID: "t", SecretHash: h[:], Uses: 5, UsesLeft: 5}); err != nil {
		t.Fatal(err)
	}
	var consumed atomic.Int32
	run(20, func(i int) {
		_, err := pick(i).ConsumeToken(ctx, "t", h[:], time.Now())
		switch {
		case err == nil:
			consumed.Add(1)
		case !errors.Is(err, store.ErrTokenExhausted):
			t.Errorf("ConsumeToken: %v", err)
		}
	})
	if consumed.Load() != 5 {
		t.Errorf("%d consumes succeeded, want 5", consumed.Load())
	}

	t0 := time.Now()
	var targets []store.CaptureTarget
	for i := range 20 {
		targets = append(targets, store.CaptureTarget{AgentID: fmt.Sprintf("a%02d", i), State: "pending"})
	}
	if err := a.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0}, targets); err != nil {
		t.Fatal(err)
	}
	var claimed atomic.Int32
	run(20, func(i int) {
		ok, err := pick(i).ClaimTarget(ctx, "c1", fmt.Sprintf("a%02d", i), 3, t0)
		if err != nil {
			t.Errorf("ClaimTarget: %v", err)
		}
		if ok {
			claimed.Add(1)
		}
	})
	if claimed.Load() != 3 {
		t.Errorf("%d targets claimed, want 3", claimed.Load())
	}

	// Dumps of a capture without a capture row fall back to the advisory lock.
	for i := range 20 {
		if err := a.PutDump(ctx, store.Dump{ID: fmt.Sprintf("d%02d", i), AgentID: "a", CaptureID: "gone", State: "written", Signature: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	var admitted atomic.Int32
	run(20, func(i int) {
		ok, err := pick(i).AdmitDump(ctx, fmt.Sprintf("d%02d", i), 0, 4)
		if err != nil {
			t.Errorf("AdmitDump: %v", err)
		}
		if ok {
			admitted.Add(1)
		}
	})
	if admitted.Load() != 4 {
		t.Errorf("%d dumps admitted, want 4", admitted.Load())
	}
}

// TestEventsVisibleInSeqOrder has writers on two Stores insert into one
// capture while a reader pages by Seq, as the event watch does: a reader
// must never see an event whose Seq is below one it has already passed.
func TestEventsVisibleInSeqOrder(t *testing.T) {
	ctx := context.Background()
	a, url := openFresh(t)
	defer a.Close()
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t0 := time.Now()
	if err := a.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0},
		[]store.CaptureTarget{{AgentID: "a1", State: "armed"}}); err != nil {
		t.Fatal(err)
	}
	const writers, batches, per = 4, 25, 8
	var wg sync.WaitGroup
	for w := range writers {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for i := range batches {
				evs := make([]store.Event, per)
				for j := range evs {
					evs[j] = store.Event{ID: fmt.Sprintf("w%d-%d-%d", w, i, j), CaptureID: "c1", AgentID: "a1", Time: t0, User: "[]", Kernel: "[]"}
				}
				if _, err := s.InsertEvents(ctx, evs); err != nil {
					t.Errorf("InsertEvents: %v", err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	seen := map[string]bool{}
	var after int64
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		evs, err := a.ListEvents(ctx, "c1", after, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			seen[e.ID] = true
			after = e.Seq
		}
		if finished && len(evs) == 0 {
			break
		}
	}
	if len(seen) != writers*batches*per {
		t.Errorf("reader paging by Seq saw %d events, want %d", len(seen), writers*batches*per)
	}
}

func TestNotifyListen(t *testing.T) {
	s, _ := openFresh(t)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan [2]string, 16)
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, []string{"captures", "Mixed-Case channel"}, func(ch, payload string) { got <- [2]string{ch, payload} })
	}()

	// LISTEN happens inside Listen; notify until the first one arrives.
	want := [2]string{"captures", "c1"}
	waitFor(t, got, want, func() { must(t, s.Notify(context.Background(), "captures", "c1")) })
	must(t, s.Notify(context.Background(), "Mixed-Case channel", "x"))
	must(t, s.Notify(context.Background(), "unrelated", "y"))
	must(t, s.Notify(context.Background(), "captures", "c2"))
	next := func() [2]string {
		select {
		case n := <-got:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("no notification within 10s")
			return [2]string{}
		}
	}
	for _, w := range [][2]string{{"Mixed-Case channel", "x"}, {"captures", "c2"}} {
		if n := next(); n != w {
			t.Errorf("notification %v, want %v", n, w)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Listen returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return after cancel")
	}

	if err := s.Listen(context.Background(), nil, func(string, string) {}); err == nil {
		t.Error("Listen with no channels succeeded")
	}
}

// TestListenReconnects kills the listening backend from another session:
// Listen must reconnect, report the gap with an empty payload on every
// channel, and go on delivering.
func TestListenReconnects(t *testing.T) {
	s, _ := openFresh(t)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan [2]string, 64)
	go func() {
		_ = s.Listen(ctx, []string{"a", "b"}, func(ch, payload string) { got <- [2]string{ch, payload} })
	}()
	waitFor(t, got, [2]string{"a", "before"}, func() { must(t, s.Notify(context.Background(), "a", "before")) })

	var killed int
	err := s.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'`).Scan(&killed)
	must(t, err)
	if killed != 1 {
		t.Fatalf("terminated %d listening backends, want 1", killed)
	}

	catchUp := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for len(catchUp) < 2 {
		select {
		case n := <-got:
			if n[1] != "" {
				t.Fatalf("got %v before the catch-up calls", n)
			}
			catchUp[n[0]] = true
		case <-deadline:
			t.Fatalf("catch-up calls after reconnect: %v, want a and b", catchUp)
		}
	}
	must(t, s.Notify(context.Background(), "b", "after"))
	select {
	case n := <-got:
		if n != [2]string{"b", "after"} {
			t.Errorf("after reconnect got %v, want [b after]", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification after reconnect")
	}
}

// waitFor repeats send until want arrives on got, discarding anything else.
func waitFor(t *testing.T, got <-chan [2]string, want [2]string, send func()) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		send()
		select {
		case n := <-got:
			if n == want {
				// Drain duplicates from earlier sends.
				for {
					select {
					case n := <-got:
						if n != want {
							t.Fatalf("unexpected notification %v", n)
						}
					case <-time.After(200 * time.Millisecond):
						return
					}
				}
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%v never arrived", want)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestListenStopsWhileTheDatabaseIsDown stops Listen while it is waiting to
// reconnect: it must return, not close the connection it no longer has.
func TestListenStopsWhileTheDatabaseIsDown(t *testing.T) {
	u, err := url.Parse(pgtest.URL(t))
	must(t, err)
	px, err := netproxy.New(u.Host)
	must(t, err)
	defer px.Close()
	u.Host = px.Addr()
	s, err := Open(context.Background(), u.String())
	must(t, err)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan [2]string, 64)
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, []string{"a"}, func(ch, payload string) { got <- [2]string{ch, payload} })
	}()
	waitFor(t, got, [2]string{"a", "up"}, func() { must(t, s.Notify(context.Background(), "a", "up")) })
	px.Cut()
	time.Sleep(300 * time.Millisecond) // the connection drops; reconnects fail
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Listen did not return after its context ended")
	}
}
