package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/internal/backoff"
)

// Reconnect backoff for Listen: short enough that a replica misses little
// after a database failover, long enough not to hammer a database that is
// down.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 10 * time.Second
)

// Notify sends payload on a LISTEN/NOTIFY channel (pg_notify). It is
// delivered when the surrounding transaction commits (here at once), to
// every session listening on the channel, this process's included.
// Listeners treat an empty payload as "catch up" (see Listen), so a
// meaningful notification should carry a non-empty one.
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// Listen blocks until ctx ends, calling fn for each notification on
// channels, on one dedicated connection outside the pool. If the connection
// drops it reconnects with jittered exponential backoff and, once listening
// again, calls fn(channel, "") once per channel: notifications sent while it
// was away are lost, so the caller should run its catch-up query. fn runs on
// Listen's goroutine; a slow fn delays the notifications behind it.
//
// Listen returns nil when ctx ends. It returns an error only if channels is
// empty or the first connection fails, which at startup means the database
// is misconfigured rather than briefly unavailable.
func (s *Store) Listen(ctx context.Context, channels []string, fn func(channel, payload string)) error {
	if len(channels) == 0 {
		return errors.New("listen: no channels")
	}
	cfg := s.pool.Config().ConnConfig
	connect := func() (*pgx.Conn, error) {
		conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
		if err != nil {
			return nil, err
		}
		for _, ch := range channels {
			// LISTEN takes an identifier, not a parameter.
			if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
				conn.Close(context.Background())
				return nil, err
			}
		}
		return conn, nil
	}

	conn, err := connect()
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// conn is nil while reconnecting: a shutdown then (the database still
	// unreachable) must not close a connection that is not there.
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err == nil {
			fn(n.Channel, n.Payload)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		conn.Close(context.Background())
		conn = nil
		// Jitter over the upper half keeps replicas that lost the database
		// together from reconnecting in lockstep.
		retry := backoff.New(backoff.Policy{Min: listenMinBackoff, Max: listenMaxBackoff, Jitter: true})
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retry.NextBackOff()):
			}
			if conn, err = connect(); err == nil {
				break
			}
		}
		for _, ch := range channels {
			fn(ch, "")
		}
	}
}
