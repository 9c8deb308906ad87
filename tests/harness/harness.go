// Package harness runs the real controller and real agents on simulated
// Windows machines on loopback with real mTLS, for the test suites under
// tests/. Only tests import it; no release binary links it.
package harness

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/tests/testca"
)

// Logger discards logs unless LIVEDUMP_TEST_LOG is set.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("LIVEDUMP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Controller is a real controller running on 127.0.0.1:0.
type Controller struct {
	*controller.Controller
	DataDir string
	CAFile  string
	Metrics *prometheus.Registry
	stop    func()
}

// StartController runs the real controller with real mTLS on 127.0.0.1:0
// and stops it at cleanup. edit, when given, adjusts the configuration
// before the controller is built.
func StartController(t testing.TB, edit func(*controller.Config)) *Controller {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := controller.Config{
		Listen:        "127.0.0.1:0",
		MetricsListen: "127.0.0.1:0",
		Logger:        Logger(t),
		Metrics:       reg,
	}
	if edit != nil {
		edit(&cfg)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := controller.New(ctx, cfg)
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
	return &Controller{Controller: c, DataDir: cfg.DataDir, CAFile: caFile, Metrics: reg, stop: stop}
}

// Stop stops the controller now rather than at cleanup.
func (c *Controller) Stop() { c.stop() }

// Token creates an enrollment token.
func (c *Controller) Token(t testing.TB, uses int, labels map[string]string) string {
	t.Helper()
	tok, err := c.CreateToken(context.Background(), uses, time.Hour, labels)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return tok
}

// Dial returns a connection that trusts only the controller's CA and
// presents cert, if any.
func (c *Controller) Dial(t testing.TB, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	return c.DialAddr(t, c.Addr(), cert)
}

// DialAddr is Dial to another address serving a certificate from c's CA
// (another replica, or a proxy in front of the controller).
func (c *Controller) DialAddr(t testing.TB, addr string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := testca.Wrap(c.CA()).ClientTLS("127.0.0.1", cert)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Issue signs a client certificate for id straight from the controller CA,
// valid for an hour.
func (c *Controller) Issue(t testing.TB, id pki.Identity) *tls.Certificate {
	t.Helper()
	return testca.Wrap(c.CA()).Client(t, id)
}

// Fleet returns a FleetService client holding an operator certificate of
// role, named test-<role>.
func (c *Controller) Fleet(t testing.TB, role pki.Role) livedumpv1.FleetServiceClient {
	t.Helper()
	return livedumpv1.NewFleetServiceClient(c.Dial(t, c.Issue(t, pki.OperatorIdentity(role, "test-"+string(role)))))
}

// RawAgent is an enrolled agent identity with no agent behind it: the
// attacker who stole an agent's key and speaks the protocol by hand.
type RawAgent struct {
	ID   string
	Cert *tls.Certificate
	Conn *grpc.ClientConn
}

// Client is the AgentService client of the stolen identity.
func (r *RawAgent) Client() livedumpv1.AgentServiceClient {
	return livedumpv1.NewAgentServiceClient(r.Conn)
}

// EnrollRaw enrolls hostname through the bare RPC with a fresh token.
func (c *Controller) EnrollRaw(t testing.TB, hostname string, labels map[string]string) *RawAgent {
	t.Helper()
	id, cert, err := c.EnrollWith(t, c.Token(t, 1, labels), Inventory(hostname))
	if err != nil {
		t.Fatalf("enroll %s: %v", hostname, err)
	}
	return &RawAgent{ID: id, Cert: cert, Conn: c.Dial(t, cert)}
}

// EnrollWith enrolls through the bare RPC with token and inv, and returns
// the agent's ID and TLS identity, or the RPC's error.
func (c *Controller) EnrollWith(t testing.TB, token string, inv *livedumpv1.Inventory) (string, *tls.Certificate, error) {
	t.Helper()
	key, csr := KeyCSR(t)
	resp, err := livedumpv1.NewAgentServiceClient(c.Dial(t, nil)).Enroll(context.Background(), &livedumpv1.EnrollRequest{
		Token: token, Csr: csr, Inventory: inv,
	})
	if err != nil {
		return "", nil, err
	}
	return resp.GetAgentId(), TLSCert(t, resp.GetCertificateChain(), key), nil
}

// KeyCSR makes a fresh key and a certificate request for it, as an agent
// does before Enroll and Renew.
func KeyCSR(t testing.TB) (crypto.Signer, []byte) {
	t.Helper()
	return testca.KeyCSR(t)
}

// TLSCert is the TLS identity made of a returned chain and its key.
func TLSCert(t testing.TB, chain [][]byte, key crypto.Signer) *tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

// Inventory is a plausible Windows 11 inventory.
func Inventory(hostname string) *livedumpv1.Inventory {
	return &livedumpv1.Inventory{Hostname: hostname, OsBuild: "22631", OsEdition: "Enterprise", Arch: "amd64", AgentVersion: "test"}
}

// Agent is a real agent on a simulated machine, run by the simulated
// service manager: a simulated reboot restarts it with a fresh agent.Agent.
type Agent struct {
	Host     *sim.Host
	StateDir string
	stop     func() error
	cur      atomic.Pointer[agent.Agent]
}

// Current waits for the agent running on the machine now.
func (a *Agent) Current() *agent.Agent {
	for range 500 {
		if c := a.cur.Load(); c != nil {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
	panic("agent never started")
}

// ID is the agent's enrolled ID.
func (a *Agent) ID() string { return a.Current().ID() }

// Session is the agent's connection to the controller.
func (a *Agent) Session() *session.Client { return a.Current().Session() }

// MetricsAddr is the agent's metrics address.
func (a *Agent) MetricsAddr() string { return a.Current().MetricsAddr() }

// Stop stops the agent now rather than at cleanup.
func (a *Agent) Stop() error { return a.stop() }

// AgentOpts describes a simulated machine and its agent.
type AgentOpts struct {
	// StateDir is the agent's state directory (default: a new temporary
	// one); the simulated machine lives in its host/ subdirectory.
	StateDir string
	Token    string
	Labels   map[string]string
	Hostname string
	// Edit adjusts the agent's configuration before it starts.
	Edit func(*agent.Config)
	// EditHost adjusts the simulated machine's configuration.
	EditHost func(*sim.Config)
}

// StartAgent runs a real agent against c on a fresh simulated machine. c may
// be nil when Edit names the controllers and the CA file.
func StartAgent(t testing.TB, c *Controller, o AgentOpts) *Agent {
	t.Helper()
	stateDir := o.StateDir
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	hc := sim.Config{StateDir: filepath.Join(stateDir, "host"), Hostname: o.Hostname}
	if o.EditHost != nil {
		o.EditHost(&hc)
	}
	h, err := sim.New(hc)
	if err != nil {
		t.Fatalf("sim.New: %v", err)
	}
	cfg := agent.Config{
		Token:         o.Token,
		Labels:        o.Labels,
		StateDir:      stateDir,
		MetricsListen: "127.0.0.1:0",
		Host:          h,
		Logger:        Logger(t),
		BackoffMin:    50 * time.Millisecond,
		BackoffMax:    500 * time.Millisecond,
	}
	if c != nil {
		cfg.Controllers, cfg.CAFile = []string{c.Addr()}, c.CAFile
	}
	if o.Edit != nil {
		o.Edit(&cfg)
	}
	ta := &Agent{Host: h, StateDir: stateDir}
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

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
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

// WantCode fails unless err has code and its message contains substr.
func WantCode(t testing.TB, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if substr != "" && !strings.Contains(status.Convert(err).Message(), substr) {
		t.Fatalf("error %q does not mention %q", status.Convert(err).Message(), substr)
	}
}

// Clock is the real clock, for tests that pass a clock explicitly.
var Clock clockwork.Clock = clockwork.NewRealClock()
