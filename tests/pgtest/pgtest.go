// Package pgtest gives each test a fresh, empty PostgreSQL database, so the
// PostgreSQL store runs the same tests as the embedded SQLite one.
//
// The server comes from one of two places, in this order:
//
//  1. LIVEDUMP_TEST_POSTGRES, an admin URL: a role that may CREATE DATABASE,
//     connected to any database, e.g.
//     postgres://livedump:livedump@127.0.0.1:5432/postgres?sslmode=disable.
//     This is how CI provides the server: .ci/run installs Debian's
//     postgresql package, starts its cluster, creates the livedump role
//     with CREATEDB and exports this variable (see the "PostgreSQL" section
//     there).
//  2. Otherwise a private throwaway cluster, started once per test binary
//     from the server binaries under /usr/lib/postgresql/*/bin (initdb into
//     a temporary directory, listening on 127.0.0.1 and a free port, its
//     socket in that directory). As root the cluster runs as the postgres
//     OS user, because initdb refuses to run as root. Call Main from
//     TestMain so the cluster is stopped and removed when the binary ends;
//     if the binary dies first, the server is killed with it and the next
//     run removes the directory.
//
// With neither, tests that need a database are skipped, naming what to
// install, except under CI (CI set in the environment), where a missing
// database is a failure rather than silently lost coverage.
//
// Every database is named ldtest_<random> and dropped when its test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable holding the admin URL of an
// existing server.
const EnvURL = "LIVEDUMP_TEST_POSTGRES"

// errNotInstalled is the skip reason when there is nothing to start.
var errNotInstalled = errors.New("PostgreSQL server not installed: apt-get install postgresql (or set " + EnvURL + ")")

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error

	// running is the private cluster, if one was started; Main stops it.
	runningMu sync.Mutex
	running   *cluster
)

// Main runs the tests of a package that uses pgtest and then stops the
// private cluster, if one was started. Use it as the whole TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	runningMu.Lock()
	c := running
	running = nil
	runningMu.Unlock()
	if c != nil {
		if err := c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop private PostgreSQL: %v\n", err)
		}
	}
	os.Exit(code)
}

// AdminURL returns the URL of a role allowed to create databases on the test
// server, starting the private cluster on first use. It skips tb (or fails
// it under CI) when no server can be had.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	serverOnce.Do(func() {
		if u := os.Getenv(EnvURL); u != "" {
			serverURL = u
			return
		}
		c, err := startCluster()
		if err != nil {
			serverErr = err
			return
		}
		runningMu.Lock()
		running = c
		runningMu.Unlock()
		serverURL = c.url
	})
	if serverErr != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("pgtest: %v", serverErr)
		}
		tb.Skipf("needs PostgreSQL: %v", serverErr)
	}
	return serverURL
}

// URL returns the URL of a new, empty database that is dropped when tb's
// test ends. Connections still open at that point are terminated.
func URL(tb testing.TB) string {
	tb.Helper()
	admin := AdminURL(tb)
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("pgtest: %s must be a postgres:// URL", EnvURL)
	}

	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "ldtest_" + hex.EncodeToString(b[:])
	if err := adminExec(admin, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		// An autovacuum worker on the database is a superuser process that
		// a role without pg_signal_backend may not terminate (SQLSTATE
		// 42501): it ends within moments, so the drop is tried again.
		var err error
		for range 50 {
			if err = adminExec(admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err == nil || !strings.Contains(err.Error(), "42501") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// adminExec runs one statement on its own connection to the admin database.
func adminExec(admin, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to the test server: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}
