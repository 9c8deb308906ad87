package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/tests/testca"
)

// Fault tests run a controller or an agent as a separate process, the test
// binary re-executed with one of these variables holding the JSON config, so
// that it can be killed with SIGKILL like a real crash.
const (
	envFaultController = "LIVEDUMP_TEST_FAULT_CONTROLLER"
	envFaultAgent      = "LIVEDUMP_TEST_FAULT_AGENT"
)

// procControllerConfig configures a controller process: SQLite in DataDir,
// an external CA so the test can issue operator certificates.
type procControllerConfig struct {
	Listen, MetricsListen, DataDir, CACert, CAKey, DTraceMSI string
}

// runFaultController is the controller process's main.
func runFaultController(js string) int {
	var pc procControllerConfig
	if err := json.Unmarshal([]byte(js), &pc); err != nil {
		fmt.Fprintln(os.Stderr, "controller config:", err)
		return 2
	}
	ctx := context.Background()
	c, err := controller.New(ctx, controller.Config{
		Listen: pc.Listen, MetricsListen: pc.MetricsListen, DataDir: pc.DataDir, CACertFile: pc.CACert, CAKeyFile: pc.CAKey,
		DTraceMSI: pc.DTraceMSI, Profile: fastProfile(), Metrics: prometheus.NewRegistry(), Logger: testLogger(nil),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	return 0
}

// procAgentConfig configures an agent process on a simulated machine.
type procAgentConfig struct {
	Controllers       []string
	CAFile, Token     string
	Labels            map[string]string
	StateDir          string
	Hostname          string
	UploadBytesPerSec int64
}

// runFaultAgent is the agent process's main: the agent under the simulated
// service manager, as cmd/livedump-agent --simulate runs it.
func runFaultAgent(js string) int {
	var pa procAgentConfig
	if err := json.Unmarshal([]byte(js), &pa); err != nil {
		fmt.Fprintln(os.Stderr, "agent config:", err)
		return 2
	}
	h, err := sim.New(sim.Config{StateDir: filepath.Join(pa.StateDir, "host"), Hostname: pa.Hostname})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		return 1
	}
	err = sim.RunService(context.Background(), h, func(ctx context.Context) error {
		a, err := agent.New(agent.Config{
			Controllers: pa.Controllers, CAFile: pa.CAFile, Token: pa.Token, Labels: pa.Labels, StateDir: pa.StateDir,
			MetricsListen: "-", Host: h, Logger: testLogger(nil), BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
			UploadBytesPerSec: pa.UploadBytesPerSec,
		})
		if err != nil {
			return err
		}
		return a.Run(ctx)
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 1
	}
	return 0
}

// process is a re-executed test binary that the test can SIGKILL and
// start again with the same config.
type process struct {
	t    *testing.T
	name string
	env  string
	log  string
	cmd  *exec.Cmd
}

func startProcess(t *testing.T, name, env string, cfg any) *process {
	t.Helper()
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, name: name, env: env + "=" + string(js), log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(p.kill)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(p.log)
			if len(out) > 8000 {
				out = out[len(out)-8000:]
			}
			t.Logf("%s output (tail):\n%s", name, out)
		}
	})
	p.start()
	return p
}

func (p *process) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), p.env)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
}

// kill sends SIGKILL and reaps the process; no-op when not running.
func (p *process) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
		p.cmd = nil
	}
}

// procController is a controller process and what the test needs to talk
// to it.
type procController struct {
	*process
	cfg    procControllerConfig
	ca     *pki.CA
	caFile string
}

// startProcController runs a controller process on a fixed address and
// data directory, so that a restart is the same controller.
func startProcController(t *testing.T, dtraceMSI string) *procController {
	t.Helper()
	pkiDir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(pkiDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := procControllerConfig{
		Listen: freeAddr(t), MetricsListen: freeAddr(t), DataDir: t.TempDir(),
		CACert: filepath.Join(pkiDir, pki.CACertFile), CAKey: filepath.Join(pkiDir, pki.CAKeyFile), DTraceMSI: dtraceMSI,
	}
	pc := &procController{process: startProcess(t, "controller", envFaultController, cfg), cfg: cfg, ca: ca, caFile: cfg.CACert}
	pc.waitReady(t, 30*time.Second)
	return pc
}

// waitReady waits until /readyz answers 200 and returns how long it took.
func (pc *procController) waitReady(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, "controller process ready", func() bool { return readyz(pc.cfg.MetricsListen) == nil })
	return time.Since(start)
}

// readyz returns nil when the HTTP endpoint at addr reports ready.
func readyz(addr string) error {
	cl := &http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + addr + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

// operator returns a FleetService client of the controller process.
func (pc *procController) operator(t *testing.T, role pki.Role) livedumpv1.FleetServiceClient {
	t.Helper()
	return livedumpv1.NewFleetServiceClient(dialCA(t, pc.ca, pc.cfg.Listen, issueFrom(t, pc.ca, pki.OperatorIdentity(role, "test-"+string(role)))))
}

func (pc *procController) token(t *testing.T, uses int, labels map[string]string) string {
	t.Helper()
	r, err := pc.operator(t, pki.RoleAdmin).CreateToken(context.Background(), &livedumpv1.CreateTokenRequest{Uses: int32(uses), Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetSecret()
}

func issueFrom(t *testing.T, ca *pki.CA, id pki.Identity) *tls.Certificate {
	t.Helper()
	return testca.Wrap(ca).Client(t, id)
}

func dialCA(t *testing.T, ca *pki.CA, addr string, cert *tls.Certificate, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	host, _, _ := net.SplitHostPort(addr)
	cfg := testca.Wrap(ca).ClientTLS(host, cert)
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
