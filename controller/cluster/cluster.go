// Package cluster lets several controller replicas share one store. Each
// agent's stream lives on one replica; the store says which (presence, under
// a lease the replica renews), and anything meant for an agent whose stream
// is elsewhere goes through the store's directive table, with a notification
// to wake the replica holding the stream. Notifications are only a hint: every
// replica also runs a catch-up query on a short interval, so a missed
// notification delays a directive but cannot lose it.
//
// With SQLite there is one replica and the bus is in-process; the same code
// runs, and every agent is local.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Notification channels.
const (
	// ChanDirectives carries the ID of the replica that should run its
	// directive catch-up query now.
	ChanDirectives = "livedump_directives"
	// ChanResults carries the seq of a directive that has a result.
	ChanResults = "livedump_directive_results"
	// ChanCaptures carries a capture ID that was created or ended.
	ChanCaptures = "livedump_captures"
	// ChanAgents carries "revoke <agent-id>".
	ChanAgents = "livedump_agents"
	// ChanEvents carries "<replica-id> <capture-id>" after events were stored.
	ChanEvents = "livedump_events"
	// ChanCerts carries certificate revocations: "supersede <agent-id>
	// <serial> <grace-until-unix-ms>", "serial <serial>" or "name <operator>
	// <revoked-before-unix-ms>".
	ChanCerts = "livedump_certs"
)

// Directive states in the store.
const (
	statePending = "pending"
	stateSent    = "sent"
	stateDone    = "done"
	stateFailed  = "failed"
)

// A directive's store ID says whether its origin waits for a report.
const (
	kindCall = "call/"
	kindSend = "send/"
)

// DefaultLease is how long a replica's agents stay online after its last
// lease renewal.
const DefaultLease = 15 * time.Second

// callTimeout bounds how long a replica runs a call for another one.
const callTimeout = 15 * time.Minute

// keepDirectives is how long finished and undelivered directives are kept.
const keepDirectives = time.Hour

// Bus carries notifications between replicas. The PostgreSQL store is one
// (LISTEN/NOTIFY); LocalBus serves a single process.
type Bus interface {
	Notify(ctx context.Context, channel, payload string) error
	// Listen calls fn for each notification until ctx ends. After a
	// reconnect it calls fn(channel, "") so the caller runs its catch-up.
	Listen(ctx context.Context, channels []string, fn func(channel, payload string)) error
}

// Config configures a Cluster.
type Config struct {
	Store store.Store
	Bus   Bus // nil: the store if it is a Bus, else a LocalBus
	Fleet *fleet.Registry
	// Streams holds every open RPC stream by its owner, so revocations end
	// them all, here and on every replica; nil: only agent sessions end.
	Streams *fleet.Streams
	// ReplicaID names this process; empty: hostname and a random suffix.
	// It must be unique among running replicas.
	ReplicaID string
	Addr      string // advertised gRPC address, for operators
	Lease     time.Duration
	Logger    *slog.Logger
	Clock     clockwork.Clock
	Metrics   prometheus.Registerer
}

// CaptureNotice is what a replica told the others about a capture.
type CaptureNotice struct {
	CaptureID string
	// Events is set when another replica stored events of the capture;
	// otherwise a replica (this one too) created or ended it. After the
	// listener reconnected, a notice with no CaptureID says notices may
	// have been missed.
	Events bool
}

// noticeBuffer is how many capture notices wait for a slow subscriber
// before the notification listener waits too.
const noticeBuffer = 256

// Cluster is this replica's view of the others.
type Cluster struct {
	cfg Config
	log *slog.Logger
	id  string

	wake chan struct{}

	mu      sync.Mutex
	waiting map[int64]chan store.Directive
	snap    map[string]string // agent -> replica, from the last presence query
	snapAt  time.Time
	subs    []chan CaptureNotice

	routed   *prometheus.CounterVec
	leaseAge prometheus.Gauge
}

// ErrOffline is returned for an agent no live replica holds.
var ErrOffline = fleet.ErrOffline

// New returns a Cluster.
func New(cfg Config) *Cluster {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Bus == nil {
		if b, ok := cfg.Store.(Bus); ok {
			cfg.Bus = b
		} else {
			cfg.Bus = NewLocalBus()
		}
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = NewReplicaID()
	}
	if cfg.Streams == nil {
		cfg.Streams = fleet.NewStreams()
	}
	c := &Cluster{
		cfg: cfg, log: cfg.Logger.With("replica_id", cfg.ReplicaID), id: cfg.ReplicaID,
		wake:    make(chan struct{}, 1),
		waiting: map[int64]chan store.Directive{},
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_directives_routed_total",
			Help: "Directives for agents attached to another replica, by direction (out: queued here for another replica; in: delivered here for another replica).",
		}, []string{"direction"}),
		leaseAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livedump_controller_replica_lease_age_seconds",
			Help: "Seconds since this replica last renewed its presence lease in the store.",
		}),
	}
	c.routed.WithLabelValues("out")
	c.routed.WithLabelValues("in")
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(c.routed, c.leaseAge)
	}
	return c
}

// NewReplicaID returns hostname-<random>, unique per process start, so a
// restarted replica never revives the presence its previous life left.
func NewReplicaID() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return -1
	}, h)
	if len(h) > 40 {
		h = h[:40]
	}
	if h == "" {
		h = "controller"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return h + "-" + hex.EncodeToString(b)
}

// ID is this replica's ID.
func (c *Cluster) ID() string { return c.id }

// Start takes the lease before any agent can attach. A replica started
// under a fixed ID (replica.id) first clears the presence its previous life
// left: renewing the lease would otherwise show those agents online here
// until they reconnect somewhere.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.cfg.Store.ClearReplicaPresence(ctx, c.id); err != nil {
		return fmt.Errorf("replica lease: %w", err)
	}
	now := c.cfg.Clock.Now().UTC()
	if err := c.cfg.Store.HeartbeatReplica(ctx, store.Replica{ID: c.id, Addr: c.cfg.Addr, Started: now, Heartbeat: now}); err != nil {
		return fmt.Errorf("replica lease: %w", err)
	}
	return nil
}

// Run renews the lease, listens for notifications and runs the catch-up
// queries until ctx ends.
func (c *Cluster) Run(ctx context.Context) error {
	started := c.cfg.Clock.Now().UTC()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Without notifications everything still arrives through the
		// catch-up queries, only later; keep trying to listen.
		for ctx.Err() == nil {
			err := c.cfg.Bus.Listen(ctx, []string{ChanDirectives, ChanResults, ChanCaptures, ChanAgents, ChanEvents, ChanCerts},
				func(channel, payload string) { c.notified(ctx, channel, payload) })
			if ctx.Err() != nil {
				return
			}
			c.log.Error("listen for notifications; retrying in 5s", "err", err)
			select {
			case <-ctx.Done():
			case <-c.cfg.Clock.After(5 * time.Second):
			}
		}
	}()
	defer wg.Wait()

	renew := c.cfg.Clock.NewTicker(c.cfg.Lease / 3)
	defer renew.Stop()
	// The catch-up interval bounds how late a directive is when its
	// notification was lost.
	catchUp := c.cfg.Clock.NewTicker(time.Second)
	defer catchUp.Stop()
	lastRenew := c.cfg.Clock.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.Chan():
			now := c.cfg.Clock.Now().UTC()
			if err := c.cfg.Store.HeartbeatReplica(ctx, store.Replica{ID: c.id, Addr: c.cfg.Addr, Started: started, Heartbeat: now}); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("renew replica lease", "err", err)
				}
			} else {
				lastRenew = c.cfg.Clock.Now()
			}
			c.leaseAge.Set(c.cfg.Clock.Since(lastRenew).Seconds())
			if n, err := c.cfg.Store.DeleteDirectivesBefore(ctx, now.Add(-keepDirectives)); err == nil && n > 0 {
				c.log.Debug("old directives deleted", "count", n)
			}
			c.mu.Lock()
			c.snapAt = time.Time{}
			c.mu.Unlock()
		case <-catchUp.Chan():
			c.deliver(ctx)
			c.collect(ctx)
		case <-c.wake:
			c.deliver(ctx)
		}
	}
}

// SubscribeCaptures returns a channel that receives every capture notice
// from now on, for the capture manager: the cluster only reports what it
// heard and knows nothing of captures. The subscriber must keep reading
// while Run runs: when the channel is full, the notification listener waits
// for it, as it waits for any slow handler.
func (c *Cluster) SubscribeCaptures() <-chan CaptureNotice {
	ch := make(chan CaptureNotice, noticeBuffer)
	c.mu.Lock()
	c.subs = append(c.subs, ch)
	c.mu.Unlock()
	return ch
}

// noticeCaptures hands n to every subscriber, until ctx ends.
func (c *Cluster) noticeCaptures(ctx context.Context, n CaptureNotice) {
	c.mu.Lock()
	subs := c.subs
	c.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- n:
		case <-ctx.Done():
			return
		}
	}
}

func (c *Cluster) notified(ctx context.Context, channel, payload string) {
	switch channel {
	case ChanDirectives:
		if payload == "" || payload == c.id {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	case ChanResults:
		seq, err := strconv.ParseInt(payload, 10, 64)
		if err != nil {
			c.collect(context.Background())
			return
		}
		c.mu.Lock()
		_, ok := c.waiting[seq]
		c.mu.Unlock()
		if ok {
			c.collect(context.Background())
		}
	case ChanCaptures:
		c.noticeCaptures(ctx, CaptureNotice{CaptureID: payload})
	case ChanAgents:
		if id, ok := strings.CutPrefix(payload, "revoke "); ok {
			c.cfg.Fleet.Disconnect(id, fleet.ErrRevoked)
			c.cfg.Streams.EndAgent(id, fleet.ErrRevoked)
		} else if payload == "" {
			// Revocations may have been missed while not listening.
			go c.sweepRevoked()
		}
	case ChanCerts:
		c.certNotified(payload)
	case ChanEvents:
		from, capID, _ := strings.Cut(payload, " ")
		if from != c.id {
			c.noticeCaptures(ctx, CaptureNotice{CaptureID: capID, Events: true})
		}
	}
}

// Attached records that the agent's stream now lives here.
func (c *Cluster) Attached(ctx context.Context, agentID, session string) error {
	if err := c.cfg.Store.SetPresence(ctx, agentID, c.id, session, c.cfg.Clock.Now().UTC()); err != nil {
		return err
	}
	// Directives queued while the agent was away or elsewhere go out now.
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// Detached clears the agent's presence unless a newer stream took it.
func (c *Cluster) Detached(ctx context.Context, agentID, session string) error {
	return c.cfg.Store.ClearPresence(ctx, agentID, c.id, session)
}

// Presence returns agent -> replica for every agent held by a live replica.
// The answer may be up to a second old, and the map is shared: read it only.
// Agents attached here are better asked of the fleet registry, which is
// never stale.
func (c *Cluster) Presence(ctx context.Context) (map[string]string, error) {
	c.mu.Lock()
	// The snapshot's age is a cache lifetime, on the real clock: with a
	// clock that stands still (tests) it would otherwise never expire.
	if c.snap != nil && time.Since(c.snapAt) < time.Second {
		m := c.snap
		c.mu.Unlock()
		return m, nil
	}
	c.mu.Unlock()
	m, err := c.cfg.Store.Presence(ctx, c.cfg.Clock.Now().UTC().Add(-c.cfg.Lease))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.snap, c.snapAt = m, time.Now()
	c.mu.Unlock()
	return m, nil
}

// Online reports whether the agent is attached here or to a live replica.
func (c *Cluster) Online(ctx context.Context, agentID string) bool {
	if c.cfg.Fleet.Online(agentID) {
		return true
	}
	m, err := c.Presence(ctx)
	if err != nil {
		return false
	}
	_, ok := m[agentID]
	return ok
}

// Send delivers a directive that needs no report: at once when the agent's
// stream is here, else through the store to whichever replica holds it,
// now or when the agent comes back within an hour.
func (c *Cluster) Send(ctx context.Context, agentID string, d *livedumpv1.Directive) error {
	if s := c.cfg.Fleet.Session(agentID); s != nil {
		return s.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: d}})
	}
	_, err := c.enqueue(ctx, agentID, kindSend, d, nil)
	return err
}

// Exchange is Call for any directive answered with a report (see
// fleet.ReportKind). Across replicas the result row holds the report
// itself, so a provisioning result reads the same to every version.
func (c *Cluster) Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (fleet.Report, error) {
	if c.cfg.Fleet.Online(agentID) {
		return c.cfg.Fleet.Exchange(ctx, agentID, d)
	}
	m, err := c.Presence(ctx)
	if err != nil {
		return nil, err
	}
	if r, ok := m[agentID]; !ok || r == c.id {
		return nil, ErrOffline
	}
	ch := make(chan store.Directive, 1)
	seq, err := c.enqueue(ctx, agentID, kindCall, d, func(seq int64) {
		c.mu.Lock()
		c.waiting[seq] = ch
		c.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		c.mu.Lock()
		delete(c.waiting, seq)
		c.mu.Unlock()
	}()
	select {
	case res := <-ch:
		if res.State == stateFailed {
			msg := string(res.Result)
			if msg == fleet.ErrOffline.Error() {
				return nil, ErrOffline
			}
			return nil, errors.New(msg)
		}
		rep := fleet.NewReport(d)
		if err := proto.Unmarshal(res.Result, rep); err != nil {
			return nil, fmt.Errorf("report from another replica: %w", err)
		}
		return rep, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// enqueue stores a directive for the replica holding the agent's stream;
// registered, if set, sees its seq before anyone is notified.
func (c *Cluster) enqueue(ctx context.Context, agentID, kind string, d *livedumpv1.Directive, registered func(int64)) (int64, error) {
	body, err := proto.Marshal(d)
	if err != nil {
		return 0, err
	}
	now := c.cfg.Clock.Now().UTC()
	seq, err := c.cfg.Store.EnqueueDirective(ctx, store.Directive{
		AgentID: agentID, ID: kind + d.GetId(), Body: body, State: statePending, Origin: c.id, Created: now, Updated: now,
	})
	if err != nil {
		return 0, fmt.Errorf("queue directive for agent %s: %w", agentID, err)
	}
	if registered != nil {
		registered(seq)
	}
	c.routed.WithLabelValues("out").Inc()
	target := ""
	if m, err := c.Presence(ctx); err == nil {
		target = m[agentID]
	}
	if err := c.cfg.Bus.Notify(ctx, ChanDirectives, target); err != nil {
		c.log.Warn("notify directive", "agent_id", agentID, "err", err)
	}
	return seq, nil
}

// deliver sends the directives queued for agents attached here.
func (c *Cluster) deliver(ctx context.Context) {
	ds, err := c.cfg.Store.PendingDirectives(ctx, c.id, 256)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("pending directives", "err", err)
		}
		return
	}
	for _, d := range ds {
		sess := c.cfg.Fleet.Session(d.AgentID)
		if sess == nil {
			continue // detached since; it stays pending for wherever it goes
		}
		dir := &livedumpv1.Directive{}
		if err := proto.Unmarshal(d.Body, dir); err != nil {
			c.finish(ctx, d, stateFailed, []byte("undecodable directive: "+err.Error()))
			continue
		}
		c.routed.WithLabelValues("in").Inc()
		if strings.HasPrefix(d.ID, kindCall) {
			if err := c.cfg.Store.SetDirectiveState(ctx, d.Seq, stateSent, nil, c.cfg.Clock.Now().UTC()); err != nil {
				continue
			}
			go func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
				defer cancel()
				rep, err := c.cfg.Fleet.Exchange(cctx, d.AgentID, dir)
				if err != nil {
					c.finish(cctx, d, stateFailed, []byte(err.Error()))
					return
				}
				b, _ := proto.Marshal(rep)
				c.finish(cctx, d, stateDone, b)
			}()
			continue
		}
		if err := sess.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: dir}}); err != nil {
			continue // the outbox is full: the next catch-up tries again
		}
		c.finish(ctx, d, stateDone, nil)
	}
}

func (c *Cluster) finish(ctx context.Context, d store.Directive, state string, result []byte) {
	if err := c.cfg.Store.SetDirectiveState(ctx, d.Seq, state, result, c.cfg.Clock.Now().UTC()); err != nil {
		c.log.Warn("record directive result", "seq", d.Seq, "err", err)
		return
	}
	if strings.HasPrefix(d.ID, kindCall) {
		if err := c.cfg.Bus.Notify(ctx, ChanResults, strconv.FormatInt(d.Seq, 10)); err != nil {
			c.log.Warn("notify directive result", "seq", d.Seq, "err", err)
		}
	}
}

// collect hands finished calls to their waiters.
func (c *Cluster) collect(ctx context.Context) {
	c.mu.Lock()
	seqs := make([]int64, 0, len(c.waiting))
	for s := range c.waiting {
		seqs = append(seqs, s)
	}
	c.mu.Unlock()
	for _, seq := range seqs {
		d, err := c.cfg.Store.GetDirective(ctx, seq)
		if err != nil || (d.State != stateDone && d.State != stateFailed) {
			continue
		}
		c.mu.Lock()
		ch := c.waiting[seq]
		delete(c.waiting, seq)
		c.mu.Unlock()
		if ch != nil {
			ch <- d
		}
	}
}

// sweepRevoked ends the local streams of agents and certificates revoked
// or superseded meanwhile, for revocations whose notification was missed.
func (c *Cluster) sweepRevoked() {
	if c.cfg.Fleet.Len() == 0 && c.cfg.Streams.Len() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agents, err := c.cfg.Store.ListAgents(ctx)
	if err != nil {
		c.log.Warn("revocation catch-up", "err", err)
		return
	}
	byID := make(map[string]store.Agent, len(agents))
	for _, a := range agents {
		byID[a.ID] = a
		if a.Revoked && c.cfg.Fleet.Disconnect(a.ID, fleet.ErrRevoked) {
			c.log.Info("revoked agent disconnected by catch-up", "agent_id", a.ID)
		}
	}
	now := c.cfg.Clock.Now()
	checked := map[string]bool{}
	for _, o := range c.cfg.Streams.Owners() {
		if checked[o.Serial] {
			continue
		}
		checked[o.Serial] = true
		switch o.Identity.Kind {
		case pki.KindAgent:
			a, ok := byID[o.Identity.AgentID]
			switch {
			case !ok || a.Revoked:
				c.cfg.Streams.EndAgent(o.Identity.AgentID, fleet.ErrRevoked)
			case o.Serial == a.CertSerial:
			case o.Serial == a.PrevSerial && now.Before(a.PrevUntil):
				c.supersedeAt(o.Identity.AgentID, o.Serial, a.PrevUntil)
			default:
				c.cfg.Streams.EndAgentSerial(o.Identity.AgentID, o.Serial, fleet.ErrCertSuperseded)
			}
		case pki.KindOperator:
			r, revoked, err := c.cfg.Store.OperatorCertRevocation(ctx, o.Serial, o.Identity.Name, o.Issued)
			if err != nil {
				c.log.Warn("operator revocation catch-up", "err", err)
				return
			}
			if revoked && r.Name != "" {
				c.cfg.Streams.EndOperatorName(r.Name, r.At, fleet.ErrCertRevoked)
			} else if revoked {
				c.cfg.Streams.EndSerial(o.Serial, fleet.ErrCertRevoked)
			}
		}
	}
}

// Revoked disconnects a revoked agent, and ends every stream it holds, here
// and on every other replica.
func (c *Cluster) Revoked(ctx context.Context, agentID string) {
	c.cfg.Fleet.Disconnect(agentID, fleet.ErrRevoked)
	c.cfg.Streams.EndAgent(agentID, fleet.ErrRevoked)
	if err := c.cfg.Bus.Notify(ctx, ChanAgents, "revoke "+agentID); err != nil {
		c.log.Warn("notify revocation", "agent_id", agentID, "err", err)
	}
}

// Superseded ends, at graceUntil, the streams an agent still holds open
// with the certificate a renewal replaced, here and on every other replica.
func (c *Cluster) Superseded(ctx context.Context, agentID, oldSerial string, graceUntil time.Time) {
	c.supersedeAt(agentID, oldSerial, graceUntil)
	msg := fmt.Sprintf("supersede %s %s %d", agentID, oldSerial, graceUntil.UnixMilli())
	if err := c.cfg.Bus.Notify(ctx, ChanCerts, msg); err != nil {
		c.log.Warn("notify certificate renewal", "agent_id", agentID, "err", err)
	}
}

func (c *Cluster) supersedeAt(agentID, serial string, at time.Time) {
	end := func() {
		if n := c.cfg.Streams.EndAgentSerial(agentID, serial, fleet.ErrCertSuperseded); n > 0 {
			c.log.Info("streams on a superseded certificate ended", "agent_id", agentID, "serial", serial, "streams", n)
		}
	}
	if d := at.Sub(c.cfg.Clock.Now()); d > 0 {
		c.cfg.Clock.AfterFunc(d, end)
		return
	}
	end()
}

// OperatorCertRevoked ends the streams of a revoked operator certificate
// here and on every other replica.
func (c *Cluster) OperatorCertRevoked(ctx context.Context, serial string) {
	c.cfg.Streams.EndSerial(serial, fleet.ErrCertRevoked)
	if err := c.cfg.Bus.Notify(ctx, ChanCerts, "serial "+serial); err != nil {
		c.log.Warn("notify certificate revocation", "serial", serial, "err", err)
	}
}

// OperatorNameRevoked ends the streams of every certificate of an operator
// name issued before before, here and on every other replica.
func (c *Cluster) OperatorNameRevoked(ctx context.Context, name string, before time.Time) {
	c.cfg.Streams.EndOperatorName(name, before, fleet.ErrCertRevoked)
	if err := c.cfg.Bus.Notify(ctx, ChanCerts, fmt.Sprintf("name %s %d", name, before.UnixMilli())); err != nil {
		c.log.Warn("notify operator revocation", "name", name, "err", err)
	}
}

// certNotified applies a revocation broadcast by a replica (this one too).
func (c *Cluster) certNotified(payload string) {
	f := strings.Fields(payload)
	ms := func(s string) (time.Time, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return time.UnixMilli(n), err == nil
	}
	switch {
	case len(f) == 4 && f[0] == "supersede":
		if at, ok := ms(f[3]); ok {
			c.supersedeAt(f[1], f[2], at)
		}
	case len(f) == 2 && f[0] == "serial":
		c.cfg.Streams.EndSerial(f[1], fleet.ErrCertRevoked)
	case len(f) == 3 && f[0] == "name":
		if at, ok := ms(f[2]); ok {
			c.cfg.Streams.EndOperatorName(f[1], at, fleet.ErrCertRevoked)
		}
	case payload == "":
		// The listener reconnected: ChanAgents' catch-up covers both.
	default:
		c.log.Warn("unknown certificate notification", "payload", payload)
	}
}

// CaptureChanged tells the other replicas to look at a capture now rather
// than at their next tick.
func (c *Cluster) CaptureChanged(ctx context.Context, captureID string) {
	if err := c.cfg.Bus.Notify(ctx, ChanCaptures, captureID); err != nil {
		c.log.Warn("notify capture", "capture_id", captureID, "err", err)
	}
}

// EventsStored tells the other replicas' watchers that a capture has new
// events.
func (c *Cluster) EventsStored(ctx context.Context, captureID string) {
	if err := c.cfg.Bus.Notify(ctx, ChanEvents, c.id+" "+captureID); err != nil {
		c.log.Debug("notify events", "capture_id", captureID, "err", err)
	}
}

// LocalBus is a Bus inside one process.
type LocalBus struct {
	mu   sync.Mutex
	subs map[string][]func(string, string)
}

// NewLocalBus returns an empty LocalBus.
func NewLocalBus() *LocalBus { return &LocalBus{subs: map[string][]func(string, string){}} }

// Notify calls every listener of channel.
func (b *LocalBus) Notify(_ context.Context, channel, payload string) error {
	b.mu.Lock()
	fns := append([]func(string, string){}, b.subs[channel]...)
	b.mu.Unlock()
	for _, fn := range fns {
		go fn(channel, payload)
	}
	return nil
}

func (b *LocalBus) listeners(channel string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs[channel])
}

// Listen registers fn until ctx ends.
func (b *LocalBus) Listen(ctx context.Context, channels []string, fn func(string, string)) error {
	b.mu.Lock()
	for _, ch := range channels {
		b.subs[ch] = append(b.subs[ch], fn)
	}
	b.mu.Unlock()
	<-ctx.Done()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range channels {
		b.subs[ch] = nil
	}
	return nil
}
