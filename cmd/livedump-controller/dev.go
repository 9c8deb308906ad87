package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/listen"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/sim"
)

// Dev mode addresses (contract: DESIGN.md "Controller").
const (
	devListen        = "127.0.0.1:7443"
	devMetricsListen = "127.0.0.1:9464"
	devOperator      = "dev-admin"
)

type devOptions struct {
	Agents      int
	MetricsPort int // first agent metrics port; 0 picks free ports
}

// devRole spreads the simulated agents over two groups: the first two are
// VDI machines, the third a kiosk, and beyond that they alternate.
func devRole(i int) string {
	switch {
	case i < 2:
		return "vdi"
	case i%2 == 0:
		return "kiosk"
	default:
		return "vdi"
	}
}

// runDev runs the controller with embedded defaults, writes an admin
// livedumpctl config, and starts simulated agents that enroll with a token
// and connect over real mTLS on loopback. Agent state lives under
// <data-dir>/agents, so a restart brings the same agents back without
// enrolling them again.
func runDev(ctx context.Context, cfg controller.Config, opts devOptions, stdout io.Writer) error {
	if opts.Agents < 0 || opts.Agents > 1000 {
		return usage(fmt.Errorf("--dev-agents %d: must be between 0 and 1000", opts.Agents))
	}
	if cfg.Listen == controller.DefaultListen {
		cfg.Listen = devListen
	}
	if cfg.MetricsListen == controller.DefaultMetricsListen {
		cfg.MetricsListen = devMetricsListen
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	cfg.DataDir = dataDir
	log := cfg.Logger
	// Simulated live dumps are 256 MiB unless the environment says
	// otherwise: big enough that hashing, compression and resumable upload
	// are exercised, small enough for a laptop.
	if os.Getenv("LIVEDUMP_SIM_DUMP_BYTES") == "" {
		os.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "256m")
	}
	if cfg.DTraceMSI == "" {
		// The simulated machines install this stand-in for the DTrace MSI.
		if cfg.DTraceMSI, err = writeSimDTraceMSI(dataDir); err != nil {
			return err
		}
	}

	c, err := controller.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := checkDevAgentPorts(opts); err != nil {
		c.Close()
		return err
	}
	ctlConfig, err := controller.WriteOperatorCredentials(c.CA(), controller.OperatorConfig{
		Role: pki.RoleAdmin, Name: devOperator, Dir: dataDir, Controller: c.Addr(), Store: c.Store(),
	}, time.Now())
	if err != nil {
		c.Close()
		return err
	}
	caFile := filepath.Join(dataDir, pki.CACertFile)

	// Agents that have no identity yet share one token, as an MSI rollout would.
	var missing int
	for i := range opts.Agents {
		if _, err := os.Stat(filepath.Join(devAgentDir(dataDir, i), session.IdentityFile)); errors.Is(err, fs.ErrNotExist) {
			missing++
		}
	}
	var token string
	if missing > 0 {
		if token, err = c.CreateToken(ctx, missing, 10*time.Minute, map[string]string{"site": "lab"}); err != nil {
			c.Close()
			return fmt.Errorf("create dev enrollment token: %w", err)
		}
	}

	var agents []*devAgent
	for i := range opts.Agents {
		a, err := newDevAgent(i, dataDir, c.Addr(), caFile, token, opts, log)
		if err != nil {
			c.Close()
			return fmt.Errorf("dev agent %d: %w", i+1, err)
		}
		agents = append(agents, a)
	}

	fmt.Fprintf(stdout, "livedump dev controller on %s, metrics on http://%s/metrics, %d simulated agents\n", c.Addr(), c.MetricsAddr(), opts.Agents)
	fmt.Fprintf(stdout, "export LIVEDUMPCTL_CONFIG=%s\n", ctlConfig)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(gctx) })
	for i, a := range agents {
		g.Go(func() error {
			// The simulated service manager restarts the agent after each
			// simulated reboot, as Windows would start the service again.
			err := sim.RunService(gctx, a.host, a.run)
			var le *listen.Error
			if errors.As(err, &le) {
				return devAgentPortFailure(opts, i, le)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("dev agent %d: %w", i+1, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// checkDevAgentPorts makes sure, before anything starts, that the
// simulated agents' metrics ports (--dev-agent-metrics-port and the next
// ones) are free, so that a second dev controller on the same machine
// fails at once with the flag to change, not with one agent's error after
// the controller has started.
func checkDevAgentPorts(opts devOptions) error {
	if opts.MetricsPort == 0 || opts.Agents == 0 {
		return nil
	}
	if last := opts.MetricsPort + opts.Agents - 1; opts.MetricsPort < 0 || last > 65535 {
		return usage(fmt.Errorf("--dev-agent-metrics-port %d: the %d simulated agents would use ports %d-%d: want ports within 1-65535 (0 picks free ports)", opts.MetricsPort, opts.Agents, opts.MetricsPort, last))
	}
	for i := range opts.Agents {
		l, err := listen.TCP("metrics_listen", devAgentMetrics(opts, i))
		if err != nil {
			var le *listen.Error
			if errors.As(err, &le) {
				return devAgentPortFailure(opts, i, le)
			}
			return err
		}
		l.Close()
	}
	return nil
}

// devAgentPortFailure explains that simulated agent i could not listen on
// its metrics port, naming the flag that chose it.
func devAgentPortFailure(opts devOptions, i int, le *listen.Error) error {
	msg := fmt.Sprintf("--dev-agent-metrics-port %d: simulated agent %d's metrics address %s (port+%d): %s", opts.MetricsPort, i+1, le.Addr, i, le.Reason())
	if le.Kind() == listen.InUse {
		msg += ": another livedump-controller --dev may be running; pick other ports with --dev-agent-metrics-port (agent i uses port+i; 0 picks free ports), or stop it" + secondDev
	}
	return errors.New(msg)
}

// secondDev ends the message about a dev-mode port in use.
const secondDev = " (a second dev controller needs its own --listen, --metrics-listen, --dev-agent-metrics-port and --data-dir)"

// devAgentMetrics is the metrics address of simulated agent i.
func devAgentMetrics(opts devOptions, i int) string {
	if opts.MetricsPort > 0 {
		return fmt.Sprintf("127.0.0.1:%d", opts.MetricsPort+i)
	}
	return "127.0.0.1:0"
}

func devAgentDir(dataDir string, i int) string {
	return filepath.Join(dataDir, "agents", fmt.Sprintf("agent-%02d", i+1))
}

// devAgent is one simulated machine and the agent service on it.
type devAgent struct {
	host *sim.Host
	run  func(context.Context) error
}

func newDevAgent(i int, dataDir, addr, caFile, token string, opts devOptions, log *slog.Logger) (*devAgent, error) {
	dir := devAgentDir(dataDir, i)
	role := devRole(i)
	// The simulated host keeps its registry, and so its hostname, in dir:
	// the name below only shapes the machine's first boot.
	h, err := sim.New(sim.Config{
		StateDir: filepath.Join(dir, "host"),
		Hostname: fmt.Sprintf("LAB-%s-%02d", strings.ToUpper(role), i+1),
	})
	if err != nil {
		return nil, err
	}
	metrics := devAgentMetrics(opts, i)
	cfg := agent.Config{
		Controllers:   []string{addr},
		CAFile:        caFile,
		Token:         token,
		Labels:        map[string]string{"role": role},
		StateDir:      dir,
		MetricsListen: metrics,
		Host:          h,
		Logger:        log.With("dev_agent", i+1),
		// Dev mode is the sandbox to try everything, raw scripts
		// included; a real agent refuses them unless its administrator
		// sets allow_raw_scripts.
		AllowRawScripts: true,
	}
	// Each boot gets a fresh agent, as a restarted service would.
	run := func(ctx context.Context) error {
		cfg := cfg
		// Like an agent service, each dev agent also logs to a file of
		// its own, whose tail `livedumpctl agents describe` shows.
		if f, path, err := openDevAgentLog(dir); err == nil {
			defer f.Close()
			cfg.LogFile = path
			cfg.Logger = slog.New(slog.NewMultiHandler(cfg.Logger.Handler(), slog.NewTextHandler(f, nil)))
		} else {
			cfg.Logger.Warn("dev agent log file not opened: agents describe shows no log", "err", err)
		}
		a, err := agent.New(cfg)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	}
	return &devAgent{host: h, run: run}, nil
}

// devAgentLogMax bounds a dev agent's log file: a larger one is started
// afresh at the agent's next boot.
const devAgentLogMax = 4 << 20

// openDevAgentLog opens the dev agent's log file in dir for appending.
func openDevAgentLog(dir string) (*os.File, string, error) {
	path := filepath.Join(dir, "agent.log")
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if st, err := os.Stat(path); err == nil && st.Size() > devAgentLogMax {
		flags |= os.O_TRUNC
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	f, err := os.OpenFile(path, flags, 0o600)
	return f, path, err
}

// writeSimDTraceMSI writes the simulated DTrace package the dev machines
// install, so provisioning works end to end without the real MSI. It is
// signed in the DTrace publisher's name, as the real one is, so the agents'
// default installer_publishers accept it.
func writeSimDTraceMSI(dataDir string) (string, error) {
	b, err := sim.BuildSignedMSI(sim.MSIManifest{
		Product: "DTrace",
		Version: "2.0.0",
		Files:   map[string]string{`C:\Program Files\DTrace\dtrace.exe`: "simulated dtrace.exe\n"},
	}, sim.DTraceSigner)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dataDir, "DTrace.amd64.sim.msi")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o600)
}
