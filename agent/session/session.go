// Package session is the agent's link to the controller: enrollment,
// certificate renewal, and the Connect stream with heartbeats, reconnecting
// with jittered exponential backoff across a list of controller addresses.
package session

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/internal/backoff"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Defaults of Config.
const (
	DefaultBackoffMin        = time.Second
	DefaultBackoffMax        = 60 * time.Second
	DefaultHeartbeatInterval = 30 * time.Second
	// ClientKeepaliveTime is how long the connection may stay silent
	// before the agent pings the controller: longer than the controller's
	// own ping interval (65 s), so that on a healthy link only the
	// controller pings.
	ClientKeepaliveTime = 80 * time.Second
	// minRenewGap stops a renewal loop when the controller's clock is
	// behind ours and a fresh certificate already looks two-thirds old.
	minRenewGap = time.Hour
	rpcTimeout  = 30 * time.Second
)

// ErrEnrollmentRefused is returned by Run when the controller refuses the
// enrollment token; retrying cannot help.
var ErrEnrollmentRefused = errors.New("enrollment refused")

// Config configures a Client.
type Config struct {
	Controllers []string       // host:port, tried in order
	CAPool      *x509.CertPool // the controller CA: the only trusted root
	Token       string         // enrollment token; needed only before enrollment
	Labels      map[string]string
	StateDir    string
	// Inventory reports the host; it is called for every Hello.
	Inventory func(ctx context.Context) (*livedumpv1.Inventory, error)
	// Directive handles one directive and returns the error to nack it with.
	// It runs on the receive path, so long work must be handed off; its
	// result goes back later through Client.Send. Nil acks everything.
	Directive func(ctx context.Context, d *livedumpv1.Directive) error
	// Acked receives the IDs of events the controller has stored (or
	// refused for good). Optional.
	Acked func(ids []string)
	// Refused receives why the controller refused events, before Acked
	// receives their IDs. Optional.
	Refused func(refused []*livedumpv1.EventRefusal)
	// OnConnect returns messages to send right after the controller's
	// welcome, such as the current provisioning state. Optional.
	OnConnect func(ctx context.Context) []*livedumpv1.ConnectRequest

	Logger     *slog.Logger
	Metrics    *Metrics
	Clock      clockwork.Clock
	BackoffMin time.Duration
	BackoffMax time.Duration
	// ClientMetrics, when set, instruments every controller connection.
	ClientMetrics *grpcprom.ClientMetrics
}

// Client keeps the agent connected.
type Client struct {
	cfg   Config
	log   *slog.Logger
	ident atomic.Pointer[Identity]

	mu        sync.Mutex
	conns     map[string]*grpc.ClientConn
	retired   []*grpc.ClientConn                     // made with a certificate since renewed
	renewed   chan struct{}                          // closed when the certificate is renewed
	preferred int                                    // index of the address that worked last
	send      func(*livedumpv1.ConnectRequest) error // nil while disconnected
}

// ErrNotConnected is returned by Send while no stream is up.
var ErrNotConnected = errors.New("not connected to a controller")

// Send sends a message on the current stream. Messages are not queued while
// disconnected: everything the agent sends is either re-sent on reconnect
// (state) or answered by the controller's own timeout (directive reports).
func (c *Client) Send(m *livedumpv1.ConnectRequest) error {
	c.mu.Lock()
	send := c.send
	c.mu.Unlock()
	if send == nil {
		return ErrNotConnected
	}
	return send(m)
}

// New returns a Client, filling defaults.
func New(cfg Config) (*Client, error) {
	if len(cfg.Controllers) == 0 {
		return nil, errors.New("controllers: at least one controller address is required")
	}
	for _, a := range cfg.Controllers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("controllers: %q: %w", a, err)
		}
	}
	if cfg.CAPool == nil {
		return nil, errors.New("ca: the controller CA certificate is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("state_dir: required")
	}
	if cfg.Inventory == nil {
		return nil, errors.New("session: Inventory is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	return &Client{cfg: cfg, log: cfg.Logger, conns: map[string]*grpc.ClientConn{}, renewed: make(chan struct{})}, nil
}

// AgentID returns the enrolled agent ID, or "" before enrollment.
func (c *Client) AgentID() string {
	if id := c.ident.Load(); id != nil {
		return id.AgentID
	}
	return ""
}

// Identity returns the current identity, or nil before enrollment.
func (c *Client) Identity() *Identity { return c.ident.Load() }

// Run enrolls if needed, then keeps a Connect stream up and the certificate
// fresh until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	defer c.closeConns()
	id, err := LoadIdentity(c.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("load identity: %w", err)
	}
	if id != nil && !c.cfg.Clock.Now().Before(id.Leaf().NotAfter) {
		c.log.Warn("certificate expired, enrolling again", "agent_id", id.AgentID, "expired", id.Leaf().NotAfter)
		id = nil
	}
	if id == nil {
		if id, err = c.enrollLoop(ctx); err != nil {
			return err
		}
	}
	c.setIdentity(id)
	c.log.Info("agent identity", "agent_id", id.AgentID, "expires", id.Leaf().NotAfter)

	done := make(chan struct{})
	go func() { defer close(done); c.renewLoop(ctx) }()
	c.connectLoop(ctx)
	<-done
	return nil
}

func (c *Client) setIdentity(id *Identity) {
	c.ident.Store(id)
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.CertExpiry.Set(float64(id.Leaf().NotAfter.Unix()))
	}
}

func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}

func serverName(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

func (c *Client) tlsConfig(addr string, withCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    c.cfg.CAPool,
		ServerName: serverName(addr),
		// The controller's certificate is checked against the agent's
		// clock, which is the machine's wall clock: the same clock
		// that decides when our own certificate expires and renews.
		Time: c.cfg.Clock.Now,
	}
	if withCert {
		// Looked up per handshake, so a renewed certificate is used by the
		// next connection without restarting anything.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			id := c.ident.Load()
			if id == nil {
				return &tls.Certificate{}, nil
			}
			return id.TLSCertificate(), nil
		}
	}
	return cfg
}

func (c *Client) dialOptions(addr string, withCert bool) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig(addr, withCert))),
		// The controller pings every connection silent for 65 s
		// (controller.KeepaliveTime), and any read counts as activity here:
		// this keepalive fires only when the controller has gone silent,
		// and so finds a dead controller or a cut link within 100 s
		// without a ping of its own on a healthy link. Must not ping more
		// often than the controller's enforcement MinTime (15 s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: ClientKeepaliveTime, Timeout: 20 * time.Second, PermitWithoutStream: true}),
		// gRPC keeps its own reconnect backoff under the connect loop's
		// (1s growing to 120s by default): after an outage the stream
		// could not come back until that timer fired, up to two minutes
		// after the controller was reachable again, whatever BackoffMax
		// says. Give it the same bounds as the connect loop.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: c.cfg.BackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.cfg.BackoffMax},
			MinConnectTimeout: 20 * time.Second,
		}),
		// Fixed flow-control windows turn off gRPC's BDP estimator, which
		// answered almost every directive and ack with a PING (and the
		// controller's PING ack); 4 MiB keeps artifact downloads at link
		// speed on long links.
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(8 << 20),
	}
	if m := c.cfg.ClientMetrics; m != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(m.UnaryClientInterceptor()), grpc.WithChainStreamInterceptor(m.StreamClientInterceptor()))
	}
	return opts
}

// conn returns the mTLS connection to addr, creating it on first use.
func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, c.dialOptions(addr, true)...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *Client) closeConns() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.conns {
		cc.Close()
		delete(c.conns, a)
	}
	for _, cc := range c.retired {
		cc.Close()
	}
	c.retired = nil
}

// retireAfter is how long calls already under way on a connection made with
// the replaced certificate (an upload) may go on after a renewal; the
// controller accepts that certificate a while longer (its renew_grace,
// 10 minutes by default).
const retireAfter = time.Minute

// errRenewed ends a stream made with a certificate that has been renewed,
// so that the next one presents the new certificate.
var errRenewed = errors.New("certificate renewed; reconnecting with the new one")

// retireConns makes new calls dial again, presenting the renewed
// certificate (a TLS connection keeps the certificate of its handshake),
// ends the stream on the old connection and closes the old connections
// once calls under way have had time to finish. The controller accepts the
// replaced certificate only for a grace window after the renewal.
func (c *Client) retireConns() {
	c.mu.Lock()
	old := make([]*grpc.ClientConn, 0, len(c.conns))
	for a, cc := range c.conns {
		old = append(old, cc)
		delete(c.conns, a)
	}
	c.retired = append(c.retired, old...)
	close(c.renewed)
	c.renewed = make(chan struct{})
	c.mu.Unlock()
	c.cfg.Clock.AfterFunc(retireAfter, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, cc := range old {
			cc.Close()
		}
		c.retired = slices.DeleteFunc(c.retired, func(cc *grpc.ClientConn) bool { return slices.Contains(old, cc) })
	})
}

func (c *Client) addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Controllers[c.preferred]
}

func (c *Client) rotate() {
	c.mu.Lock()
	c.preferred = (c.preferred + 1) % len(c.cfg.Controllers)
	c.mu.Unlock()
}

// enrollLoop enrolls, retrying transient failures with backoff.
func (c *Client) enrollLoop(ctx context.Context) (*Identity, error) {
	if c.cfg.Token == "" {
		return nil, errors.New("token: the agent is not enrolled and no enrollment token is configured")
	}
	retry := backoff.New(c.retryPolicy(c.cfg.BackoffMax))
	for {
		addr := c.addr()
		id, err := c.enroll(ctx, addr)
		if err == nil {
			c.metric(func(m *Metrics) { m.Enrollments.WithLabelValues("ok").Inc() })
			return id, nil
		}
		switch status.Code(err) {
		case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated:
			c.metric(func(m *Metrics) { m.Enrollments.WithLabelValues("denied").Inc() })
			return nil, fmt.Errorf("%w by %s: %s", ErrEnrollmentRefused, addr, status.Convert(err).Message())
		}
		c.metric(func(m *Metrics) { m.Enrollments.WithLabelValues("error").Inc() })
		wait := retry.NextBackOff()
		c.log.Warn("enrollment failed, retrying", "controller", addr, "err", err, "retry_in", wait)
		c.rotate()
		if !c.sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

func (c *Client) enroll(ctx context.Context, addr string) (*Identity, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		return nil, err
	}
	inv, err := c.cfg.Inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	// Enrollment is the one call made without a client certificate, over TLS
	// that trusts only the configured CA.
	cc, err := grpc.NewClient(addr, c.dialOptions(addr, false)...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := livedumpv1.NewAgentServiceClient(cc).Enroll(rctx, &livedumpv1.EnrollRequest{
		Token: c.cfg.Token, Csr: csr, Labels: c.cfg.Labels, Inventory: inv,
	})
	if err != nil {
		return nil, err
	}
	id, err := newIdentity(key, resp.GetCertificateChain())
	if err != nil {
		return nil, fmt.Errorf("enrollment response: %w", err)
	}
	if id.AgentID != resp.GetAgentId() {
		return nil, fmt.Errorf("enrollment response: certificate names agent %s, response %s", id.AgentID, resp.GetAgentId())
	}
	if err := id.Save(c.cfg.StateDir); err != nil {
		return nil, fmt.Errorf("save identity: %w", err)
	}
	c.log.Info("enrolled", "agent_id", id.AgentID, "controller", addr)
	return id, nil
}

// renewLoop renews the certificate at two thirds of its life.
func (c *Client) renewLoop(ctx context.Context) {
	retry := backoff.New(c.retryPolicy(10 * time.Minute))
	gap := time.Duration(0)
	for {
		id := c.ident.Load()
		wait := id.RenewAt().Sub(c.cfg.Clock.Now())
		if wait < gap {
			wait = gap
		}
		if !c.sleep(ctx, wait) {
			return
		}
		if err := c.renew(ctx); err != nil {
			c.metric(func(m *Metrics) { m.Renewals.WithLabelValues("error").Inc() })
			gap = retry.NextBackOff()
			c.log.Warn("certificate renewal failed", "err", err, "retry_in", gap, "expires", id.Leaf().NotAfter)
			continue
		}
		c.metric(func(m *Metrics) { m.Renewals.WithLabelValues("ok").Inc() })
		retry.Reset()
		gap = minRenewGap
	}
}

func (c *Client) renew(ctx context.Context) error {
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		return err
	}
	cc, err := c.conn(c.addr())
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := livedumpv1.NewAgentServiceClient(cc).Renew(rctx, &livedumpv1.RenewRequest{Csr: csr})
	if err != nil {
		return err
	}
	id, err := newIdentity(key, resp.GetCertificateChain())
	if err != nil {
		return fmt.Errorf("renew response: %w", err)
	}
	if old := c.ident.Load(); id.AgentID != old.AgentID {
		return fmt.Errorf("renew response: certificate names agent %s, we are %s", id.AgentID, old.AgentID)
	}
	if err := id.Save(c.cfg.StateDir); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	c.setIdentity(id)
	c.retireConns()
	c.log.Info("certificate renewed", "agent_id", id.AgentID, "expires", id.Leaf().NotAfter)
	return nil
}

// retryPolicy is the session's retry policy, from BackoffMin up to max,
// jittered so that a fleet that lost its controller at the same instant
// does not come back in lockstep.
func (c *Client) retryPolicy(max time.Duration) backoff.Policy {
	return backoff.Policy{Min: c.cfg.BackoffMin, Max: max, Jitter: true}
}

func (c *Client) metric(f func(*Metrics)) {
	if c.cfg.Metrics != nil {
		f(c.cfg.Metrics)
	}
}

// connectLoop keeps a stream up. After a stream that was established drops,
// the same controller is tried first; a failed attempt moves to the next.
func (c *Client) connectLoop(ctx context.Context) {
	retry := backoff.New(c.retryPolicy(c.cfg.BackoffMax))
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			c.metric(func(m *Metrics) { m.Reconnects.Inc() })
		}
		addr := c.addr()
		established, err := c.stream(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRenewed) {
			c.log.Info("reconnecting with the renewed certificate", "controller", addr)
			retry.Reset()
			continue
		}
		if established {
			retry.Reset()
		} else {
			c.rotate()
		}
		wait := retry.NextBackOff()
		c.log.Warn("controller stream ended", "controller", addr, "err", err, "retry_in", wait)
		if !c.sleep(ctx, wait) {
			return
		}
	}
}

// stream runs one Connect stream until it fails. established reports whether
// the controller welcomed us.
func (c *Client) stream(ctx context.Context, addr string) (established bool, err error) {
	c.mu.Lock()
	renewed := c.renewed
	c.mu.Unlock()
	cc, err := c.conn(addr)
	if err != nil {
		return false, err
	}
	inv, err := c.cfg.Inventory(ctx)
	if err != nil {
		return false, fmt.Errorf("inventory: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := livedumpv1.NewAgentServiceClient(cc).Connect(sctx)
	if err != nil {
		return false, err
	}
	var sendMu sync.Mutex
	send := func(m *livedumpv1.ConnectRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return st.Send(m)
	}
	id := c.ident.Load()
	if err := send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: id.AgentID, Inventory: inv}}}); err != nil {
		return false, err
	}
	first, err := st.Recv()
	if err != nil {
		return false, err
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return false, errors.New("controller did not answer hello with welcome")
	}
	interval := DefaultHeartbeatInterval
	if w := welcome.GetHeartbeatInterval(); w != nil && w.AsDuration() > 0 {
		interval = w.AsDuration()
	}
	c.mu.Lock()
	for i, a := range c.cfg.Controllers {
		if a == addr {
			c.preferred = i
		}
	}
	c.mu.Unlock()
	c.mu.Lock()
	c.send = send
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.send = nil
		c.mu.Unlock()
	}()
	c.metric(func(m *Metrics) { m.Connected.Set(1) })
	defer c.metric(func(m *Metrics) { m.Connected.Set(0) })
	if c.cfg.OnConnect != nil {
		// Spooled events go several to a message when the controller
		// takes batches.
		for _, m := range batchEvents(c.cfg.OnConnect(sctx), int(welcome.GetMaxEventBatch())) {
			if err := send(m); err != nil {
				return true, err
			}
		}
	}
	c.log.Info("connected", "controller", addr, "agent_id", id.AgentID, "heartbeat_interval", interval)

	hbErr := make(chan error, 1)
	go func() {
		t := c.cfg.Clock.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.Chan():
			}
			if err := send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Heartbeat{Heartbeat: &livedumpv1.Heartbeat{SentAt: timestamppb.New(c.cfg.Clock.Now())}}}); err != nil {
				hbErr <- err
				return
			}
			c.metric(func(m *Metrics) { m.Heartbeats.Inc() })
		}
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if a := m.GetEventAck(); a != nil && len(a.GetRefused()) > 0 && c.cfg.Refused != nil {
				c.cfg.Refused(a.GetRefused())
			}
			if a := m.GetEventAck(); a != nil && c.cfg.Acked != nil {
				c.cfg.Acked(a.GetEventIds())
			}
			if d := m.GetDirective(); d != nil {
				ack := &livedumpv1.Ack{DirectiveId: d.GetId()}
				if c.cfg.Directive != nil {
					if err := c.cfg.Directive(sctx, d); err != nil {
						ack.Error = err.Error()
					}
				}
				if err := send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Ack{Ack: ack}}); err != nil {
					recvErr <- err
					return
				}
			}
		}
	}()

	select {
	case err = <-recvErr:
	case err = <-hbErr:
	case <-renewed:
		err = errRenewed
	case <-ctx.Done():
		err = ctx.Err()
	}
	return true, err
}

// AgentClient returns the AgentService client on the current controller's
// mTLS connection.
func (c *Client) AgentClient() (livedumpv1.AgentServiceClient, error) {
	if c.ident.Load() == nil {
		return nil, errors.New("not enrolled yet")
	}
	cc, err := c.conn(c.addr())
	if err != nil {
		return nil, err
	}
	return livedumpv1.NewAgentServiceClient(cc), nil
}

// FetchArtifact downloads the artifact with hex SHA-256 sum and the
// announced size into path, resuming a partial download left in
// path+".part", refuses more bytes than announced, and verifies the hash
// before the file appears at path. The caller validates sum and path.
func (c *Client) FetchArtifact(ctx context.Context, sum string, size int64, path string) error {
	if size <= 0 {
		return fmt.Errorf("fetch artifact %s: size %d: want a positive size", sum, size)
	}
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	// Re-hash what is already there, so a resumed download is verified whole.
	offset, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil {
		return err
	}
	if offset > size {
		f.Close()
		os.Remove(part)
		return fmt.Errorf("fetch artifact %s: partial download larger than the announced %d bytes; starting over next time", sum, size)
	}
	cc, err := c.conn(c.addr())
	if err != nil {
		return err
	}
	st, err := livedumpv1.NewAgentServiceClient(cc).FetchArtifact(ctx, &livedumpv1.FetchArtifactRequest{Sha256: sum, Offset: offset})
	if err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("fetch artifact %s at offset %d: %w", sum, offset, err)
		}
		// The controller announced the size: more is refused, so that a
		// hostile controller cannot fill the disk.
		if offset+int64(len(m.GetChunk())) > size {
			f.Close()
			os.Remove(part)
			return fmt.Errorf("fetch artifact %s: the controller sent more than the announced %d bytes", sum, size)
		}
		if _, err := f.Write(m.GetChunk()); err != nil {
			return err
		}
		h.Write(m.GetChunk())
		offset += int64(len(m.GetChunk()))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		f.Close()
		os.Remove(part) // corrupt: start over next time
		return fmt.Errorf("fetch artifact: content hashes to %s, want %s", got, sum)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, path)
}
