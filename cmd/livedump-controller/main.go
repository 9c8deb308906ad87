// Command livedump-controller runs the livedump controller. With --dev it
// runs a whole lab on one machine: controller, admin credentials and
// simulated Windows agents.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cast"
	"github.com/spf13/cobra"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/backend"
	"github.com/livedump/livedump/controller/store/sqlite"
	"github.com/livedump/livedump/internal/config"
	"github.com/livedump/livedump/internal/listen"
	"github.com/livedump/livedump/internal/logging"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/internal/version"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
)

func main() {
	// The simulated host runs dtrace by re-executing this program, so dev
	// mode needs no second binary (see sim).
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// defaults are the controller's known configuration keys and their defaults.
var defaults = map[string]any{
	"listen":             controller.DefaultListen,
	"metrics_listen":     controller.DefaultMetricsListen,
	"data_dir":           "/var/lib/livedump",
	"store":              "",
	"tls.ca_cert_file":   "",
	"tls.ca_key_file":    "",
	"tls.server_names":   []string{},
	"cert_ttl":           "720h",
	"renew_grace":        "10m",
	"heartbeat_interval": "2m",
	"log_level":          "info",
	"pprof":              false,

	"replica.id":            "",
	"replica.advertise":     "",
	"replica.lease":         "15s",
	"blobs.url":             "",
	"blobs.access_key":      "",
	"blobs.secret_key_file": "",

	"events.rate":  capture.DefaultEventRate,
	"events.burst": capture.DefaultEventBurst,

	"dumps.upload_slots":    4,
	"dumps.header_timeout":  "30s",
	"dumps.chunk_timeout":   "60s",
	"dumps.max_size":        "1TiB",
	"dumps.quota_per_agent": "64GiB",
	"dumps.quota_total":     "1TiB",
	"dumps.partial_ttl":     "24h",

	"retention.interval":         "10m",
	"retention.dumps.max_age":    "30d",
	"retention.dumps.max_bytes":  "90%", // of dumps.quota_total
	"retention.events.max_age":   "30d",
	"retention.events.max_count": 10_000_000,

	"provision.full_live_reports_max":        10,
	"provision.system_throttle_threshold":    0,
	"provision.component_throttle_threshold": 0,
	"provision.always_keep_memory_dump":      1,
	"provision.live_kernel_reports_path":     `\??\C:\livedumps`,
	"provision.dtrace_bcd":                   true,
	"provision.vbs":                          false,
	"provision.symbol_path":                  profile.DefaultSymbolPath,
	"provision.install_dtrace":               true,
	"provision.allow_bitlocker_suspend":      false,
	"provision.reboot_delay":                 "60s",
	"provision.unsupported_editions":         []string{},
	"provision.dtrace_msi":                   "",

	"transport.max_connections":            0,
	"transport.max_anonymous_connections":  controller.DefaultMaxAnonymousConnections,
	"transport.max_streams_per_connection": controller.DefaultMaxStreamsPerConnection,
	"transport.handshake_timeout":          controller.DefaultHandshakeTimeout.String(),
	"transport.anonymous_idle_timeout":     controller.DefaultAnonymousIdleTimeout.String(),
	"transport.anonymous_max_lifetime":     controller.DefaultAnonymousMaxLifetime.String(),
	"transport.enroll_rate":                controller.DefaultEnrollRate,
	"transport.enroll_burst":               controller.DefaultEnrollBurst,
}

var flagKeys = map[string]string{
	"listen":               "listen",
	"metrics_listen":       "metrics-listen",
	"data_dir":             "data-dir",
	"store":                "store",
	"tls.ca_cert_file":     "ca-cert-file",
	"tls.ca_key_file":      "ca-key-file",
	"tls.server_names":     "server-name",
	"cert_ttl":             "cert-ttl",
	"renew_grace":          "renew-grace",
	"heartbeat_interval":   "heartbeat-interval",
	"log_level":            "log-level",
	"provision.dtrace_msi": "dtrace-msi",
	"replica.id":           "replica-id",
	"replica.advertise":    "advertise",
	"blobs.url":            "blobs",
	"pprof":                "pprof",
}

func addConfigFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("config", "", "config file (YAML); default /etc/livedump/controller.yaml if it exists")
	f.String("listen", controller.DefaultListen, "gRPC listen address")
	f.String("metrics-listen", controller.DefaultMetricsListen, `HTTP listen address for /metrics, /healthz and /readyz ("-" disables)`)
	f.String("data-dir", "/var/lib/livedump", "directory for the database, PKI and dumps")
	f.String("store", "", "store URL: sqlite:///path.db or postgres://… shared by replicas (default sqlite://<data-dir>/livedump.db)")
	f.String("ca-cert-file", "", "external CA certificate (PEM); default: a CA created in <data-dir>/pki")
	f.String("ca-key-file", "", "external CA private key (PEM)")
	f.StringSlice("server-name", nil, "DNS name or IP for the server certificate (repeatable; default localhost, 127.0.0.1, ::1, hostname)")
	f.String("cert-ttl", "720h", "lifetime of agent certificates")
	f.String("renew-grace", "10m", "how long an agent certificate replaced by a renewal is still accepted (0s: not at all; at most 24h)")
	f.String("heartbeat-interval", "2m", "how often agents heartbeat; a connected agent silent for 3 intervals is offline (a dead agent or cut link is found within 85 s by keepalive)")
	f.String("log-level", "info", "debug, info, warn or error")
	f.String("dtrace-msi", "", "DTrace installer (MSI) agents install when provisioning")
	f.String("replica-id", "", "this replica's name among controllers sharing a PostgreSQL store (default hostname-<random>)")
	f.String("advertise", "", "gRPC address of this replica as agents and operators reach it")
	f.Bool("pprof", false, "serve the Go profiler under /debug/pprof/ on the metrics listener")
	f.String("blobs", "", "where dumps and artifacts live: file:///dir or s3://bucket/prefix?endpoint=https://host (default <data-dir>/blobs)")
}

func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	defs := maps.Clone(defaults)
	if dev, _ := cmd.Flags().GetBool("dev"); dev {
		// Simulated machines reboot in seconds; nobody should wait a minute.
		defs["provision.reboot_delay"] = "5s"
	}
	file, _ := cmd.Flags().GetString("config")
	if file == "" {
		if _, err := os.Stat("/etc/livedump/controller.yaml"); err == nil {
			file = "/etc/livedump/controller.yaml"
		}
	}
	return config.Load(config.Options{
		File:      file,
		EnvPrefix: "LIVEDUMP_CONTROLLER",
		Flags:     cmd.Flags(),
		FlagKeys:  flagKeys,
		Defaults:  defs,
	})
}

func controllerConfig(v *config.Config) (controller.Config, error) {
	certTTL, err := v.Duration("cert_ttl")
	if err != nil {
		return controller.Config{}, err
	}
	hb, err := v.Duration("heartbeat_interval")
	if err != nil {
		return controller.Config{}, err
	}
	if certTTL < time.Hour {
		return controller.Config{}, fmt.Errorf("cert_ttl: %s is shorter than the 1h minimum", certTTL)
	}
	grace, err := v.Duration("renew_grace")
	if err != nil {
		return controller.Config{}, err
	}
	if grace < 0 || grace > enroll.MaxRenewGrace {
		return controller.Config{}, fmt.Errorf("renew_grace: %s is outside 0s-%s", grace, enroll.MaxRenewGrace)
	}
	if grace == 0 {
		grace = -1 // none; the controller's zero value means the default
	}
	if hb < time.Second {
		return controller.Config{}, fmt.Errorf("heartbeat_interval: %s is shorter than the 1s minimum", hb)
	}
	prof, err := profileConfig(v)
	if err != nil {
		return controller.Config{}, err
	}
	lease, err := v.Duration("replica.lease")
	if err != nil {
		return controller.Config{}, err
	}
	if lease < 3*time.Second || lease > 10*time.Minute {
		return controller.Config{}, fmt.Errorf("replica.lease: %s is outside 3s-10m", lease)
	}
	eventRate, eventBurst := v.GetFloat64("events.rate"), v.GetInt("events.burst")
	if eventRate <= 0 {
		return controller.Config{}, fmt.Errorf("events.rate: %v: must be above 0 events a second", v.Get("events.rate"))
	}
	if eventBurst < 1 {
		return controller.Config{}, fmt.Errorf("events.burst: %v: must be at least 1", v.Get("events.burst"))
	}
	if id := v.GetString("replica.id"); id != "" && !replicaIDRe.MatchString(id) {
		return controller.Config{}, fmt.Errorf("replica.id: %q: want 1-64 letters, digits, '.', '_' or '-'", id)
	}
	transport, err := transportConfig(v)
	if err != nil {
		return controller.Config{}, err
	}
	secret := ""
	if f := v.Path("blobs.secret_key_file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return controller.Config{}, fmt.Errorf("blobs.secret_key_file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	uploads, slots, err := uploadsConfig(v)
	if err != nil {
		return controller.Config{}, err
	}
	keep, err := retentionConfig(v, uploads.QuotaTotal)
	if err != nil {
		return controller.Config{}, err
	}
	return controller.Config{
		Retention:         keep,
		Uploads:           uploads,
		UploadSlots:       slots,
		Profile:           &prof,
		DTraceMSI:         v.Path("provision.dtrace_msi"),
		Listen:            v.GetString("listen"),
		MetricsListen:     v.GetString("metrics_listen"),
		DataDir:           v.Path("data_dir"),
		Store:             v.GetString("store"),
		CACertFile:        v.Path("tls.ca_cert_file"),
		CAKeyFile:         v.Path("tls.ca_key_file"),
		ServerNames:       v.GetStringSlice("tls.server_names"),
		CertTTL:           certTTL,
		RenewGrace:        grace,
		HeartbeatInterval: hb,
		Pprof:             v.GetBool("pprof"),
		ReplicaID:         v.GetString("replica.id"),
		Advertise:         v.GetString("replica.advertise"),
		Lease:             lease,
		BlobsURL:          v.GetString("blobs.url"),
		BlobsAccessKey:    v.GetString("blobs.access_key"),
		BlobsSecretKey:    secret,
		EventRate:         eventRate,
		EventBurst:        eventBurst,
		Transport:         transport,
	}, nil
}

// transportConfig reads the transport.* keys: the limits on peers that have
// not proven who they are (docs/security.md).
func transportConfig(v *config.Config) (controller.TransportConfig, error) {
	var t controller.TransportConfig
	integer := func(key string, lo, hi int) (int, error) {
		n, err := cast.ToIntE(v.Get(key))
		if err != nil {
			return 0, fmt.Errorf("%s: %v is not an integer", key, v.Get(key))
		}
		if n < lo || n > hi {
			return 0, fmt.Errorf("%s: %d is outside %d-%d", key, n, lo, hi)
		}
		return n, nil
	}
	duration := func(key string, lo, hi time.Duration) (time.Duration, error) {
		d, err := v.Duration(key)
		if err != nil {
			return 0, err
		}
		if d < lo || d > hi {
			return 0, fmt.Errorf("%s: %s is outside %s-%s", key, d, lo, hi)
		}
		return d, nil
	}
	var err error
	if t.MaxConnections, err = integer("transport.max_connections", 0, 10_000_000); err != nil {
		return t, err
	}
	if t.MaxAnonymousConnections, err = integer("transport.max_anonymous_connections", 1, 10_000_000); err != nil {
		return t, err
	}
	streams, err := integer("transport.max_streams_per_connection", 4, 65535)
	if err != nil {
		return t, err
	}
	t.MaxStreamsPerConnection = uint32(streams)
	if t.HandshakeTimeout, err = duration("transport.handshake_timeout", time.Second, 5*time.Minute); err != nil {
		return t, err
	}
	if t.AnonymousIdleTimeout, err = duration("transport.anonymous_idle_timeout", time.Second, 10*time.Minute); err != nil {
		return t, err
	}
	if t.AnonymousMaxLifetime, err = duration("transport.anonymous_max_lifetime", 5*time.Second, time.Hour); err != nil {
		return t, err
	}
	rate, err := cast.ToFloat64E(v.Get("transport.enroll_rate"))
	if err != nil || rate < 0 || rate > 1e6 {
		return t, fmt.Errorf("transport.enroll_rate: %v is not a number of calls per second between 0 (no limit) and 1000000", v.Get("transport.enroll_rate"))
	}
	t.EnrollRate = rate
	if rate == 0 {
		t.EnrollRate = -1 // off; zero in controller.Config means the default
	}
	if t.EnrollBurst, err = integer("transport.enroll_burst", 1, 1_000_000); err != nil {
		return t, err
	}
	return t, nil
}

var replicaIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// uploadsConfig reads the dumps.* keys: what agents may make the
// controller hold. A quota of 0 means none.
func uploadsConfig(v *config.Config) (dumps.Bounds, int, error) {
	var b dumps.Bounds
	slots, err := cast.ToIntE(v.Get("dumps.upload_slots"))
	if err != nil || slots < 1 || slots > 1024 {
		return b, 0, fmt.Errorf("dumps.upload_slots: %v: want 1-1024", v.Get("dumps.upload_slots"))
	}
	for _, d := range []struct {
		key      string
		min, max time.Duration
		to       *time.Duration
	}{
		{"dumps.header_timeout", time.Second, time.Hour, &b.HeaderTimeout},
		{"dumps.chunk_timeout", time.Second, time.Hour, &b.ChunkTimeout},
		{"dumps.partial_ttl", time.Minute, 365 * 24 * time.Hour, &b.PartialTTL},
	} {
		if *d.to, err = v.Duration(d.key); err != nil {
			return b, 0, err
		}
		if *d.to < d.min || *d.to > d.max {
			return b, 0, fmt.Errorf("%s: %s is outside %s-%s", d.key, *d.to, d.min, d.max)
		}
	}
	for _, q := range []struct {
		key  string
		zero bool // 0 allowed: no quota
		to   *int64
	}{
		{"dumps.max_size", false, &b.MaxSize},
		{"dumps.quota_per_agent", true, &b.QuotaPerAgent},
		{"dumps.quota_total", true, &b.QuotaTotal},
	} {
		n, err := parseBytes(v.Get(q.key))
		if err != nil {
			return b, 0, fmt.Errorf("%s: %w", q.key, err)
		}
		switch {
		case n == 0 && q.zero:
			n = -1 // dumps.Bounds: negative is none, zero the default
		case n < 1<<20:
			return b, 0, fmt.Errorf("%s: %d bytes is less than 1MiB", q.key, n)
		case q.key == "dumps.max_size" && n > dumps.MaxDumpSize:
			return b, 0, fmt.Errorf("%s: %d bytes is more than 1TiB", q.key, n)
		}
		*q.to = n
	}
	return b, slots, nil
}

var bytesRe = regexp.MustCompile(`^\s*([0-9]+)\s*(B|KiB|MiB|GiB|TiB)?\s*$`)

// parseBytes reads a byte count: a number, or a number with one of the
// units B, KiB, MiB, GiB, TiB.
func parseBytes(x any) (int64, error) {
	if n, err := cast.ToInt64E(x); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%d: want a size such as 64GiB", n)
		}
		return n, nil
	}
	s := cast.ToString(x)
	m := bytesRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q: want a size such as 64GiB (units B, KiB, MiB, GiB, TiB)", s)
	}
	n, err := cast.ToInt64E(m[1])
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return n << shift, nil
}

// Exit statuses: 0 success, 1 a failure, 2 a usage error (a mistake in the
// command line or the configuration), as livedumpctl's.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(ctx, stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "livedump-controller: %v\n", err)
		if errors.As(err, new(*usageError)) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

// usageError is a mistake in the command line or the configuration: an
// unknown flag, a value out of range, a malformed address.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err: err}
}

// listenFailure rewrites a failure to listen on a configured address so it
// names the setting as the user set it (flag, environment variable or
// config file, and the config key) and says what to do. A malformed
// address is a usage error; a port in use is not (exit 1).
func listenFailure(v *config.Config, err error, dev bool) error {
	var le *listen.Error
	if !errors.As(err, &le) {
		return err
	}
	flag := "--" + flagKeys[le.Key]
	what := v.Describe(le.Key, le.Addr)
	switch le.Kind() {
	case listen.BadAddress:
		return usage(fmt.Errorf("%s: %s: want HOST:PORT, e.g. %s", what, le.Reason(), map[string]string{
			"listen": controller.DefaultListen, "metrics_listen": controller.DefaultMetricsListen,
		}[le.Key]))
	case listen.InUse:
		other := "another process listens there (ss -ltnp shows which)"
		if dev {
			other = "another livedump-controller --dev may be running"
		}
		alt := ""
		if le.Key == "metrics_listen" {
			alt = ` ("-" serves none)`
		}
		msg := fmt.Sprintf("%s: %s: %s; pick another port with %s%s, or stop it", what, le.Reason(), other, flag, alt)
		if dev {
			msg += secondDev
		}
		return errors.New(msg)
	case listen.Denied:
		return fmt.Errorf("%s: %s: ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a higher port with %s", what, le.Reason(), flag)
	case listen.NotAvailable:
		return fmt.Errorf("%s: %s: pick one of its addresses (or 0.0.0.0) with %s", what, le.Reason(), flag)
	}
	return fmt.Errorf("%s: %s", what, le.Reason())
}

func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "livedump-controller",
		Short: "Run the livedump controller",
		Long: `livedump-controller holds the fleet (agents, labels, tokens, audit) and serves
agents and operators over mutual TLS gRPC.

Configuration precedence: flag > environment (LIVEDUMP_CONTROLLER_<KEY>, e.g.
LIVEDUMP_CONTROLLER_LISTEN) > config file > default.

With --dev everything runs on this machine: gRPC on 127.0.0.1:7443, metrics on
127.0.0.1:9464, data in --data-dir (default ./livedump-data), an admin
livedumpctl config in <data-dir>/livedumpctl.yaml, and --dev-agents simulated
Windows agents connected over real mTLS. The dev agents are a sandbox to try
everything: unlike a real agent's default, they run raw D scripts
(allow_raw_scripts on). To run a second dev controller next to one, give it
its own --listen, --metrics-listen, --dev-agent-metrics-port (or 0) and
--data-dir.

Exit status is 0 on success, 1 on a failure (e.g. a port already in use)
and 2 on a usage error (unknown flag, bad configuration value, malformed
address).`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			return usage(cobra.NoArgs(cmd, args))
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	addConfigFlags(root)
	root.Flags().Bool("dev", false, "run a self-contained lab with simulated agents")
	root.Flags().Int("dev-agents", 3, "number of simulated agents in --dev mode")
	root.Flags().Int("dev-agent-metrics-port", 9465, "first metrics port of the simulated agents (agent i uses port+i; 0 picks free ports)")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		dev, _ := cmd.Flags().GetBool("dev")
		if dev && !cmd.Flags().Changed("data-dir") && os.Getenv(config.EnvVar("LIVEDUMP_CONTROLLER", "data_dir")) == "" {
			_ = cmd.Flags().Set("data-dir", "./livedump-data")
		}
		v, err := loadConfig(cmd)
		if err != nil {
			return usage(err)
		}
		cfg, err := controllerConfig(v)
		if err != nil {
			return usage(err)
		}
		log, err := logging.New(stderr, v.GetString("log_level"))
		if err != nil {
			return usage(err)
		}
		cfg.Logger = log
		if dev {
			n, _ := cmd.Flags().GetInt("dev-agents")
			port, _ := cmd.Flags().GetInt("dev-agent-metrics-port")
			return listenFailure(v, runDev(ctx, cfg, devOptions{Agents: n, MetricsPort: port}, stdout), true)
		}
		c, err := controller.New(ctx, cfg)
		if err != nil {
			return listenFailure(v, err, false)
		}
		return c.Run(ctx)
	}
	root.AddCommand(issueOperatorCmd(stdout))
	return root
}

func issueOperatorCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "issue-operator --role ROLE --name NAME --out DIR",
		Short: "Issue an operator certificate and write a livedumpctl config for it",
		Long: `issue-operator signs an operator certificate with the controller CA (run it on
the controller host, as the user that owns the data directory) and writes
NAME.key, NAME.crt, ca.crt and livedumpctl.yaml into DIR.

The certificate lives --ttl (default 30 days, at most 365 days). When the
controller's store is reachable from here (the SQLite database in the data
directory, or the configured store URL) the certificate is recorded in it, so
that "livedumpctl operators list" shows it before its first use; otherwise it
is recorded at first use. Revoke it with "livedumpctl operators revoke".`,
		Args: cobra.NoArgs,
	}
	addConfigFlags(cmd)
	cmd.Flags().String("role", "", "viewer, operator or admin")
	cmd.Flags().String("name", "", "operator name (letters, digits, . _ @ -)")
	cmd.Flags().String("out", "", "output directory")
	cmd.Flags().String("controller", "", "controller address written into livedumpctl.yaml (default: the listen address)")
	cmd.Flags().Duration("ttl", controller.DefaultOperatorCertTTL, fmt.Sprintf("certificate lifetime (1h to %s)", controller.MaxOperatorCertTTL))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		v, err := loadConfig(cmd)
		if err != nil {
			return err
		}
		roleS, _ := cmd.Flags().GetString("role")
		role, err := pki.ParseRole(roleS)
		if err != nil {
			return err
		}
		name, _ := cmd.Flags().GetString("name")
		out, _ := cmd.Flags().GetString("out")
		if out == "" {
			return errors.New("out: required")
		}
		addr, _ := cmd.Flags().GetString("controller")
		if addr == "" {
			addr = v.GetString("listen")
		}
		ttl, _ := cmd.Flags().GetDuration("ttl")
		var ca *pki.CA
		if f := v.Path("tls.ca_cert_file"); f != "" {
			ca, err = pki.LoadCA(f, v.Path("tls.ca_key_file"))
		} else {
			dir := filepath.Join(v.Path("data_dir"), "pki")
			ca, err = pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
		}
		if err != nil {
			return err
		}
		if ttl < time.Hour || ttl > controller.MaxOperatorCertTTL {
			return fmt.Errorf("ttl: %s is outside 1h-%s", ttl, controller.MaxOperatorCertTTL)
		}
		st, err := operatorStore(cmd.Context(), v)
		if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "livedump-controller: not recording the certificate in the store (it is recorded at first use): %v\n", err)
		}
		if st != nil {
			defer st.Close()
		}
		path, err := controller.WriteOperatorCredentials(ca, controller.OperatorConfig{Role: role, Name: name, Dir: out, Controller: addr, TTL: ttl, Store: st}, time.Now())
		if path == "" && err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", path)
		if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "livedump-controller: %v\n", err)
		}
		return nil
	}
	return cmd
}

// operatorStore opens the controller's store to record an issued operator
// certificate: the configured store URL, else the SQLite database in the
// data directory if there is one (nil, nil when there is none: a new empty
// database would help nobody).
func operatorStore(ctx context.Context, v *config.Config) (store.Store, error) {
	if u := v.GetString("store"); u != "" {
		return backend.Open(ctx, u)
	}
	db := filepath.Join(v.Path("data_dir"), "livedump.db")
	if _, err := os.Stat(db); err != nil {
		return nil, nil
	}
	return sqlite.Open(ctx, db)
}

// profileConfig reads the provision.* keys. Numbers and booleans are parsed
// strictly: "ten" is an error naming the key, never a silent zero.
func profileConfig(v *config.Config) (profile.Profile, error) {
	u32 := func(key string) (uint32, error) {
		n, err := cast.ToUint32E(v.Get(key))
		if err != nil {
			return 0, fmt.Errorf("%s: %v is not a non-negative integer", key, v.Get(key))
		}
		return n, nil
	}
	boolean := func(key string) (bool, error) {
		b, err := cast.ToBoolE(v.Get(key))
		if err != nil {
			return false, fmt.Errorf("%s: %v is not true or false", key, v.Get(key))
		}
		return b, nil
	}
	var (
		p   profile.Profile
		err error
	)
	for _, f := range []struct {
		key string
		dst *uint32
	}{
		{"provision.full_live_reports_max", &p.FullLiveReportsMax},
		{"provision.system_throttle_threshold", &p.SystemThrottleThreshold},
		{"provision.component_throttle_threshold", &p.ComponentThrottleThreshold},
		{"provision.always_keep_memory_dump", &p.AlwaysKeepMemoryDump},
	} {
		if *f.dst, err = u32(f.key); err != nil {
			return p, err
		}
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{
		{"provision.dtrace_bcd", &p.DTraceBCD},
		{"provision.vbs", &p.VBS},
		{"provision.install_dtrace", &p.InstallDTrace},
		{"provision.allow_bitlocker_suspend", &p.AllowBitLockerSuspend},
	} {
		if *f.dst, err = boolean(f.key); err != nil {
			return p, err
		}
	}
	p.LiveKernelReportsPath = v.GetString("provision.live_kernel_reports_path")
	p.SymbolPath = v.GetString("provision.symbol_path")
	p.UnsupportedEditions = v.GetStringSlice("provision.unsupported_editions")
	if p.RebootDelay, err = v.Duration("provision.reboot_delay"); err != nil {
		return p, err
	}
	return p, p.Validate()
}
