package api

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxLimitedSources bounds the table of per-source limiters; past it the
// source seen longest ago is forgotten, so the table itself cannot be used
// to exhaust memory.
const maxLimitedSources = 1 << 16

// DefaultRateLimitAuditInterval is how often at most one audit entry is
// written per source for its rate-limited calls.
const DefaultRateLimitAuditInterval = time.Minute

// EnrollLimiterConfig configures an EnrollLimiter.
type EnrollLimiterConfig struct {
	Rate  float64 // calls per second per source
	Burst int
	// AuditInterval: rate-limited calls of one source are audited in one
	// entry per interval (default DefaultRateLimitAuditInterval).
	AuditInterval time.Duration
	Store         store.Store
	Metric        prometheus.Counter // counts every rate-limited call
	Logger        *slog.Logger
	Clock         clockwork.Clock
}

// EnrollLimiter limits calls per source address, before the request is
// read: Enroll, and every other call without a client certificate except
// health checks. Anyone may make these calls; they must not let anyone spend
// the controller's CPU, store or audit log. A source is an IPv4 address or
// an IPv6 /64 (one host usually holds a whole /64).
//
// Refused calls are counted at once in the metric, and audited in
// aggregate: at most one entry per source per interval ("N calls refused
// since T"), written by Run, so a flood costs the audit log a bounded number
// of ≤ 1 KiB rows per source.
type EnrollLimiter struct {
	cfg  EnrollLimiterConfig
	wake chan struct{}

	mu      sync.Mutex
	sources map[string]*list.Element // of *limitedSource
	lru     list.List                // front: most recently seen
	evicted int                      // refusals of forgotten sources not yet audited
}

type limitedSource struct {
	key       string
	lim       *rate.Limiter
	lastSeen  time.Time
	refused   int // since the last audit entry
	method    string
	since     time.Time
	lastAudit time.Time
}

// NewEnrollLimiter returns a limiter; call Run to write its audit entries.
func NewEnrollLimiter(cfg EnrollLimiterConfig) *EnrollLimiter {
	if cfg.AuditInterval <= 0 {
		cfg.AuditInterval = DefaultRateLimitAuditInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &EnrollLimiter{cfg: cfg, wake: make(chan struct{}, 1), sources: map[string]*list.Element{}}
}

// sourceKey is the rate-limited unit of a peer address.
func sourceKey(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		if a == nil {
			return "unknown"
		}
		return a.String()
	}
	if ip4 := tcp.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return (&net.IPNet{IP: tcp.IP.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// Check refuses a call over its source's limit. It runs from gRPC's tap
// handle when the call's headers arrive, before the request is read, on the
// transport's goroutine with a lock held: it must not block.
func (l *EnrollLimiter) Check(ctx context.Context, method string) error {
	var addr net.Addr
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr
	}
	key := sourceKey(addr)
	now := l.cfg.Clock.Now()
	l.mu.Lock()
	s := l.source(key, now)
	if s.lim.AllowN(now, 1) {
		l.mu.Unlock()
		return nil
	}
	if s.refused == 0 {
		s.since = now
	}
	s.refused++
	s.method = method
	l.mu.Unlock()
	l.cfg.Metric.Inc()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return status.Errorf(codes.ResourceExhausted,
		"%s: rate limit of %g calls per second (burst %d) from %s exceeded; retry later", shortMethod(method), l.cfg.Rate, l.cfg.Burst, key)
}

// source returns the entry of key, creating it and forgetting the oldest
// one if the table is full. l.mu is held.
func (l *EnrollLimiter) source(key string, now time.Time) *limitedSource {
	if e, ok := l.sources[key]; ok {
		l.lru.MoveToFront(e)
		s := e.Value.(*limitedSource)
		s.lastSeen = now
		return s
	}
	if len(l.sources) >= maxLimitedSources {
		oldest := l.lru.Back()
		s := oldest.Value.(*limitedSource)
		l.evicted += s.refused
		l.lru.Remove(oldest)
		delete(l.sources, s.key)
	}
	s := &limitedSource{key: key, lim: rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst), lastSeen: now}
	l.sources[key] = l.lru.PushFront(s)
	return s
}

// Run writes the aggregated audit entries and forgets sources that have
// been quiet long enough for their bucket to be full again, until ctx ends.
func (l *EnrollLimiter) Run(ctx context.Context) error {
	t := l.cfg.Clock.NewTicker(l.cfg.AuditInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.flush(context.WithoutCancel(ctx), true)
			return nil
		case <-l.wake:
			l.flush(ctx, false)
		case <-t.Chan():
			l.flush(ctx, false)
			l.sweep()
		}
	}
}

type refusalRecord struct {
	key, method string
	n           int
	since       time.Time
}

// flush audits the refusals of each source not audited within the
// interval (all of them when final).
func (l *EnrollLimiter) flush(ctx context.Context, final bool) {
	now := l.cfg.Clock.Now()
	var out []refusalRecord
	l.mu.Lock()
	for e := l.lru.Front(); e != nil; e = e.Next() {
		s := e.Value.(*limitedSource)
		if s.refused == 0 || (!final && now.Sub(s.lastAudit) < l.cfg.AuditInterval) {
			continue
		}
		out = append(out, refusalRecord{key: s.key, method: s.method, n: s.refused, since: s.since})
		s.refused, s.lastAudit = 0, now
	}
	if l.evicted > 0 {
		out = append(out, refusalRecord{key: "forgotten sources", method: livedumpv1.AgentService_Enroll_FullMethodName, n: l.evicted, since: now})
		l.evicted = 0
	}
	l.mu.Unlock()
	for _, r := range out {
		details, _ := json.Marshal(map[string]any{"source": r.key, "refused": r.n})
		e := store.AuditEntry{
			Time:  now.UTC(),
			Actor: "anonymous@" + r.key,
			// The method of the last refused call; the outcome counts them all.
			Action: shortMethod(r.method),
			Outcome: fmt.Sprintf("resource_exhausted: %d calls refused by the rate limit (%g/s, burst %d) since %s",
				r.n, l.cfg.Rate, l.cfg.Burst, r.since.UTC().Format(time.RFC3339)),
			Details: string(details),
		}
		boundAnonymousEntry(&e)
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := l.cfg.Store.AppendAudit(actx, e); err != nil {
			l.cfg.Logger.Error("audit write failed", "action", e.Action, "actor", e.Actor, "err", err)
		}
		cancel()
	}
}

// sweep forgets sources whose bucket has refilled and that have nothing
// left to audit: they would start afresh anyway.
func (l *EnrollLimiter) sweep() {
	now := l.cfg.Clock.Now()
	full := time.Duration(float64(l.cfg.Burst) / l.cfg.Rate * float64(time.Second))
	l.mu.Lock()
	defer l.mu.Unlock()
	for e := l.lru.Back(); e != nil; {
		s := e.Value.(*limitedSource)
		prev := e.Prev()
		if s.refused == 0 && now.Sub(s.lastSeen) > full {
			l.lru.Remove(e)
			delete(l.sources, s.key)
		}
		e = prev
	}
}
