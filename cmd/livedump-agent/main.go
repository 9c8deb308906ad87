// Command livedump-agent runs the livedump agent. On Windows it is the
// livedump-agent service; --simulate runs it against the simulated Windows
// host on any OS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/provision"
	"github.com/livedump/livedump/internal/config"
	"github.com/livedump/livedump/internal/listen"
	"github.com/livedump/livedump/internal/logging"
	"github.com/livedump/livedump/internal/selector"
	"github.com/livedump/livedump/internal/version"
)

func main() {
	// The simulated host runs dtrace by re-executing this program, so dev
	// mode needs no second binary (see package sim). Not in the Windows
	// build, which links no simulator.
	runSimulatedDTraceIfAsked()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func defaults() map[string]any {
	return map[string]any{
		"controllers":          []string{},
		"ca_file":              "",
		"token":                "",
		"labels":               "",
		"state_dir":            defaultStateDir(),
		"metrics_listen":       agent.DefaultMetricsListen,
		"simulate":             false,
		"sim_hostname":         "",
		"sim_bitlocker":        false,
		"dtrace_path":          "",
		"dtrace_msi":           "",
		"installer_publishers": provision.DefaultInstallerPublishers,
		"installer_sha256":     []string{},
		"allow_raw_scripts":    false,
		"upload_bytes_per_sec": 0,
		"keep_dumps":           false,
		"expected_dump_bytes":  0,
		"log_level":            "info",
	}
}

var flagKeys = map[string]string{
	"controllers":          "controller",
	"ca_file":              "ca",
	"token":                "token",
	"labels":               "labels",
	"state_dir":            "state-dir",
	"metrics_listen":       "metrics-listen",
	"simulate":             "simulate",
	"sim_hostname":         "sim-hostname",
	"sim_bitlocker":        "sim-bitlocker",
	"dtrace_path":          "dtrace-path",
	"dtrace_msi":           "dtrace-msi",
	"installer_publishers": "installer-publisher",
	"installer_sha256":     "installer-sha256",
	"allow_raw_scripts":    "allow-raw-scripts",
	"upload_bytes_per_sec": "upload-bytes-per-sec",
	"keep_dumps":           "keep-dumps",
	"expected_dump_bytes":  "expected-dump-bytes",
	"log_level":            "log-level",
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRoot(ctx, stdout, stderr)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		if errors.Is(err, errChecksFailed) {
			return 1
		}
		fmt.Fprintf(stderr, "livedump-agent: %v\n", err)
		return 1
	}
	return 0
}

func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "livedump-agent",
		Short: "Run the livedump agent",
		Long: `livedump-agent connects out to the livedump controller over mutual TLS,
enrolls with a token on first start, reports its host and heartbeats.

Configuration precedence: flag > environment (LIVEDUMP_AGENT_<KEY>, e.g.
LIVEDUMP_AGENT_TOKEN) > config file > default. The config file defaults to
` + defaultConfigFile() + ` when it exists.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	// Without a command the agent runs as a console process; "service" (on
	// Windows) runs it under the service control manager.
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	agentFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// A console agent logs to stderr only: it has no log file to
		// send when an operator describes it.
		return runAgent(ctx, cmd, "", func(level string) (*slog.Logger, error) {
			return logging.New(stderr, level)
		})
	}
	cmd.AddCommand(newSelftestCmd(ctx, stdout))
	addPlatformCommands(ctx, cmd)
	return cmd
}

// agentFlags defines the flags of the agent, shared by the console process
// and the service command.
func agentFlags(f *pflag.FlagSet) {
	f.String("config", "", "config file (YAML)")
	f.StringSlice("controller", nil, "controller address HOST:PORT (repeatable or comma-separated; tried in order)")
	f.String("ca", "", "controller CA certificate (PEM)")
	f.String("token", "", "enrollment token (needed only until the agent is enrolled)")
	f.String("labels", "", "labels to ask for at enrollment, K=V,K=V (token labels take precedence)")
	f.String("state-dir", defaultStateDir(), "directory for the agent's identity and state")
	f.String("metrics-listen", agent.DefaultMetricsListen, `HTTP listen address for /metrics ("-" disables)`)
	f.Bool("simulate", false, "run against the simulated Windows host (any OS)")
	f.String("sim-hostname", "", "hostname of the simulated host on its first start")
	f.Bool("sim-bitlocker", false, "the simulated host's C: is BitLocker-protected (first start only)")
	f.String("dtrace-path", "", "dtrace executable to run instead of the machine's (default: Windows' built-in System32\\dtrace.exe, else the DTrace MSI's; with --simulate, the simulated dtrace)")
	f.String("dtrace-msi", "", "pre-staged DTrace installer (MSI) to use when the controller offers none or the same one")
	f.StringSlice("installer-publisher", provision.DefaultInstallerPublishers, "run an installer (the DTrace MSI) only if validly signed by this `PUBLISHER` (signing certificate's CN or O; repeatable)...")
	f.StringSlice("installer-sha256", nil, "...or if its SHA-256 is this `HEX` (repeatable; set at install time by the MSI property INSTALLER_SHA256)")
	f.Bool("allow-raw-scripts", false, "run captures that carry their own D script (destructive actions included) as the controller sends them; off, only captures the agent renders from their spec run (set at install time by the MSI property ALLOW_RAW_SCRIPTS=1)")
	f.Int64("upload-bytes-per-sec", 0, "limit dump uploads to this many raw bytes per second (0: unlimited)")
	f.Bool("keep-dumps", false, "keep dumps on this machine after their verified upload")
	f.Uint64("expected-dump-bytes", 0, "free space a dump capture needs on the dump volume (0: physical memory)")
	f.String("log-level", "info", "debug, info, warn or error")
}

// loadConfig reads the agent's configuration for cmd: flags, environment,
// then the config file (--config, else the default file when it exists).
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	file, _ := cmd.Flags().GetString("config")
	if file == "" {
		if _, err := os.Stat(defaultConfigFile()); err == nil {
			file = defaultConfigFile()
		}
	}
	return config.Load(config.Options{
		File: file, EnvPrefix: "LIVEDUMP_AGENT", Flags: cmd.Flags(), FlagKeys: flagKeys, Defaults: defaults(),
	})
}

// runAgent runs the agent configured by cmd's flags until ctx ends; newLog
// makes its logger at the configured level, and logFile is the file that
// logger writes to ("" for none), whose tail an operator may ask for.
func runAgent(ctx context.Context, cmd *cobra.Command, logFile string, newLog func(level string) (*slog.Logger, error)) error {
	v, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	log, err := newLog(v.GetString("log_level"))
	if err != nil {
		return err
	}
	labels, err := selector.ParseSet(v.GetString("labels"))
	if err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	if n := v.GetInt64("upload_bytes_per_sec"); n < 0 {
		return fmt.Errorf("upload_bytes_per_sec: %d must not be negative", n)
	}
	installers, err := installerPolicy(v)
	if err != nil {
		return err
	}
	allowRaw, err := boolSetting(v, "allow_raw_scripts")
	if err != nil {
		return err
	}
	stateDir := v.Path("state_dir")
	cfg := agent.Config{
		Controllers:   v.GetStringSlice("controllers"),
		CAFile:        v.Path("ca_file"),
		Token:         v.GetString("token"),
		Labels:        labels,
		StateDir:      stateDir,
		MetricsListen: v.GetString("metrics_listen"),
		DTraceMSI:     v.Path("dtrace_msi"),
		Installers:    installers,

		AllowRawScripts: allowRaw,

		UploadBytesPerSec: v.GetInt64("upload_bytes_per_sec"),
		KeepDumps:         v.GetBool("keep_dumps"),
		ExpectedDumpBytes: v.GetUint64("expected_dump_bytes"),
		LogFile:           logFile,
		Logger:            log,
	}
	// dtrace_path replaces the dtrace the machine has (the built-in
	// System32\dtrace.exe or the MSI's) on Windows, and the simulated
	// dtrace with --simulate.
	dtracePath := v.Path("dtrace_path")
	if dtracePath != "" {
		if st, err := os.Stat(dtracePath); err != nil {
			return fmt.Errorf("dtrace_path: %w", err)
		} else if !st.Mode().IsRegular() {
			return fmt.Errorf("dtrace_path: %s is not a file", dtracePath)
		}
		log.Info("dtrace_path set: captures run this dtrace", "dtrace_path", dtracePath)
	}
	if !v.GetBool("simulate") {
		if cfg.Host, err = realHost(dtracePath); err != nil {
			return err
		}
		a, err := agent.New(cfg)
		if err != nil {
			return listenFailure(v, err)
		}
		return a.Run(ctx)
	}
	h, err := simulatedHost(v, stateDir, dtracePath)
	if err != nil {
		return err
	}
	cfg.Host = h
	// The simulated service manager restarts the agent after each
	// simulated reboot, as Windows starts the service again.
	err = runSimulatedService(ctx, h, func(ctx context.Context) error {
		a, err := agent.New(cfg)
		if err != nil {
			return listenFailure(v, err)
		}
		return a.Run(ctx)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// listenFailure rewrites a failure to listen on metrics_listen so it names
// the setting as the user set it (flag, environment variable or config
// file) and says what to do.
func listenFailure(v *config.Config, err error) error {
	var le *listen.Error
	if !errors.As(err, &le) {
		return err
	}
	what := v.Describe(le.Key, le.Addr)
	switch le.Kind() {
	case listen.InUse:
		return fmt.Errorf(`%s: %s: another livedump-agent or another program listens there; pick another port with --metrics-listen ("-" serves none), or stop it`, what, le.Reason())
	case listen.BadAddress:
		return fmt.Errorf("%s: %s: want HOST:PORT, e.g. %s", what, le.Reason(), agent.DefaultMetricsListen)
	}
	return fmt.Errorf("%s: %s", what, le.Reason())
}

// installerPolicy reads installer_publishers and installer_sha256. Hashes
// are accepted in either case (PowerShell's Get-FileHash prints upper
// case) and kept in lower case. An empty installer_publishers allows no
// signer: only installer_sha256 then decides.
func installerPolicy(v *config.Config) (provision.InstallerPolicy, error) {
	p := provision.InstallerPolicy{Publishers: []string{}}
	for _, name := range stringList(v, "installer_publishers") {
		if name = strings.TrimSpace(name); name != "" {
			p.Publishers = append(p.Publishers, name)
		}
	}
	for _, sum := range stringList(v, "installer_sha256") {
		if sum = strings.ToLower(strings.TrimSpace(sum)); sum != "" {
			p.SHA256 = append(p.SHA256, sum)
		}
	}
	return p, p.Validate()
}

// boolSetting reads a yes/no key strictly: a value that is not true or
// false (1 or 0, as the MSI property gives it) is an error naming the key,
// not silently false.
func boolSetting(v *config.Config, key string) (bool, error) {
	switch x := v.Get(key).(type) {
	case bool:
		return x, nil
	case int:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("%s: %v is not true or false", key, v.Get(key))
}

// stringList reads a list key. From the environment it is one string,
// split at commas (not at blanks, as viper would: "Microsoft Corporation"
// is one publisher).
func stringList(v *config.Config, key string) []string {
	if s, ok := v.Get(key).(string); ok {
		return strings.Split(s, ",")
	}
	return v.GetStringSlice(key)
}
