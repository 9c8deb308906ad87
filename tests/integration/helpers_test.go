// Package integration runs the real controller and real agents together on
// loopback with real mTLS. It is the only place that imports both sides.
package integration

import (
	"context"
	"crypto/tls"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/tests/harness"
)

// testLogger discards logs unless LIVEDUMP_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger { return harness.Logger(t) }

// testController is a controller running on 127.0.0.1:0.
type testController struct {
	*harness.Controller
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
	c := harness.StartController(t, func(cfg *controller.Config) {
		if o.listen != "" {
			cfg.Listen = o.listen
		}
		cfg.DataDir = o.dataDir
		cfg.Clock = o.clock
		cfg.CertTTL = o.certTTL
		cfg.CACertFile, cfg.CAKeyFile = o.caCertFile, o.caKeyFile
		cfg.Profile = o.profile
		cfg.DTraceMSI = o.dtraceMSI
		cfg.ShutdownGrace = o.shutdownGrace
		cfg.Store = o.store
		cfg.BlobsURL, cfg.BlobsAccessKey, cfg.BlobsSecretKey = o.blobsURL, o.blobsAccess, o.blobsKey
		cfg.Lease = o.lease
		cfg.ReplicaID = o.replicaID
	})
	return &testController{Controller: c, dataDir: c.DataDir, caFile: c.CAFile, stop: c.Stop}
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
	*harness.Agent
	host     *sim.Host
	stateDir string
	stop     func() error
}

func (a *testAgent) current() *agent.Agent { return a.Current() }

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
	// allowRawScripts opts the agent in to captures with their own D
	// script (allow_raw_scripts; off by default, as on a real machine).
	allowRawScripts bool
}

func startAgent(t testing.TB, c *testController, o agentOpts) *testAgent {
	t.Helper()
	var machineClock clockwork.Clock
	if o.clockSkew != 0 {
		// The machine's wall clock is off: the agent and the simulated
		// Windows (boot times, reboot delays) read the same wrong time.
		o.clock = skewedClock{Clock: clockwork.NewRealClock(), skew: o.clockSkew}
		machineClock = o.clock
	}
	var hc *harness.Controller
	if c != nil {
		hc = c.Controller
	}
	a := harness.StartAgent(t, hc, harness.AgentOpts{
		StateDir: o.stateDir, Token: o.token, Labels: o.labels, Hostname: o.hostname,
		EditHost: func(cfg *sim.Config) {
			cfg.BitLocker, cfg.FreeBytes, cfg.Clock = o.bitLocker, o.freeBytes, machineClock
		},
		Edit: func(cfg *agent.Config) {
			if len(o.controllers) > 0 {
				cfg.Controllers = o.controllers
			}
			if o.caFile != "" {
				cfg.CAFile = o.caFile
			}
			cfg.Clock = o.clock
			cfg.KeepDumps = o.keepDumps
			cfg.UploadBytesPerSec = o.bandwidth
			cfg.AllowRawScripts = o.allowRawScripts
		},
	})
	return &testAgent{Agent: a, host: a.Host, stateDir: a.StateDir, stop: a.Stop}
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
	return c.Dial(t, cert)
}

// dialAddr is dial to another address serving a certificate from c's CA.
func dialAddr(t testing.TB, c *testController, addr string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	return c.DialAddr(t, addr, cert)
}

// issue signs a client certificate for id straight from the controller CA.
func issue(t testing.TB, c *testController, id pki.Identity) *tls.Certificate {
	t.Helper()
	return c.Issue(t, id)
}

func fleetClient(t testing.TB, c *testController, role pki.Role) livedumpv1.FleetServiceClient {
	t.Helper()
	return c.Fleet(t, role)
}

// enrollRaw enrolls through the bare RPC and returns the agent's ID and TLS
// identity, for tests that must misbehave as an agent.
func enrollRaw(t testing.TB, c *testController, token string) (string, *tls.Certificate, error) {
	t.Helper()
	return c.EnrollWith(t, token, testInventory("RAW-HOST"))
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
