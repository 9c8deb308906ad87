// Package agent is the livedump agent: it reports its Windows host to the
// controller and, in later stages, provisions it, arms probes and uploads
// dumps. Everything Windows-specific goes through agent/host.
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/livedump/livedump/agent/capture"
	"github.com/livedump/livedump/agent/dumps"
	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/provision"
	"github.com/livedump/livedump/agent/selftest"
	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/internal/listen"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/telemetry"
	"github.com/livedump/livedump/internal/version"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// DefaultMetricsListen is where an agent serves /metrics unless told otherwise.
const DefaultMetricsListen = "127.0.0.1:9465"

// Config configures an Agent.
type Config struct {
	Controllers   []string
	CAFile        string // PEM file with the controller CA
	Token         string
	Labels        map[string]string
	StateDir      string
	MetricsListen string // "-" disables
	Host          host.Host
	// DTraceMSI is a pre-staged DTrace installer on the local disk, used
	// when the controller offers none or offers the same content.
	DTraceMSI string
	// Installers is the local rule for which installers (the DTrace MSI,
	// from the controller or pre-staged) the agent runs: signed by an
	// allowed publisher, or allowed by SHA-256. The zero value allows
	// installers validly signed by the DTrace publisher.
	Installers provision.InstallerPolicy
	// UploadBytesPerSec limits dump uploads (raw bytes/s); 0 = unlimited.
	UploadBytesPerSec int64
	// KeepDumps keeps a dump on the machine after its verified upload.
	KeepDumps bool
	// ExpectedDumpBytes is the free space a dump capture needs; 0 means
	// the machine's physical memory.
	ExpectedDumpBytes uint64
	// AllowRawScripts lets the controller arm captures that carry their
	// own D script (the local setting allow_raw_scripts). Off, the agent
	// runs only the D it renders itself from a capture's spec: a
	// compromised or impersonated controller cannot run arbitrary D, with
	// its destructive actions, as SYSTEM.
	AllowRawScripts bool
	// LogFile is the agent's own log file, whose tail the controller may
	// ask for (agents describe); empty when the agent logs to no file. It
	// is the only file the agent ever sends that way.
	LogFile string

	Logger     *slog.Logger
	Metrics    *prometheus.Registry // nil: a new one
	Clock      clockwork.Clock
	BackoffMin time.Duration
	BackoffMax time.Duration
}

// Agent is a configured agent, ready to Run.
type Agent struct {
	cfg       Config
	session   *session.Client
	prov      *provision.Provisioner
	captures  *capture.Manager
	dumps     *dumps.Manager
	provState prometheus.Gauge
	mlis      net.Listener
	runCtx    context.Context
	// refused counts directives the agent refused, by reason.
	refused *prometheus.CounterVec
	// selftest answers the controller's self-test directives.
	selftest *selftest.Tester
}

// New validates cfg, registers metrics and binds the metrics listener.
func New(cfg Config) (*Agent, error) {
	if cfg.Host == nil {
		return nil, errors.New("agent: Host is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("state_dir: required")
	}
	if cfg.CAFile == "" {
		return nil, errors.New("ca_file: the controller CA certificate is required")
	}
	if cfg.MetricsListen == "" {
		cfg.MetricsListen = DefaultMetricsListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	cas, err := pki.ReadCerts(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}

	reg := cfg.Metrics
	telemetry.Register(reg, "agent")
	clientMetrics := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram())
	reg.MustRegister(clientMetrics)

	h := cfg.Host
	a := &Agent{cfg: cfg, runCtx: context.Background()}
	a.prov, err = provision.New(provision.Config{Host: h, StateDir: cfg.StateDir, Installers: cfg.Installers, Clock: cfg.Clock, Logger: cfg.Logger, Metrics: reg})
	if err != nil {
		return nil, err
	}
	a.selftest, err = selftest.New(selftest.Config{Host: h, Provision: a.prov, ExpectedDumpBytes: cfg.ExpectedDumpBytes, WorkDir: cfg.StateDir, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	a.provState = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "livedump_agent_provisioning_state",
		Help: "Provisioning state as the ProvisionState enum value: 1 not provisioned, 2 reboot required, 3 ready, 4 blocked, 5 failed, 6 rebooting.",
	})
	reg.MustRegister(a.provState)
	a.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livedump_agent_directives_refused_total",
		Help: `Directives the agent refused, by reason: "raw_script" (a capture with its own D script while the local setting allow_raw_scripts is off, also counted for such a capture persisted earlier and not resumed), "other" (any other refusal: an identifier or field that fails validation, no room for a dump, an unsupported kind).`,
	}, []string{"reason"})
	for _, r := range []string{refusedRawScript, refusedOther} {
		a.refused.WithLabelValues(r)
	}
	reg.MustRegister(a.refused)
	a.session, err = session.New(session.Config{
		Controllers: cfg.Controllers,
		CAPool:      pool,
		Token:       cfg.Token,
		Labels:      cfg.Labels,
		StateDir:    cfg.StateDir,
		Inventory: func(context.Context) (*livedumpv1.Inventory, error) {
			return inventory(h)
		},
		Directive:     a.handleDirective,
		OnConnect:     a.stateReport,
		Acked:         func(ids []string) { a.captures.Acked(ids) },
		Refused:       func(r []*livedumpv1.EventRefusal) { a.captures.Refused(r) },
		Logger:        cfg.Logger,
		Metrics:       session.NewMetrics(reg),
		Clock:         cfg.Clock,
		BackoffMin:    cfg.BackoffMin,
		BackoffMax:    cfg.BackoffMax,
		ClientMetrics: clientMetrics,
	})
	if err != nil {
		return nil, err
	}
	a.captures, err = capture.New(capture.Config{
		Host:     h,
		StateDir: cfg.StateDir,
		AgentID:  a.session.AgentID,
		Sender:   a.session,
		SymbolPath: func() string {
			sp, _ := a.prov.SymbolPath()
			return sp
		},
		Logger:            cfg.Logger,
		Clock:             cfg.Clock,
		Metrics:           reg,
		ExpectedDumpBytes: cfg.ExpectedDumpBytes,
		AllowRawScripts:   cfg.AllowRawScripts,
		Refused:           func(reason string) { a.refused.WithLabelValues(reason).Inc() },
		OnDump: func(captureID, eventID string, mode livedumpv1.UploadMode, at time.Time) {
			a.dumps.Expect(captureID, eventID, "", mode, at)
		},
		AwaitDump: func(ctx context.Context, captureID string) (string, error) {
			return a.dumps.Await(ctx, captureID)
		},
	})
	if err != nil {
		return nil, err
	}
	a.dumps, err = dumps.New(dumps.Config{
		Dir:      h.LiveDumpDir,
		Events:   h.LiveDumpEvents,
		StateDir: cfg.StateDir,
		Client:   a.session.AgentClient,
		Report: func(d *livedumpv1.Dump) {
			_ = a.session.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_DumpReport{DumpReport: &livedumpv1.DumpReport{Dump: d}}})
		},
		AgentID: a.session.AgentID,
		NoDump: func(captureID, eventID string, at time.Time, reason string) {
			a.captures.NoteNoDump(captureID, eventID, at, reason)
		},
		BandwidthBytesPerSec: cfg.UploadBytesPerSec,
		KeepAfterUpload:      cfg.KeepDumps,
		Exclusive:            dumps.OpensExclusively,
		Logger:               cfg.Logger,
		Clock:                cfg.Clock,
		Metrics:              reg,
	})
	if err != nil {
		return nil, err
	}
	if cfg.MetricsListen != "-" {
		if a.mlis, err = listen.TCP("metrics_listen", cfg.MetricsListen); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// inventory reads the host the same way on Windows and on the simulated host.
func inventory(h host.Host) (*livedumpv1.Inventory, error) {
	inv, err := host.ReadInventory(h)
	if err != nil {
		return nil, err
	}
	return &livedumpv1.Inventory{
		Hostname:           inv.Hostname,
		OsBuild:            inv.OSBuild,
		OsUbr:              inv.OSUBR,
		OsEdition:          inv.OSEdition,
		OsProductName:      inv.OSProductName,
		OsInstallationType: inv.OSInstallationType,
		Arch:               inv.Arch,
		AgentVersion:       version.Version,
		MemoryBytes:        memory(h),
	}, nil
}

// memory is the host's physical memory, 0 when it cannot be read: the
// controller then bounds dumps by its own configured maximum.
func memory(h host.Host) uint64 {
	m, err := h.PhysicalMemory()
	if err != nil {
		return 0
	}
	return m
}

// ID returns the agent's ID once enrolled, else "".
func (a *Agent) ID() string { return a.session.AgentID() }

// Session exposes the controller link, for tests and diagnostics.
func (a *Agent) Session() *session.Client { return a.session }

// MetricsAddr is the metrics listen address, or "" when disabled.
func (a *Agent) MetricsAddr() string {
	if a.mlis == nil {
		return ""
	}
	return a.mlis.Addr().String()
}

// Run runs the agent until ctx is cancelled or enrollment is refused.
func (a *Agent) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	a.runCtx = ctx
	if a.mlis != nil {
		mux := telemetry.Handler(a.cfg.Metrics, func(context.Context) error {
			if a.session.Identity() == nil {
				return errors.New("not enrolled")
			}
			return nil
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := hs.Serve(a.mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve metrics: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return hs.Shutdown(sctx)
		})
	}
	g.Go(func() error { return a.captures.Run(ctx) })
	g.Go(func() error { return a.dumps.Run(ctx) })
	g.Go(func() error {
		err := a.session.Run(ctx)
		if err != nil {
			return err
		}
		return ctx.Err()
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
