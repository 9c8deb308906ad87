package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/api"
)

// Defaults of the transport limits.
const (
	DefaultMaxAnonymousConnections = 1024
	DefaultMaxStreamsPerConnection = 128
	DefaultHandshakeTimeout        = 10 * time.Second
	DefaultAnonymousIdleTimeout    = 10 * time.Second
	DefaultAnonymousMaxLifetime    = 60 * time.Second
	DefaultEnrollRate              = 1.0
	DefaultEnrollBurst             = 20

	// fdReserve is what the default connection cap leaves of the open-file
	// limit for the store, blob files and the metrics listener.
	fdReserve = 256
	// fallbackMaxConnections is the cap where the open-file limit is unknown.
	fallbackMaxConnections = 65536
	// maxAnonymousStreams is how many calls a connection without a
	// certificate may have in flight: Enroll and a health Check need one.
	maxAnonymousStreams = 8
)

// TransportConfig bounds what a peer can hold before it has proven who it
// is: the first attacker of docs/security.md reaches the port with no
// certificate. Zero values take the defaults.
type TransportConfig struct {
	// MaxConnections caps open gRPC connections, with or without a
	// certificate; past it new connections are closed at once. 0: the
	// process's open-file limit less a reserve for the store and blobs.
	MaxConnections int
	// MaxAnonymousConnections caps connections that completed the TLS
	// handshake without a client certificate (default 1024).
	MaxAnonymousConnections int
	// MaxStreamsPerConnection is HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// (default 128): an agent uses a handful.
	MaxStreamsPerConnection uint32
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface of a
	// new connection (default 10s).
	HandshakeTimeout time.Duration
	// AnonymousIdleTimeout closes a connection without a client
	// certificate that has sent nothing for this long (default 10s).
	AnonymousIdleTimeout time.Duration
	// AnonymousMaxLifetime closes a connection without a client
	// certificate this long after its handshake, busy or not (default 60s):
	// it needs only Enroll and health checks.
	AnonymousMaxLifetime time.Duration
	// EnrollRate is the Enroll calls per second allowed from one source
	// (an IPv4 address or an IPv6 /64), with bursts of EnrollBurst
	// (defaults 1/s and 20). A negative EnrollRate turns the limit off.
	EnrollRate  float64
	EnrollBurst int
}

// withDefaults fills the zero values.
func (t TransportConfig) withDefaults() TransportConfig {
	if t.MaxConnections <= 0 {
		t.MaxConnections = fallbackMaxConnections
		if n := openFileLimit(); n > 0 {
			t.MaxConnections = max(n-fdReserve, 64)
		}
	}
	if t.MaxAnonymousConnections <= 0 {
		t.MaxAnonymousConnections = DefaultMaxAnonymousConnections
	}
	if t.MaxStreamsPerConnection == 0 {
		t.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	if t.HandshakeTimeout <= 0 {
		t.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if t.AnonymousIdleTimeout <= 0 {
		t.AnonymousIdleTimeout = DefaultAnonymousIdleTimeout
	}
	if t.AnonymousMaxLifetime <= 0 {
		t.AnonymousMaxLifetime = DefaultAnonymousMaxLifetime
	}
	if t.EnrollRate == 0 {
		t.EnrollRate = DefaultEnrollRate
	}
	if t.EnrollBurst <= 0 {
		t.EnrollBurst = DefaultEnrollBurst
	}
	return t
}

// Reasons of a failed TLS handshake: a small fixed set, so the metric label
// stays bounded whatever a client sends.
const (
	reasonBadCertificate = "bad_certificate"
	reasonUnknownCA      = "unknown_ca"
	reasonTimeout        = "timeout"
	reasonProtocol       = "protocol"
	reasonClosed         = "closed"
	reasonOther          = "other"
)

var handshakeReasons = []string{reasonBadCertificate, reasonUnknownCA, reasonTimeout, reasonProtocol, reasonClosed, reasonOther}

// Reasons a connection is refused before it is served.
const (
	refusedMaxConnections          = "max_connections"
	refusedMaxAnonymousConnections = "max_anonymous_connections"
)

// transportMetrics count what happens below gRPC.
type transportMetrics struct {
	open              prometheus.Gauge
	anonymous         prometheus.Gauge
	refused           *prometheus.CounterVec
	handshakeFailures *prometheus.CounterVec
	anonymousClosed   *prometheus.CounterVec
	anonymousRefused  *prometheus.CounterVec
}

func newTransportMetrics(reg prometheus.Registerer) *transportMetrics {
	m := &transportMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livedump_controller_connections_open",
			Help: "gRPC connections accepted and not yet closed, with or without a certificate.",
		}),
		anonymous: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livedump_controller_anonymous_connections_open",
			Help: "gRPC connections open without a client certificate.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_connections_refused_total",
			Help: "Connections closed before they were served, by reason (max_connections, max_anonymous_connections).",
		}, []string{"reason"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_tls_handshake_failures_total",
			Help: "Failed TLS handshakes, by reason (bad_certificate, unknown_ca, timeout, protocol, closed, other).",
		}, []string{"reason"}),
		anonymousClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_anonymous_connections_closed_total",
			Help: "Connections without a client certificate closed by the controller, by reason (idle, lifetime).",
		}, []string{"reason"}),
		anonymousRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_anonymous_calls_refused_total",
			Help: "Calls without a client certificate refused before they were served, by reason (unknown_method, too_many_streams).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"unknown_method", "too_many_streams"} {
		m.anonymousRefused.WithLabelValues(r)
	}
	for _, r := range []string{refusedMaxConnections, refusedMaxAnonymousConnections} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range handshakeReasons {
		m.handshakeFailures.WithLabelValues(r)
	}
	for _, r := range []string{"idle", "lifetime"} {
		m.anonymousClosed.WithLabelValues(r)
	}
	reg.MustRegister(m.open, m.anonymous, m.refused, m.handshakeFailures, m.anonymousClosed, m.anonymousRefused)
	return m
}

// sparseLog logs at most burst lines at once and one a second after that;
// the next line it lets through says how many it suppressed meanwhile. An
// attacker can make the controller fail any number of handshakes, but not
// fill its journal.
type sparseLog struct {
	log   *slog.Logger
	clock clockwork.Clock
	mu    sync.Mutex
	lim   *rate.Limiter
	held  int
}

func newSparseLog(log *slog.Logger, clock clockwork.Clock) *sparseLog {
	return &sparseLog{log: log, clock: clock, lim: rate.NewLimiter(rate.Every(time.Second), 10)}
}

func (s *sparseLog) Warn(msg string, args ...any) {
	s.mu.Lock()
	if !s.lim.AllowN(s.clock.Now(), 1) {
		s.held++
		s.mu.Unlock()
		return
	}
	n := s.held
	s.held = 0
	s.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Warn(msg, args...)
}

// sourceIP is the address of a peer without its port.
func sourceIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// limitListener closes connections past max at once: a client learns at
// the TCP level that the controller is full, retries with backoff, and the
// controller keeps file descriptors for its store.
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	metrics *transportMetrics
	log     *sparseLog
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			c.Close()
			l.metrics.refused.WithLabelValues(refusedMaxConnections).Inc()
			l.log.Warn("connection refused", "reason", refusedMaxConnections, "max", l.max, "source", sourceIP(c.RemoteAddr()))
			continue
		}
		l.metrics.open.Inc()
		return &releaseConn{Conn: c, release: func() { l.open.Add(-1); l.metrics.open.Dec() }}, nil
	}
}

// releaseConn runs release once, at its first Close.
type releaseConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releaseConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// guardedCreds wraps the server's TLS credentials: it counts and logs failed
// handshakes, and puts connections without a client certificate on a short
// leash (a cap on their number, an idle limit and a lifetime).
type guardedCreds struct {
	credentials.TransportCredentials
	cfg       TransportConfig
	metrics   *transportMetrics
	log       *sparseLog
	anonymous atomic.Int64
	// conns holds the connections without a certificate by remote address,
	// for the tap handle to find the one a new stream arrives on.
	conns *sync.Map // string → *anonymousConn
	// certConns holds the connections of certificate holders by their
	// remote address (the net.Addr itself, as gRPC's peer carries it).
	certConns *sync.Map // net.Addr → *frameConn
}

var errAnonymousCap = errors.New("too many connections without a client certificate")

func (g *guardedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := g.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		reason := handshakeReason(err)
		g.metrics.handshakeFailures.WithLabelValues(reason).Inc()
		g.log.Warn("tls handshake failed", "reason", reason, "source", sourceIP(raw.RemoteAddr()), "err", err)
		return nil, nil, err
	}
	if ti, ok := info.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		return newFrameConn(conn, g.certConns), info, nil
	}
	if g.anonymous.Add(1) > int64(g.cfg.MaxAnonymousConnections) {
		g.anonymous.Add(-1)
		conn.Close()
		g.metrics.refused.WithLabelValues(refusedMaxAnonymousConnections).Inc()
		g.log.Warn("connection refused", "reason", refusedMaxAnonymousConnections, "max", g.cfg.MaxAnonymousConnections, "source", sourceIP(raw.RemoteAddr()))
		return nil, nil, errAnonymousCap
	}
	g.metrics.anonymous.Inc()
	a := &anonymousConn{Conn: conn, idle: g.cfg.AnonymousIdleTimeout, metrics: g.metrics}
	key := raw.RemoteAddr().String()
	g.conns.Store(key, a)
	a.release = func() { g.conns.Delete(key); g.anonymous.Add(-1); g.metrics.anonymous.Dec() }
	a.lifetime = time.AfterFunc(g.cfg.AnonymousMaxLifetime, func() {
		g.metrics.anonymousClosed.WithLabelValues("lifetime").Inc()
		// The raw connection: closing TLS would first try to send
		// close_notify to a peer that may not read.
		raw.Close()
	})
	return a, info, nil
}

func (g *guardedCreds) Clone() credentials.TransportCredentials {
	return &guardedCreds{TransportCredentials: g.TransportCredentials.Clone(), cfg: g.cfg, metrics: g.metrics, log: g.log, conns: g.conns, certConns: g.certConns}
}

type anonymousStreamKey struct{}

// anonymousStream is a call in flight on a connection without a
// certificate; end releases its slot once.
type anonymousStream struct {
	conn *anonymousConn
	once sync.Once
}

func (s *anonymousStream) end() { s.once.Do(func() { s.conn.streams.Add(-1) }) }

// anonymousConnOf returns the connection without a certificate a stream
// arrived on, or nil for a certificate holder.
func (g *guardedCreds) anonymousConnOf(ctx context.Context) *anonymousConn {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	if v, ok := g.conns.Load(p.Addr.String()); ok {
		return v.(*anonymousConn)
	}
	return nil
}

// streamEnderOf returns the ender of a new stream of a certificate holder
// (see frameConn), or nil. For the tap handle only: the stream is the one
// whose headers were read last.
func (g *guardedCreds) streamEnderOf(ctx context.Context) api.StreamEnder {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	v, ok := g.certConns.Load(p.Addr)
	if !ok {
		return nil
	}
	fc := v.(*frameConn)
	return streamEnd{conn: fc, id: fc.lastHeaders()}
}

// admit runs when the headers of a stream without a certificate arrive,
// before gRPC starts a goroutine for it: it refuses unknown methods and
// calls past maxAnonymousStreams in flight. Known methods go on to the
// authorizer, which refuses what needs a certificate and audits it. It must
// not block (gRPC holds its transport's lock).
func (g *guardedCreds) admit(ctx context.Context, a *anonymousConn, method string) (context.Context, error) {
	if !api.KnownMethod(method) {
		g.metrics.anonymousRefused.WithLabelValues("unknown_method").Inc()
		return ctx, status.Errorf(codes.Unimplemented, "unknown method %s", strings.TrimPrefix(method, "/"))
	}
	if a.streams.Add(1) > maxAnonymousStreams {
		a.streams.Add(-1)
		g.metrics.anonymousRefused.WithLabelValues("too_many_streams").Inc()
		return ctx, status.Errorf(codes.ResourceExhausted, "at most %d calls at once on a connection without a client certificate", maxAnonymousStreams)
	}
	return context.WithValue(ctx, anonymousStreamKey{}, &anonymousStream{conn: a}), nil
}

// anonymousStreamEnd releases the slot of a call without a certificate when
// gRPC reports its end, however it ended (a unary call whose request never
// arrives never reaches an interceptor).
type anonymousStreamEnd struct{}

func (anonymousStreamEnd) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}
func (anonymousStreamEnd) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.End); ok {
		if st, ok := ctx.Value(anonymousStreamKey{}).(*anonymousStream); ok {
			st.end()
		}
	}
}
func (anonymousStreamEnd) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (anonymousStreamEnd) HandleConn(context.Context, stats.ConnStats) {}

// anonymousConn is a connection without a client certificate. Every read
// must arrive within the idle limit; gRPC's reader treats the timeout as
// the end of the connection.
type anonymousConn struct {
	net.Conn
	idle     time.Duration
	lifetime *time.Timer
	metrics  *transportMetrics
	streams  atomic.Int32 // calls in flight
	once     sync.Once
	release  func()
}

func (c *anonymousConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.metrics.anonymousClosed.WithLabelValues("idle").Inc()
	}
	return n, err
}

func (c *anonymousConn) Close() error {
	c.once.Do(func() {
		c.lifetime.Stop()
		c.release()
	})
	return c.Conn.Close()
}

// handshakeReason sorts a handshake error into one of handshakeReasons.
func handshakeReason(err error) string {
	var (
		ne      net.Error
		unknown x509.UnknownAuthorityError
		verify  *tls.CertificateVerificationError
		invalid x509.CertificateInvalidError
		record  tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		return reasonUnknownCA
	case errors.As(err, &invalid), errors.As(err, &verify):
		return reasonBadCertificate
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return reasonClosed
	case errors.As(err, &record):
		return reasonProtocol
	}
	// Alerts the client sends back have no exported type.
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "unknown authority"):
		return reasonUnknownCA
	case strings.Contains(msg, "certificate"):
		return reasonBadCertificate
	case strings.Contains(msg, "tls:"), strings.Contains(msg, "alpn"):
		return reasonProtocol
	}
	return reasonOther
}

// frameConn is a certificate holder's connection as gRPC's HTTP/2 reader
// sees it, after TLS. It follows the frame boundaries of what the client
// sends, so that it can end one of the client's streams the way the client
// would: an empty DATA frame with END_STREAM, handed to the reader between
// two real frames. A Connect handler waiting in Recv then sees io.EOF and
// returns the status it chooses (see api.StreamEnder). The connection and
// its other streams go on as before.
type frameConn struct {
	net.Conn
	addr net.Addr  // RemoteAddr, its key in reg
	reg  *sync.Map // guardedCreds.certConns
	mu   sync.Mutex
	// skip is what is left of the client's connection preface, which
	// gRPC reads before the first frame.
	skip        int
	hdr         [http2FrameHeaderLen]byte
	hdrN        int    // bytes of the current frame header read
	remain      uint32 // payload bytes of the current frame left to read
	inBlock     bool   // a header block waits for its CONTINUATION
	headers     uint32 // stream of the last HEADERS frame read
	inject      []byte // frames for the reader at the next frame boundary
	injecting   bool   // the reader is inside an injected frame
	interrupted bool   // a read deadline in the past was set to hand over inject
}

const (
	http2FrameHeaderLen = 9
	http2PrefaceLen     = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	http2FrameData      = 0x0
	http2FrameHeaders   = 0x1
	http2FrameCont      = 0x9
	http2FlagEndStream  = 0x1
	http2FlagEndHeaders = 0x4
)

// aLongTimeAgo is a read deadline that ends a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

func newFrameConn(c net.Conn, reg *sync.Map) *frameConn {
	fc := &frameConn{Conn: c, addr: c.RemoteAddr(), reg: reg, skip: http2PrefaceLen}
	reg.Store(fc.addr, fc)
	return fc
}

func (c *frameConn) atBoundary() bool {
	return c.skip == 0 && c.hdrN == 0 && c.remain == 0 && !c.inBlock
}

// account follows the frames in p, read by gRPC. Called with mu held.
func (c *frameConn) account(p []byte) {
	for len(p) > 0 {
		switch {
		case c.skip > 0:
			k := min(len(p), c.skip)
			c.skip -= k
			p = p[k:]
		case c.remain > 0:
			k := min(uint32(len(p)), c.remain)
			c.remain -= k
			p = p[k:]
		default:
			k := copy(c.hdr[c.hdrN:], p)
			c.hdrN += k
			p = p[k:]
			if c.hdrN < http2FrameHeaderLen {
				continue
			}
			c.hdrN = 0
			h := c.hdr
			c.remain = uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
			switch h[3] {
			case http2FrameHeaders:
				c.headers = (uint32(h[5])<<24 | uint32(h[6])<<16 | uint32(h[7])<<8 | uint32(h[8])) & 0x7fffffff
				c.inBlock = h[4]&http2FlagEndHeaders == 0
			case http2FrameCont:
				c.inBlock = h[4]&http2FlagEndHeaders == 0
			}
		}
	}
}

func (c *frameConn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		if len(c.inject) > 0 && (c.injecting || c.atBoundary()) {
			n := copy(b, c.inject)
			c.inject = c.inject[n:]
			c.account(b[:n])
			c.injecting = !c.atBoundary()
			if len(c.inject) == 0 {
				c.inject = nil
			}
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
		n, err := c.Conn.Read(b)
		c.mu.Lock()
		c.account(b[:n])
		handover := c.interrupted && errors.Is(err, os.ErrDeadlineExceeded)
		if handover {
			// Our own deadline, set by endStream: a timeout is not
			// sticky in crypto/tls, and the read goes on.
			c.interrupted = false
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
		c.mu.Unlock()
		if handover {
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// lastHeaders is the stream of the last HEADERS frame read: in the tap
// handle, which gRPC calls as it reads a stream's headers, the new stream.
func (c *frameConn) lastHeaders() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.headers
}

// endStream ends the client's side of stream id: the reader gets an empty
// DATA frame with END_STREAM at the next frame boundary. A blocked read
// is interrupted to take it.
func (c *frameConn) endStream(id uint32) {
	f := [http2FrameHeaderLen]byte{0, 0, 0, http2FrameData, http2FlagEndStream, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inject = append(c.inject, f[:]...)
	c.interrupted = true
	_ = c.Conn.SetReadDeadline(aLongTimeAgo)
}

func (c *frameConn) Close() error {
	c.reg.CompareAndDelete(c.addr, c)
	return c.Conn.Close()
}

// streamEnd is the api.StreamEnder of one stream of a frameConn.
type streamEnd struct {
	conn *frameConn
	id   uint32
}

func (e streamEnd) EndStream() { e.conn.endStream(e.id) }
