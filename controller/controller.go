// Package controller is the livedump controller: it holds the fleet (agents,
// labels, tokens, audit) and serves AgentService to agents and FleetService
// to operators over mutual TLS.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/tap"

	"github.com/livedump/livedump/controller/api"
	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/retention"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/backend"
	"github.com/livedump/livedump/controller/store/sqlite"
	"github.com/livedump/livedump/internal/listen"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/internal/telemetry"
	"github.com/livedump/livedump/internal/version"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Defaults of the controller's configuration.
const (
	DefaultListen        = "127.0.0.1:7443"
	DefaultMetricsListen = "127.0.0.1:9464"
	// DefaultHeartbeatInterval is how often agents send a heartbeat. A dead
	// agent or a cut link is found by the transport's keepalive (see
	// KeepaliveTime), not by missing heartbeats: these prove that the
	// agent's session is alive and cost every idle agent a message.
	DefaultHeartbeatInterval = 2 * time.Minute
	// heartbeatMisses is how many heartbeat intervals may pass in silence
	// before an agent whose connection is alive is considered gone.
	heartbeatMisses = 3
	// KeepaliveTime and KeepaliveTimeout: the controller pings a
	// connection that has sent nothing for KeepaliveTime and closes it when
	// the answer does not come within KeepaliveTimeout, so a dead agent or
	// a cut link ends its stream (the agent shows offline) within 85 s.
	// Agents need not ping: their own keepalive (agent/session) waits
	// longer than KeepaliveTime, and the controller's pings reset it.
	KeepaliveTime    = 65 * time.Second
	KeepaliveTimeout = 20 * time.Second
	// keepaliveMinTime is how often a client may ping: agents before the
	// controller drove keepalive ping every 30 s.
	keepaliveMinTime = 15 * time.Second
	shutdownGrace    = 10 * time.Second
)

// Config configures a Controller. Zero values take the defaults.
type Config struct {
	Listen        string // gRPC address
	MetricsListen string // HTTP /metrics, /healthz, /readyz; "-" disables
	DataDir       string // PKI and, by default, the SQLite database
	// Store is a store URL: sqlite:///abs/path.db, sqlite://rel/path.db or
	// postgres://… (shared by replicas). Empty means <DataDir>/livedump.db.
	Store string
	// CACertFile and CAKeyFile name an external CA; empty means the CA in
	// <DataDir>/pki, created on first start.
	CACertFile, CAKeyFile string
	// ServerNames are the DNS names and IPs in the server certificate.
	ServerNames       []string
	CertTTL           time.Duration // agent certificate lifetime
	HeartbeatInterval time.Duration
	// Profile is the provisioning profile; nil means profile.Default().
	Profile *profile.Profile
	// EventRate and EventBurst bound the trigger events one agent may send
	// (per second, and at once); the excess is refused. Zero: the defaults
	// of capture.DefaultEventRate and capture.DefaultEventBurst.
	EventRate  float64
	EventBurst int
	// UploadSlots bounds concurrent dump uploads (default 4); more wait.
	UploadSlots int
	// Uploads bounds dump uploads: deadlines, sizes, quotas, and how long
	// partial uploads are kept (zero values: the defaults of package dumps).
	Uploads dumps.Bounds
	// ShutdownGrace is how long streams may finish after a stop request
	// before they are cut (default 10s).
	ShutdownGrace time.Duration
	// DTraceMSI is a DTrace installer to load into the artifact store at
	// start and offer to agents; empty keeps whatever was uploaded.
	DTraceMSI string
	// ReplicaID names this controller among replicas sharing a PostgreSQL
	// store; empty: hostname and a random suffix, new at every start.
	ReplicaID string
	// Advertise is the gRPC address other replicas and operators see.
	Advertise string
	// Lease is how long agents of a silent replica still count as online
	// (default 15s).
	Lease time.Duration
	// BlobsURL is where dumps and artifacts live: empty or file:///dir for
	// a directory (default <DataDir>/blobs), s3://bucket/prefix?endpoint=…
	// for an S3-compatible bucket shared by replicas.
	BlobsURL string
	// Pprof serves the Go profiler under /debug/pprof/ on the metrics
	// listener.
	Pprof bool
	// BlobsAccessKey and BlobsSecretKey are the S3 credentials; empty: the
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables.
	BlobsAccessKey, BlobsSecretKey string
	// Transport bounds connections, streams and Enroll calls of peers
	// that have not proven who they are.
	Transport TransportConfig

	// Retention is what the background sweep deletes (controller/retention).
	// A zero DumpMaxBytes is retention.DefaultMaxBytesPercent of the total
	// dump quota (none when there is no quota).
	Retention retention.Policy

	// RenewGrace is how long an agent's certificate replaced by a renewal
	// is still accepted (never to renew again); 0 means 10 minutes,
	// negative means not at all.
	RenewGrace time.Duration

	Logger  *slog.Logger
	Metrics *prometheus.Registry // nil: a new one
	Clock   clockwork.Clock
}

// Controller is a running controller's state.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	ca       *pki.CA
	server   *serverIdentity
	enroller *enroll.Enroller
	fleet    *fleet.Registry
	grpc     *grpc.Server
	health   *health.Server
	lis      net.Listener
	mlis     net.Listener
	registry *prometheus.Registry
	blobs    blobstore.Blobs
	limiter  *api.EnrollLimiter // nil when Enroll is not rate-limited
	captures *capture.Manager
	dumps    *dumps.Receiver
	cluster  *cluster.Cluster
	sweeper  *retention.Sweeper
}

// New opens the store and CA, issues the server certificate and binds the
// listeners, so Addr is known before Run. Close undoes New if Run is never
// called.
func New(ctx context.Context, cfg Config) (_ *Controller, err error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MetricsListen == "" {
		cfg.MetricsListen = DefaultMetricsListen
	}
	if cfg.DataDir == "" {
		return nil, errors.New("data_dir: required")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = enroll.DefaultCertTTL
	}
	if len(cfg.ServerNames) == 0 {
		cfg.ServerNames = defaultServerNames()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	cfg.Transport = cfg.Transport.withDefaults()
	c := &Controller{cfg: cfg, log: cfg.Logger, registry: cfg.Metrics}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if cfg.Profile == nil {
		p := profile.Default()
		cfg.Profile = &p
	}
	if err := cfg.Profile.Validate(); err != nil {
		return nil, err
	}
	if c.store, err = openStore(ctx, cfg.Store, cfg.DataDir); err != nil {
		return nil, err
	}
	if c.blobs, err = blobstore.Open(ctx, blobstore.Options{
		URL: cfg.BlobsURL, Dir: filepath.Join(cfg.DataDir, "blobs"), AccessKey: cfg.BlobsAccessKey, SecretKey: cfg.BlobsSecretKey,
	}); err != nil {
		return nil, fmt.Errorf("blobs.url: %w", err)
	}
	if cfg.DTraceMSI != "" {
		if _, err := c.AddDTraceMSI(ctx, cfg.DTraceMSI); err != nil {
			return nil, fmt.Errorf("provision.dtrace_msi: %w", err)
		}
	}
	now := cfg.Clock.Now()
	switch {
	case cfg.CACertFile != "" || cfg.CAKeyFile != "":
		if cfg.CACertFile == "" || cfg.CAKeyFile == "" {
			return nil, errors.New("tls.ca_cert_file and tls.ca_key_file: give both or neither")
		}
		c.ca, err = pki.LoadCA(cfg.CACertFile, cfg.CAKeyFile)
	default:
		c.ca, err = pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "pki"), now)
	}
	if err != nil {
		return nil, err
	}
	c.server = &serverIdentity{ca: c.ca, names: cfg.ServerNames, ttl: 90 * 24 * time.Hour}
	if err := c.server.issue(now); err != nil {
		return nil, err
	}

	reg := cfg.Metrics
	telemetry.Register(reg, "controller")
	metrics := api.NewMetrics(reg)
	srvMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(srvMetrics)

	// The order is the dependency order: the cluster needs only the store
	// and the fleet; the enroller and the capture manager use the cluster,
	// which calls neither (the manager reads the cluster's capture notices).
	c.fleet = fleet.NewRegistry(metrics.AgentsConnected)
	streams := fleet.NewStreams()
	c.cluster = cluster.New(cluster.Config{
		Store: c.store, Fleet: c.fleet, Streams: streams, ReplicaID: cfg.ReplicaID, Addr: cfg.Advertise, Lease: cfg.Lease,
		Logger: c.log, Clock: cfg.Clock, Metrics: reg,
	})
	if err := c.cluster.Start(ctx); err != nil {
		return nil, err
	}
	c.enroller = enroll.New(enroll.Config{
		Store: c.store, CA: c.ca, Clock: cfg.Clock, CertTTL: cfg.CertTTL, RenewGrace: cfg.RenewGrace,
		Renewed: c.cluster.Superseded,
	})
	authz := &api.Authorizer{Store: c.store, Logger: c.log, Now: cfg.Clock.Now, Streams: streams}
	c.captures = capture.New(capture.Config{Store: c.store, Fleet: c.fleet, Router: c.cluster, Logger: c.log, Clock: cfg.Clock, Metrics: reg,
		EventRate: cfg.EventRate, EventBurst: cfg.EventBurst})
	if c.dumps, err = dumps.New(dumps.Config{
		Store: c.store, Blobs: c.blobs, Slots: cfg.UploadSlots, Bounds: cfg.Uploads,
		Limits: func(ctx context.Context, id string) (dumps.Limits, error) {
			maxDumps, perSig, err := c.captures.DumpLimits(ctx, id)
			return dumps.Limits{MaxDumps: maxDumps, PerSignature: perSig}, err
		},
		Logger: c.log, Clock: cfg.Clock, Metrics: reg,
	}); err != nil {
		return nil, err
	}

	c.sweeper = retention.New(retention.Config{
		Store: c.store, Blobs: c.blobs, Transfers: c.dumps, Policy: retentionPolicy(cfg), Holder: c.cluster.ID(),
		Logger: c.log, Clock: cfg.Clock, Metrics: reg,
	})

	tm := newTransportMetrics(reg)
	if cfg.Transport.EnrollRate > 0 {
		c.limiter = api.NewEnrollLimiter(api.EnrollLimiterConfig{
			Rate: cfg.Transport.EnrollRate, Burst: cfg.Transport.EnrollBurst, Store: c.store,
			Metric: metrics.EnrollRateLimited, Logger: c.log, Clock: cfg.Clock,
		})
	}
	c.grpc = c.newGRPCServer(tm, srvMetrics, authz)
	livedumpv1.RegisterAgentServiceServer(c.grpc, api.NewAgentServer(api.AgentConfig{
		Store: c.store, Blobs: c.blobs, Captures: c.captures, Dumps: c.dumps, Enroller: c.enroller, Sessions: c.fleet, Presence: c.cluster, CA: c.ca, Metrics: metrics,
		Logger: c.log, Clock: cfg.Clock, HeartbeatInterval: cfg.HeartbeatInterval,
	}))
	livedumpv1.RegisterFleetServiceServer(c.grpc, api.NewFleetServer(api.FleetConfig{
		Store: c.store, Blobs: c.blobs, Profile: *cfg.Profile, Captures: c.captures, Events: c.captures, Dumps: c.dumps, Tokens: c.enroller,
		Local: c.fleet, Peers: c.cluster, Revocations: c.cluster, Logger: c.log, Clock: cfg.Clock,
		Deleter: c.sweeper,
	}))
	c.health = health.NewServer()
	healthpb.RegisterHealthServer(c.grpc, c.health)
	srvMetrics.InitializeMetrics(c.grpc)

	lis, err := listen.TCP("listen", cfg.Listen) // its error names the key
	if err != nil {
		return nil, err
	}
	c.lis = &limitListener{Listener: lis, max: int64(cfg.Transport.MaxConnections), metrics: tm, log: newSparseLog(c.log, cfg.Clock)}
	if cfg.MetricsListen != "-" {
		if c.mlis, err = listen.TCP("metrics_listen", cfg.MetricsListen); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// newGRPCServer builds the one gRPC server: TLS whose handshakes are
// bounded, counted and logged, with connections without a certificate on a
// short leash (see TransportConfig); interceptors in a fixed order (logging,
// metrics, authorization and audit); Enroll rate-limited per source before
// its request is read.
func (c *Controller) newGRPCServer(tm *transportMetrics, srvMetrics *grpcprom.ServerMetrics, authz *api.Authorizer) *grpc.Server {
	t := c.cfg.Transport
	creds := &guardedCreds{
		TransportCredentials: credentials.NewTLS(c.server.tlsConfig()),
		cfg:                  t,
		metrics:              tm,
		log:                  newSparseLog(c.log, c.cfg.Clock),
		conns:                &sync.Map{},
		certConns:            &sync.Map{},
	}
	// Calls without a certificate other than health checks, and Enroll
	// whoever makes it, are rate-limited per source first, so a refused
	// call takes no slot of its connection.
	tapHandle := func(ctx context.Context, info *tap.Info) (context.Context, error) {
		anon := creds.anonymousConnOf(ctx)
		limited := info.FullMethodName == livedumpv1.AgentService_Enroll_FullMethodName ||
			anon != nil && !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.Health/")
		if c.limiter != nil && limited {
			if err := c.limiter.Check(ctx, info.FullMethodName); err != nil {
				return ctx, err
			}
		}
		if anon == nil {
			if info.FullMethodName == livedumpv1.AgentService_Connect_FullMethodName {
				// The handler waits in Recv itself and ends the stream
				// through this when the session ends.
				if e := creds.streamEnderOf(ctx); e != nil {
					ctx = api.WithStreamEnder(ctx, e)
				}
			}
			return ctx, nil
		}
		return creds.admit(ctx, anon, info.FullMethodName)
	}
	return grpc.NewServer(
		grpc.Creds(creds),
		grpc.InTapHandle(tapHandle),
		grpc.StatsHandler(anonymousStreamEnd{}),
		// The TLS handshake and the HTTP/2 preface.
		grpc.ConnectionTimeout(t.HandshakeTimeout),
		grpc.MaxConcurrentStreams(t.MaxStreamsPerConnection),
		grpc.ChainUnaryInterceptor(logUnary(c.log), srvMetrics.UnaryServerInterceptor(), authz.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(logStream(c.log), srvMetrics.StreamServerInterceptor(), authz.StreamInterceptor()),
		// Agents hold one idle stream for weeks: the controller probes
		// dead peers (and keeps NAT and firewall state alive), and lets
		// agents ping no more often than every 15 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		// Tens of thousands of mostly idle connections: no read buffer on
		// top of TLS (which buffers a record itself; grpc's default 32 KiB
		// bufio was half of the controller's heap at 10k agents), and a
		// write buffer taken from a pool only while writing. frameConn
		// relies on the unbuffered read too: the tap handle takes the last
		// HEADERS frame read as the new stream's, which a read-ahead
		// buffer would break.
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(16<<10),
		grpc.SharedWriteBuffer(true),
		// Fixed flow-control windows, which turn off gRPC's BDP estimator:
		// it answered almost every message an agent sent with a PING (and
		// the agent's PING ack), two more TLS records a message, a quarter
		// of the controller's CPU in a 10k fan-out. 4 MiB per stream keeps
		// dump uploads at link speed on long links (the estimator's own
		// ceiling was 16 MiB, reachable by any fast sender).
		grpc.InitialWindowSize(staticStreamWindow),
		grpc.InitialConnWindowSize(staticConnWindow),
	)
}

// The receive windows the controller gives each stream and connection.
const (
	staticStreamWindow = 4 << 20
	staticConnWindow   = 8 << 20
)

func openStore(ctx context.Context, url, dataDir string) (store.Store, error) {
	if url == "" {
		return sqlite.Open(ctx, filepath.Join(dataDir, "livedump.db"))
	}
	s, err := backend.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return s, nil
}

// Addr is the gRPC listen address.
func (c *Controller) Addr() string { return c.lis.Addr().String() }

// MetricsAddr is the HTTP metrics address, or "" when disabled.
func (c *Controller) MetricsAddr() string {
	if c.mlis == nil {
		return ""
	}
	return c.mlis.Addr().String()
}

// Connected is the number of agent streams attached to this replica.
func (c *Controller) Connected() int { return c.fleet.Len() }

// ReplicaID is this controller's name among replicas.
func (c *Controller) ReplicaID() string { return c.cluster.ID() }

// CA is the controller's certificate authority.
func (c *Controller) CA() *pki.CA { return c.ca }

// Store is the controller's store.
func (c *Controller) Store() store.Store { return c.store }

// CreateToken creates an enrollment token in the controller's own name, for
// dev mode and tests; operators go through FleetService.
func (c *Controller) CreateToken(ctx context.Context, uses int, ttl time.Duration, labels map[string]string) (string, error) {
	_, secret, err := c.enroller.CreateToken(ctx, enroll.TokenRequest{Uses: uses, TTL: ttl, Labels: labels, CreatedBy: "controller"})
	return secret, err
}

// AddDTraceMSI loads a DTrace installer into the artifact store and makes
// it the one agents install. It returns the content's SHA-256.
func (c *Controller) AddDTraceMSI(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, size, err := c.blobs.Put(ctx, f, "", api.MaxArtifactSize)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	err = c.store.PutArtifact(ctx, store.Artifact{
		SHA256: sum, Kind: store.ArtifactDTraceMSI, Name: filepath.Base(path), Size: size, Created: c.cfg.Clock.Now().UTC(),
	})
	return sum, err
}

// Run serves until ctx is cancelled, then stops gracefully: agent streams
// are closed first so GracefulStop does not wait on them.
func (c *Controller) Run(ctx context.Context) error {
	defer c.Close()
	g, ctx := errgroup.WithContext(ctx)
	c.log.Info("controller listening", "addr", c.Addr(), "metrics", c.MetricsAddr(), "version", version.Version, "replica_id", c.cluster.ID())
	g.Go(func() error {
		if err := c.grpc.Serve(c.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve grpc: %w", err)
		}
		return nil
	})
	var hs *http.Server
	if c.mlis != nil {
		hs = &http.Server{Handler: c.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := hs.Serve(c.mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve metrics: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error { c.maintain(ctx); return nil })
	if c.limiter != nil {
		g.Go(func() error { return c.limiter.Run(ctx) })
	}
	g.Go(func() error { return c.captures.Run(ctx) })
	g.Go(func() error { return c.dumps.Run(ctx) })
	g.Go(func() error { return c.sweeper.Run(ctx) })
	g.Go(func() error { return c.cluster.Run(ctx) })
	g.Go(func() error {
		<-ctx.Done()
		c.health.Shutdown()
		c.fleet.CloseAll(fleet.ErrShutdown)
		done := make(chan struct{})
		go func() { c.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(c.grace()):
			c.grpc.Stop()
		}
		if hs != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
		}
		return nil
	})
	return g.Wait()
}

// retentionPolicy is cfg.Retention with the dump byte limit resolved
// against the total dump quota.
func retentionPolicy(cfg Config) retention.Policy {
	p := cfg.Retention
	if p.DumpMaxBytes == 0 {
		quota := cfg.Uploads.QuotaTotal
		if quota == 0 {
			quota = dumps.DefaultQuotaTotal
		}
		p.DumpMaxBytes = -1
		if quota > 0 {
			p.DumpMaxBytes = quota / 100 * retention.DefaultMaxBytesPercent
		}
	}
	return p
}

func (c *Controller) grace() time.Duration {
	if c.cfg.ShutdownGrace > 0 {
		return c.cfg.ShutdownGrace
	}
	return shutdownGrace
}

// maintain expires silent agents and rotates the server certificate.
func (c *Controller) maintain(ctx context.Context) {
	t := c.cfg.Clock.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		c.maintainOnce(c.cfg.Clock.Now())
	}
}

// maintainOnce is one pass of maintain at now.
func (c *Controller) maintainOnce(now time.Time) {
	if n := c.fleet.ExpireStale(now, heartbeatMisses*c.cfg.HeartbeatInterval); n > 0 {
		c.log.Info("expired silent agents", "count", n)
	}
	if c.server.due(now) {
		if err := c.server.issue(now); err != nil {
			c.log.Error("rotate server certificate", "err", err)
		} else {
			c.log.Info("server certificate rotated")
		}
	}
}

func (c *Controller) httpHandler() http.Handler {
	h := telemetry.Handler(c.registry, func(ctx context.Context) error {
		if _, err := c.store.ListAudit(ctx, store.AuditFilter{Limit: 1}); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		return nil
	})
	if c.cfg.Pprof {
		h = telemetry.WithPprof(h)
	}
	return h
}

// Close releases listeners and the store. It is safe to call more than once.
func (c *Controller) Close() {
	if c == nil {
		return
	}
	if c.lis != nil {
		c.lis.Close()
	}
	if c.mlis != nil {
		c.mlis.Close()
	}
	if c.store != nil {
		c.store.Close()
		c.store = nil
	}
}
