package controller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/tests/testca"
)

var discard = slog.New(slog.DiscardHandler)

// testConfig is a dev-like configuration in dir: SQLite and blobs under the
// data directory, both listeners on loopback ports of the kernel's choice.
func testConfig(dir string) Config {
	return Config{
		Listen:        "127.0.0.1:0",
		MetricsListen: "127.0.0.1:0",
		DataDir:       dir,
		Logger:        discard,
	}
}

// newController runs New with cfg and closes the controller at cleanup.
func newController(t *testing.T, cfg Config) *Controller {
	t.Helper()
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// fakeClockAt is a fake clock at a fixed, whole-second time, for tests that
// read times back from the store; nothing in them checks certificates
// against the real time.
func fakeClockAt() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC))
}

func TestNewServesAndStops(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Metrics = prometheus.NewRegistry()
	c := newController(t, cfg)

	for _, f := range []string{"livedump.db", filepath.Join("pki", pki.CACertFile), filepath.Join("pki", pki.CAKeyFile)} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}
	if host, _, _ := net.SplitHostPort(c.Addr()); host != "127.0.0.1" {
		t.Errorf("Addr = %s, want 127.0.0.1:port", c.Addr())
	}
	if c.MetricsAddr() == "" || c.MetricsAddr() == c.Addr() {
		t.Errorf("MetricsAddr = %q (Addr %s)", c.MetricsAddr(), c.Addr())
	}
	if c.ReplicaID() == "" {
		t.Error("ReplicaID is empty")
	}
	if c.Connected() != 0 {
		t.Errorf("Connected = %d before any agent", c.Connected())
	}
	families := gatheredNames(t, cfg.Metrics)
	for _, name := range []string{
		"livedump_controller_agents_connected",
		"livedump_controller_build_info",
		"livedump_controller_connections_open",
		"livedump_controller_tls_handshake_failures_total",
		"grpc_server_handled_total", // InitializeMetrics: zeros for every method
	} {
		if !families[name] {
			t.Errorf("metric family %s is not registered", name)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	// The listeners exist since New, so calls made before Run's goroutines
	// are scheduled wait in the accept queue.
	ca := testca.Wrap(c.CA())
	for _, tc := range []struct {
		name string
		cert func() *tls.Certificate
	}{
		{"operator certificate", func() *tls.Certificate { return ca.Operator(t, pki.RoleViewer, "health") }},
		{"no certificate", func() *tls.Certificate { return nil }},
	} {
		t.Run("health with "+tc.name, func(t *testing.T) {
			cc := dial(t, ca, c.Addr(), tc.cert())
			resp, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("health check: %v", err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("status = %s, want SERVING", resp.GetStatus())
			}
		})
	}
	t.Run("health against a foreign CA", func(t *testing.T) {
		// A client that trusts another CA refuses the server's certificate.
		cc := dial(t, testca.New(t, testca.Options{Name: "foreign"}), c.Addr(), nil)
		if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err == nil {
			t.Fatal("health check through a client trusting a foreign CA succeeded")
		}
	})
	t.Run("metrics over HTTP", func(t *testing.T) {
		body, code := get(t, "http://"+c.MetricsAddr()+"/metrics")
		if code != http.StatusOK || !strings.Contains(body, "livedump_controller_agents_connected 0") {
			t.Errorf("GET /metrics: %d\n%.400s", code, body)
		}
		if body, code := get(t, "http://"+c.MetricsAddr()+"/readyz"); code != http.StatusOK {
			t.Errorf("GET /readyz: %d %s", code, body)
		}
	})

	addr, maddr := c.Addr(), c.MetricsAddr()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Run closed the listeners and the store: both ports are free and the
	// data directory opens again, with the same CA.
	for _, a := range []string{addr, maddr} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("port of %s still held after Run: %v", a, err)
		}
		l.Close()
	}
	again := newController(t, testConfig(dir))
	if !again.CA().Cert.Equal(c.CA().Cert) {
		t.Error("a second New on the same data dir made a new CA")
	}
}

func dial(t *testing.T, ca *testca.CA, addr string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS("127.0.0.1", cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func get(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func gatheredNames(t *testing.T, g prometheus.Gatherer) map[string]bool {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

func TestCloseReleases(t *testing.T) {
	dir := t.TempDir()
	c, err := New(context.Background(), testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	addr, maddr, caCert := c.Addr(), c.MetricsAddr(), c.CA().Cert
	c.Close()
	c.Close() // twice is fine
	for _, a := range []string{addr, maddr} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("port of %s still held after Close: %v", a, err)
		}
		l.Close()
	}
	if c.Store() != nil {
		t.Error("Store() is still set after Close")
	}
	again := newController(t, testConfig(dir))
	if !again.CA().Cert.Equal(caCert) {
		t.Error("a second New on the same data dir made a new CA")
	}
	// The store of the second controller works: the first let go of it.
	if _, err := again.CreateToken(context.Background(), 1, time.Hour, nil); err != nil {
		t.Errorf("store after reopening: %v", err)
	}
	var nilController *Controller
	nilController.Close() // what New's callers may do with its nil result
}

func TestNewDefaults(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MetricsListen = "-"
	c := newController(t, cfg)
	if c.MetricsAddr() != "" {
		t.Errorf("MetricsAddr = %q with metrics_listen -", c.MetricsAddr())
	}
	got := c.cfg
	if got.HeartbeatInterval != DefaultHeartbeatInterval {
		t.Errorf("HeartbeatInterval = %s", got.HeartbeatInterval)
	}
	if got.CertTTL != enroll.DefaultCertTTL || c.enroller.CertTTL() != enroll.DefaultCertTTL {
		t.Errorf("CertTTL = %s, enroller %s", got.CertTTL, c.enroller.CertTTL())
	}
	if strings.Join(got.ServerNames, ",") != strings.Join(defaultServerNames(), ",") {
		t.Errorf("ServerNames = %v", got.ServerNames)
	}
	if got.Clock == nil || got.Metrics == nil || got.Logger == nil {
		t.Errorf("Clock, Metrics or Logger left nil: %+v", got)
	}
	if got.Transport != (TransportConfig{}).withDefaults() {
		t.Errorf("Transport = %+v", got.Transport)
	}
	if c.limiter == nil {
		t.Error("Enroll is not rate-limited by default")
	}
	if c.grace() != shutdownGrace {
		t.Errorf("grace = %s", c.grace())
	}
	leaf := c.server.cur.Load().Leaf
	if want := []string{"localhost"}; !containsAll(leaf.DNSNames, want) || len(leaf.IPAddresses) < 2 {
		t.Errorf("server certificate names %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if err := leaf.CheckSignatureFrom(c.CA().Cert); err != nil {
		t.Errorf("server certificate is not signed by the CA: %v", err)
	}
}

func containsAll(have, want []string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

func TestNewTransportLimits(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Transport = TransportConfig{MaxConnections: 7, EnrollRate: -1}
	c := newController(t, cfg)
	if l := c.lis.(*limitListener); l.max != 7 {
		t.Errorf("connection cap = %d, want 7", l.max)
	}
	if c.limiter != nil {
		t.Error("Enroll is rate-limited with a negative enroll rate")
	}
}

func TestNewRenewGrace(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{
		{0, enroll.DefaultRenewGrace},
		{-time.Second, 0},
		{5 * time.Minute, 5 * time.Minute},
		{enroll.MaxRenewGrace + time.Hour, enroll.MaxRenewGrace},
	} {
		cfg := testConfig(t.TempDir())
		cfg.MetricsListen = "-"
		cfg.RenewGrace = tc.in
		c := newController(t, cfg)
		if got := c.enroller.RenewGrace(); got != tc.want {
			t.Errorf("RenewGrace %s: enroller grace %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestNewExternalCA(t *testing.T) {
	ca := testca.New(t, testca.Options{Name: "external"})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := pki.WriteCerts(certFile, ca.Cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(keyFile, ca.Key); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(filepath.Join(dir, "data"))
	cfg.CACertFile, cfg.CAKeyFile = certFile, keyFile
	c := newController(t, cfg)
	if !c.CA().Cert.Equal(ca.Cert) {
		t.Error("the controller does not use the external CA")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "pki")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a CA was created in the data dir as well: %v", err)
	}
}

func TestNewConfigErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	notCA := testca.New(t, testca.Options{}).Server(t)
	notCAFile := filepath.Join(t.TempDir(), "server.crt")
	if err := pki.WriteCerts(notCAFile, notCA.Leaf); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // the start of the error: the field it names
	}{
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data_dir: required"},
		{"data dir under a file", func(c *Config) { c.DataDir = filepath.Join(file, "data") }, "data_dir: "},
		{"invalid profile", func(c *Config) { c.Profile = &profile.Profile{} }, "profile.full_live_reports_max: "},
		{"store scheme", func(c *Config) { c.Store = "mysql://db/livedump" }, "store: "},
		{"store without scheme", func(c *Config) { c.Store = "/var/lib/livedump.db" }, "store: "},
		{"sqlite without path", func(c *Config) { c.Store = "sqlite://" }, "store: "},
		{"blobs scheme", func(c *Config) { c.BlobsURL = "ftp://host/dumps" }, "blobs.url: "},
		{"dtrace msi missing", func(c *Config) { c.DTraceMSI = filepath.Join(c.DataDir, "none.msi") }, "provision.dtrace_msi: "},
		{"ca cert without key", func(c *Config) { c.CACertFile = notCAFile }, "tls.ca_cert_file and tls.ca_key_file: "},
		{"ca key without cert", func(c *Config) { c.CAKeyFile = notCAFile }, "tls.ca_cert_file and tls.ca_key_file: "},
		{"ca files missing", func(c *Config) { c.CACertFile, c.CAKeyFile = file+".crt", file+".key" }, "load CA certificate: "},
		{"listen address", func(c *Config) { c.Listen = "127.0.0.1:http-alt-nope" }, "listen: "},
		{"listen port taken", func(c *Config) { c.Listen = busy.Addr().String() }, "listen: "},
		{"metrics port taken", func(c *Config) { c.MetricsListen = busy.Addr().String() }, "metrics_listen: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			cfg.MetricsListen = "-"
			tc.edit(&cfg)
			c, err := New(context.Background(), cfg)
			if err == nil {
				c.Close()
				t.Fatalf("New succeeded, want an error starting %q", tc.want)
			}
			if c != nil {
				t.Error("New returned a controller with its error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q, want it to start %q", err, tc.want)
			}
		})
	}
}

func TestNewFailureReleasesStore(t *testing.T) {
	// The metrics listener is the last thing New makes: by then the store
	// and the gRPC listener are open, and a failure must release both.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MetricsListen = busy.Addr().String()
	if _, err := New(context.Background(), cfg); err == nil {
		t.Fatal("New succeeded on a busy metrics port")
	}
	c := newController(t, testConfig(dir))
	if _, err := c.CreateToken(context.Background(), 1, time.Hour, nil); err != nil {
		t.Errorf("store after a failed New: %v", err)
	}
}

func TestOpenStore(t *testing.T) {
	ctx := context.Background()
	t.Run("default", func(t *testing.T) {
		dir := t.TempDir()
		s, err := openStore(ctx, "", dir)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := os.Stat(filepath.Join(dir, "livedump.db")); err != nil {
			t.Errorf("default store: %v", err)
		}
	})
	t.Run("absolute sqlite URL", func(t *testing.T) {
		dir, elsewhere := t.TempDir(), t.TempDir()
		path := filepath.Join(elsewhere, "abs.db")
		s, err := openStore(ctx, "sqlite://"+filepath.ToSlash(path), dir)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("absolute store: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "livedump.db")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the default store was made too: %v", err)
		}
	})
	t.Run("relative sqlite URL", func(t *testing.T) {
		// A relative path is the operator's, relative to the working
		// directory, not to the data directory (see store/backend).
		dir, wd := t.TempDir(), t.TempDir()
		t.Chdir(wd)
		s, err := openStore(ctx, "sqlite://rel.db", dir)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := os.Stat(filepath.Join(wd, "rel.db")); err != nil {
			t.Errorf("relative store: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "rel.db")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("relative store in the data dir: %v", err)
		}
	})
	t.Run("postgres URL", func(t *testing.T) {
		// An unparsable PostgreSQL URL fails before any connection, and
		// the error does not quote the password.
		_, err := openStore(ctx, "postgres://livedump:s3cret@db.invalid:notaport/livedump", t.TempDir())
		if err == nil {
			t.Fatal("openStore succeeded")
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "store: open postgres store") || strings.Contains(msg, "s3cret") {
			t.Errorf("error %q", msg)
		}
	})
	t.Run("unsupported URL", func(t *testing.T) {
		for _, url := range []string{"mysql://db/x", "livedump.db", "sqlite://x.db?mode=memory"} {
			if s, err := openStore(ctx, url, t.TempDir()); err == nil {
				s.Close()
				t.Errorf("openStore(%q) succeeded", url)
			} else if !strings.HasPrefix(err.Error(), "store: ") {
				t.Errorf("openStore(%q): %q does not name the store", url, err)
			}
		}
	})
}

func TestCreateToken(t *testing.T) {
	clock := fakeClockAt()
	cfg := testConfig(t.TempDir())
	cfg.MetricsListen = "-"
	cfg.Clock = clock
	c := newController(t, cfg)
	ctx := context.Background()

	labels := map[string]string{"team": "kernel"}
	secret, err := c.CreateToken(ctx, 3, 2*time.Hour, labels)
	if err != nil {
		t.Fatal(err)
	}
	labels["team"] = "changed after the call"
	id, sec, err := enroll.ParseToken(secret)
	if err != nil {
		t.Fatalf("CreateToken returned %q: %v", secret, err)
	}
	tokens, err := c.Store().ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 {
		t.Fatalf("%d tokens stored, want 1", len(tokens))
	}
	got := tokens[0]
	now := clock.Now().UTC()
	if got.ID != id || !bytes.Equal(got.SecretHash, enroll.HashSecret(sec)) || got.Uses != 3 || got.UsesLeft != 3 ||
		got.Labels["team"] != "kernel" || len(got.Labels) != 1 || got.CreatedBy != "controller" || got.Revoked ||
		!got.Created.Equal(now) || !got.Expires.Equal(now.Add(2*time.Hour)) {
		t.Errorf("stored token %+v", got)
	}

	for _, tc := range []struct {
		name   string
		uses   int
		ttl    time.Duration
		labels map[string]string
		field  string
	}{
		{"negative uses", -1, time.Hour, nil, "uses"},
		{"too many uses", enroll.MaxTokenUses + 1, time.Hour, nil, "uses"},
		{"ttl too short", 1, enroll.MinTokenTTL - time.Second, nil, "ttl"},
		{"ttl too long", 1, enroll.MaxTokenTTL + time.Hour, nil, "ttl"},
		{"bad label key", 1, time.Hour, map[string]string{"bad key!": "x"}, "labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret, err := c.CreateToken(ctx, tc.uses, tc.ttl, tc.labels)
			var iae *enroll.InvalidArgumentError
			if !errors.As(err, &iae) || iae.Field != tc.field {
				t.Fatalf("CreateToken = %q, %v; want an invalid %s", secret, err, tc.field)
			}
			if secret != "" {
				t.Errorf("a refused request returned a token %q", secret)
			}
		})
	}
	if tokens, err := c.Store().ListTokens(ctx); err != nil || len(tokens) != 1 {
		t.Errorf("after refusals: %d tokens, %v", len(tokens), err)
	}
}

func TestCreateTokenDefaults(t *testing.T) {
	clock := fakeClockAt()
	cfg := testConfig(t.TempDir())
	cfg.MetricsListen = "-"
	cfg.Clock = clock
	c := newController(t, cfg)
	if _, err := c.CreateToken(context.Background(), 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	tokens, err := c.Store().ListTokens(context.Background())
	if err != nil || len(tokens) != 1 {
		t.Fatalf("%d tokens, %v", len(tokens), err)
	}
	if got := tokens[0]; got.Uses != 1 || !got.Expires.Equal(clock.Now().Add(enroll.DefaultTokenTTL)) || got.Labels == nil {
		t.Errorf("token with defaults %+v", got)
	}
}

func TestAddDTraceMSI(t *testing.T) {
	clock := fakeClockAt()
	dir := t.TempDir()
	msi := filepath.Join(t.TempDir(), "dtrace-1.2.msi")
	content := []byte("not really an installer")
	if err := os.WriteFile(msi, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	want := hex.EncodeToString(sum[:])

	t.Run("at New", func(t *testing.T) {
		cfg := testConfig(dir)
		cfg.MetricsListen = "-"
		cfg.Clock = clock
		cfg.DTraceMSI = msi
		c := newController(t, cfg)
		a, err := c.Store().LatestArtifact(context.Background(), store.ArtifactDTraceMSI)
		if err != nil {
			t.Fatal(err)
		}
		if a.SHA256 != want || a.Name != "dtrace-1.2.msi" || a.Size != int64(len(content)) || !a.Created.Equal(clock.Now()) {
			t.Errorf("artifact %+v", a)
		}
		c.Close()
	})

	cfg := testConfig(dir)
	cfg.MetricsListen = "-"
	cfg.Clock = clock
	c := newController(t, cfg)
	ctx := context.Background()

	t.Run("a newer installer", func(t *testing.T) {
		clock.Advance(time.Hour)
		newer := filepath.Join(t.TempDir(), "dtrace-1.3.msi")
		if err := os.WriteFile(newer, []byte("a newer installer"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := c.AddDTraceMSI(ctx, newer)
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.Store().LatestArtifact(ctx, store.ArtifactDTraceMSI)
		if err != nil || a.SHA256 != got || a.Name != "dtrace-1.3.msi" {
			t.Fatalf("latest artifact %+v, %v; want %s", a, err, got)
		}
		r, err := c.blobs.Open(ctx, got)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if b, _ := io.ReadAll(r); string(b) != "a newer installer" {
			t.Errorf("blob holds %q", b)
		}
		if old, err := c.Store().GetArtifact(ctx, want); err != nil || old.Name != "dtrace-1.2.msi" {
			t.Errorf("the older installer: %+v, %v", old, err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		before, _ := c.Store().LatestArtifact(ctx, store.ArtifactDTraceMSI)
		if _, err := c.AddDTraceMSI(ctx, filepath.Join(t.TempDir(), "none.msi")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("AddDTraceMSI of a missing file: %v", err)
		}
		after, _ := c.Store().LatestArtifact(ctx, store.ArtifactDTraceMSI)
		if after.SHA256 != before.SHA256 {
			t.Errorf("the offered installer changed to %+v", after)
		}
	})
	t.Run("a directory", func(t *testing.T) {
		if _, err := c.AddDTraceMSI(ctx, t.TempDir()); err == nil {
			t.Error("AddDTraceMSI of a directory succeeded")
		}
	})
}
