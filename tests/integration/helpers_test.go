// Package integration runs the real controller and real agents together on
// loopback with real mTLS. It is the only place that imports both sides.
package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/host/sim"
	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("LIVEDUMP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testController is a controller running on 127.0.0.1:0.
type testController struct {
	*controller.Controller
	dataDir string
	caFile  string
	stop    func()
}

type controllerOpts struct {
	dataDir string
	clock   clockwork.Clock
	certTTL time.Duration
	listen  string

	caCertFile, caKeyFile string
	profile               *profile.Profile
	dtraceMSI             string
	shutdownGrace         time.Duration

	// Replicas: a shared store and blob store.
	store                 string
	blobsURL              string
	blobsAccess, blobsKey string
	lease                 time.Duration
	replicaID             string
}

// startController runs the real controller with real mTLS on 127.0.0.1:0
// and stops it at cleanup (or earlier through stop).
func startController(t testing.TB, o controllerOpts) *testController {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := controller.New(ctx, controller.Config{
		Listen:        o.listen,
		MetricsListen: "127.0.0.1:0",
		DataDir:       o.dataDir,
		Logger:        testLogger(t),
		Clock:         o.clock,
		CertTTL:       o.certTTL,
		CACertFile:    o.caCertFile,
		Profile:       o.profile,
		DTraceMSI:     o.dtraceMSI,
		ShutdownGrace: o.shutdownGrace,
		CAKeyFile:     o.caKeyFile,
		Registry:      prometheus.NewRegistry(),

		Store:          o.store,
		BlobsURL:       o.blobsURL,
		BlobsAccessKey: o.blobsAccess,
		BlobsSecretKey: o.blobsKey,
		Lease:          o.lease,
		ReplicaID:      o.replicaID,
	})
	if err != nil {
		cancel()
		t.Fatalf("controller.New: %v", err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := pki.WriteCerts(caFile, c.CA().Cert); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller.Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("controller did not stop within 20s")
		}
	}
	t.Cleanup(stop)
	return &testController{Controller: c, dataDir: o.dataDir, caFile: caFile, stop: stop}
}

func (c *testController) token(t testing.TB, uses int, labels map[string]string) string {
	t.Helper()
	tok, err := c.CreateToken(context.Background(), uses, time.Hour, labels)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return tok
}

// testAgent is a real agent on a simulated machine, run by the simulated
// service manager: a simulated reboot restarts it with a fresh Agent.
type testAgent struct {
	host     *sim.Host
	stateDir string
	stop     func() error
	cur      atomic.Pointer[agent.Agent]
}

// current waits for the agent running on the machine now.
func (a *testAgent) current() *agent.Agent {
	for range 500 {
		if c := a.cur.Load(); c != nil {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
	panic("agent never started")
}

func (a *testAgent) ID() string               { return a.current().ID() }
func (a *testAgent) Session() *session.Client { return a.current().Session() }
func (a *testAgent) MetricsAddr() string      { return a.current().MetricsAddr() }

type agentOpts struct {
	stateDir  string
	token     string
	labels    map[string]string
	hostname  string
	clock     clockwork.Clock
	bitLocker bool
	freeBytes uint64
	keepDumps bool
	bandwidth int64
	// controllers overrides the address list (default: the controller's).
	controllers []string
	// caFile overrides the CA file (default: the controller's); with
	// controllers also set, the controller argument may be nil (a
	// controller running as another process).
	caFile string
	// clockSkew offsets the machine's clock (the agent's and the
	// simulated Windows') from real time, as a machine whose wall clock
	// is wrong; it replaces clock when set.
	clockSkew time.Duration
}

func startAgent(t testing.TB, c *testController, o agentOpts) *testAgent {
	t.Helper()
	if o.stateDir == "" {
		o.stateDir = t.TempDir()
	}
	var machineClock clockwork.Clock
	if o.clockSkew != 0 {
		// The machine's wall clock is off: the agent and the simulated
		// Windows (boot times, reboot delays) read the same wrong time.
		o.clock = skewedClock{Clock: clockwork.NewRealClock(), skew: o.clockSkew}
		machineClock = o.clock
	}
	h, err := sim.New(sim.Config{StateDir: filepath.Join(o.stateDir, "host"), Hostname: o.hostname, BitLocker: o.bitLocker, FreeBytes: o.freeBytes, Clock: machineClock})
	if err != nil {
		t.Fatalf("sim.New: %v", err)
	}
	if len(o.controllers) == 0 {
		o.controllers = []string{c.Addr()}
	}
	if o.caFile == "" {
		o.caFile = c.caFile
	}
	cfg := agent.Config{
		Controllers:   o.controllers,
		CAFile:        o.caFile,
		Token:         o.token,
		Labels:        o.labels,
		StateDir:      o.stateDir,
		MetricsListen: "127.0.0.1:0",
		Host:          h,
		Logger:        testLogger(t),
		Clock:         o.clock,
		BackoffMin:    50 * time.Millisecond,
		BackoffMax:    500 * time.Millisecond,

		KeepDumps:         o.keepDumps,
		UploadBytesPerSec: o.bandwidth,
	}
	ta := &testAgent{host: h, stateDir: o.stateDir}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sim.RunService(ctx, h, func(ctx context.Context) error {
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			ta.cur.Store(a)
			return a.Run(ctx)
		})
	}()
	var result error
	stopped := false
	ta.stop = func() error {
		if stopped {
			return result
		}
		stopped = true
		cancel()
		select {
		case result = <-done:
			if errors.Is(result, context.Canceled) {
				result = nil
			}
		case <-time.After(20 * time.Second):
			t.Errorf("agent did not stop within 20s")
		}
		return result
	}
	t.Cleanup(func() { ta.stop() })
	return ta
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// dial returns a gRPC connection to the controller that trusts only its CA
// and presents cert, if any.
func dial(t testing.TB, c *testController, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	return dialAddr(t, c, c.Addr(), cert)
}

// dialAddr is dial to another address serving a certificate from c's CA.
func dialAddr(t testing.TB, c *testController, addr string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: c.CA().Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// issue signs a client certificate for id straight from the controller CA.
func issue(t testing.TB, c *testController, id pki.Identity) *tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.CA().SignClient(csr, id, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func fleetClient(t testing.TB, c *testController, role pki.Role) livedumpv1.FleetServiceClient {
	t.Helper()
	return livedumpv1.NewFleetServiceClient(dial(t, c, issue(t, c, pki.OperatorIdentity(role, "test-"+string(role)))))
}

// enrollRaw enrolls through the bare RPC and returns the agent's ID and TLS
// identity, for tests that must misbehave as an agent.
func enrollRaw(t testing.TB, c *testController, token string) (string, *tls.Certificate, error) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := livedumpv1.NewAgentServiceClient(dial(t, c, nil)).Enroll(context.Background(), &livedumpv1.EnrollRequest{
		Token: token, Csr: csr, Inventory: testInventory("RAW-HOST"),
	})
	if err != nil {
		return "", nil, err
	}
	leaf, err := x509.ParseCertificate(resp.GetCertificateChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAgentId(), &tls.Certificate{Certificate: resp.GetCertificateChain(), PrivateKey: key, Leaf: leaf}, nil
}

func testInventory(hostname string) *livedumpv1.Inventory {
	return &livedumpv1.Inventory{Hostname: hostname, OsBuild: "22631", OsEdition: "Enterprise", Arch: "amd64", AgentVersion: "test"}
}

func listAgents(t testing.TB, fc livedumpv1.FleetServiceClient, sel string) []*livedumpv1.Agent {
	t.Helper()
	resp, err := fc.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{Selector: sel})
	if err != nil {
		t.Fatalf("ListAgents(%q): %v", sel, err)
	}
	return resp.GetAgents()
}

func countOnline(agents []*livedumpv1.Agent) int {
	n := 0
	for _, a := range agents {
		if a.GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE {
			n++
		}
	}
	return n
}
