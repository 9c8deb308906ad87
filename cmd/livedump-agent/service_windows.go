//go:build windows

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
	"runtime/debug"
	"strings"
	"time"
	"unsafe"

	"github.com/spf13/cobra"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/livedump/livedump/internal/logging"
	"github.com/livedump/livedump/internal/version"
)

const (
	// serviceName is the service, and the Event Log source, the MSI installs.
	serviceName = "livedump-agent"
	// stopTimeout bounds a Stop or Shutdown: the agent gets this long to
	// end its session and flush its spool, then the service reports
	// stopped anyway and the process exits.
	stopTimeout = 20 * time.Second
	// exitAgentFailed is the service-specific exit code when the agent
	// ends on its own with an error (config, enrollment refused): the
	// SCM counts it as a failure and applies the recovery actions.
	exitAgentFailed = 1
)

// logDir is where the service writes its log files.
func logDir() string { return filepath.Join(defaultStateDir(), "logs") }

// addPlatformCommands adds the Windows service mode: "service" is what the
// service's ImagePath runs (svc.IsWindowsService is not relied on, since it
// is wrong under Wine), and the hidden "remove-data" is what the MSI runs
// on an uninstall with REMOVE_DATA=1.
func addPlatformCommands(ctx context.Context, root *cobra.Command) {
	sc := &cobra.Command{
		Use:   "service",
		Short: "Run as the Windows service " + serviceName + " (the service control manager runs this)",
		Long: `Run the agent under the Windows service control manager: Stop and Shutdown
end it within ` + stopTimeout.String() + `; logs go to the Application event log (source ` + serviceName + `)
and to ` + filepath.Join(logDir(), "livedump-agent.log") + ` (rotated at 10 MiB, 3 kept).
On start it moves the settings the MSI left in HKLM\` + settingsKey + `
into the config file. Flags as for the console agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runService(ctx, cmd) },
	}
	agentFlags(sc.Flags())
	root.AddCommand(sc)

	root.AddCommand(&cobra.Command{
		Use:    "remove-data",
		Short:  "Delete " + defaultStateDir() + " (config, identity, state, logs); run by the MSI on uninstall with REMOVE_DATA=1",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			dir := defaultStateDir()
			if !strings.EqualFold(filepath.Base(dir), "livedump") {
				return fmt.Errorf("refusing to delete %s: not a livedump data directory", dir)
			}
			return removeTree(dir)
		},
	})
}

// removeTree deletes dir and everything in it, deepest first, with plain
// deletes (os.RemoveAll's handle-relative deletes fail under Wine 8). A
// missing dir is not an error.
func removeTree(dir string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := os.Remove(paths[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// runService sets up the service's logging, applies the installer's
// settings and the service configuration the MSI cannot express, then
// runs the agent under the service control manager until it stops.
func runService(ctx context.Context, cmd *cobra.Command) error {
	elog, elogErr := eventlog.Open(serviceName)
	if elogErr == nil {
		defer elog.Close()
	}
	dirErr := protectDataDir(defaultStateDir())
	logFile := filepath.Join(logDir(), "livedump-agent.log")
	fileOut, fileErr := openRotating(logFile, logMaxBytes, logKeep)
	if fileErr == nil {
		defer fileOut.Close()
		// A crash (panic, fatal error) would otherwise go to the stderr
		// a service does not have.
		if f, err := os.OpenFile(filepath.Join(logDir(), "crash.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			_ = debug.SetCrashOutput(f, debug.CrashOptions{})
			f.Close()
		}
	}
	newLog := func(level string) (*slog.Logger, error) {
		var hs []slog.Handler
		if fileErr == nil {
			fl, err := logging.New(fileOut, level)
			if err != nil {
				return nil, err
			}
			hs = append(hs, fl.Handler())
		}
		if elogErr == nil {
			// The Event Log gets info and above even at debug level.
			min := slog.LevelInfo
			if l, err := logging.New(io.Discard, level); err == nil {
				for _, lv := range []slog.Level{slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
					if l.Enabled(context.Background(), lv) {
						min = lv
						break
					}
				}
			}
			hs = append(hs, newEventLogHandler(elog, min))
		}
		return slog.New(slog.NewMultiHandler(hs...)), nil
	}
	log, _ := newLog("info")
	if elogErr != nil {
		log.Warn("no Event Log: logging to the file only", "err", elogErr)
	}
	if fileErr != nil {
		log.Warn("no log file: logging to the Event Log only", "err", fileErr)
	}
	if dirErr != nil {
		log.Warn("cannot restrict the data directory to SYSTEM and Administrators", "dir", defaultStateDir(), "err", dirErr)
	}
	log.Info("service starting", "version", version.Version, "pid", os.Getpid())

	configFile, _ := cmd.Flags().GetString("config")
	if configFile == "" {
		configFile = defaultConfigFile()
	}
	if err := importInstallSettings(log, configFile); err != nil {
		// The agent may still run on the config it has; if it cannot,
		// it says why below.
		log.Error("installer settings not applied", "err", err)
	}
	configureService(log)

	h := &serviceHandler{
		parent:  ctx,
		log:     log,
		timeout: stopTimeout,
		run: func(ctx context.Context) error {
			if fileErr != nil {
				logFile = ""
			}
			return runAgent(ctx, cmd, logFile, newLog)
		},
	}
	if err := svc.Run(serviceName, h); err != nil {
		if errors.Is(err, windows.ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
			err = errors.New(`"service" is for the service control manager; run livedump-agent without it for a console agent`)
		}
		log.Error("service failed", "err", err)
		return err
	}
	return h.err
}

// configureService does at start what the MSI cannot: it quotes the
// service's ImagePath when the installer wrote it unquoted (a path with
// spaces must be quoted, or Windows tries C:\Program.exe first), and sets
// restart-on-failure recovery actions unless some are set already.
// Failures are logged, never fatal.
func configureService(log *slog.Logger) {
	m, err := mgr.Connect()
	if err != nil {
		log.Warn("service configuration: cannot connect to the service control manager", "err", err)
		return
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		log.Warn("service configuration: cannot open the service", "err", err)
		return
	}
	defer s.Close()
	if bin, err := binaryPathName(s.Handle); err != nil {
		log.Warn("service configuration: cannot read it", "err", err)
	} else if exe, err := os.Executable(); err == nil {
		if quoted, ok := quoteImagePath(bin, exe); ok {
			p, _ := windows.UTF16PtrFromString(quoted)
			const keep = windows.SERVICE_NO_CHANGE
			if err := windows.ChangeServiceConfig(s.Handle, keep, keep, keep, p, nil, nil, nil, nil, nil, nil); err != nil {
				log.Warn("service configuration: cannot quote the ImagePath", "image_path", bin, "err", err)
			} else {
				log.Info("service ImagePath quoted", "image_path", quoted)
			}
		}
	}
	if acts, err := s.RecoveryActions(); err == nil && len(acts) > 0 {
		return
	}
	restart := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 10 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 60 * time.Second},
	}
	if err := s.SetRecoveryActions(restart, uint32((24 * time.Hour).Seconds())); err != nil {
		log.Warn("service configuration: cannot set the recovery actions", "err", err)
		return
	}
	// Also when the agent stops with an error exit code, not only when
	// the process dies.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		log.Warn("service configuration: cannot set recovery on non-crash failures", "err", err)
	}
	log.Info("service recovery set: restart after 10 s, 30 s, 60 s")
}

// binaryPathName is the service's ImagePath (QueryServiceConfig; mgr's
// Config also asks for the description and more, which Wine refuses).
func binaryPathName(h windows.Handle) (string, error) {
	n := uint32(1024)
	for {
		buf := make([]byte, n)
		c := (*windows.QUERY_SERVICE_CONFIG)(unsafe.Pointer(&buf[0]))
		err := windows.QueryServiceConfig(h, c, n, &n)
		if err == nil {
			return windows.UTF16PtrToString(c.BinaryPathName), nil
		}
		if !errors.Is(err, windows.ERROR_INSUFFICIENT_BUFFER) || n <= uint32(len(buf)) {
			return "", err
		}
	}
}

// quoteImagePath returns the ImagePath with the executable's path quoted,
// and whether that changes it: only an unquoted ImagePath that starts with
// exe (this program) and whose path has a space is rewritten.
func quoteImagePath(imagePath, exe string) (string, bool) {
	if strings.HasPrefix(imagePath, `"`) || !strings.Contains(exe, " ") {
		return imagePath, false
	}
	if len(imagePath) < len(exe) || !strings.EqualFold(imagePath[:len(exe)], exe) {
		return imagePath, false
	}
	rest := imagePath[len(exe):]
	if rest != "" && rest[0] != ' ' {
		return imagePath, false
	}
	return `"` + exe + `"` + rest, true
}

// serviceHandler runs the agent as an svc.Handler.
type serviceHandler struct {
	parent  context.Context
	log     *slog.Logger
	timeout time.Duration
	run     func(ctx context.Context) error
	err     error // the agent's error when it ended on its own
}

// Execute reports running at once (enrolling and connecting happen in the
// background), and stops the agent on Stop or Shutdown within h.timeout.
func (h *serviceHandler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(h.parent)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	h.log.Info("service running")
	for {
		select {
		case err := <-done:
			if err != nil {
				h.err = err
				h.log.Error("agent stopped", "err", err)
				return true, exitAgentFailed
			}
			h.log.Info("agent stopped")
			return false, 0
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				what := "stop"
				if c.Cmd == svc.Shutdown {
					what = "shutdown"
				}
				h.log.Info("service stopping", "request", what)
				cancel()
				return h.stop(done, status)
			default:
				h.log.Warn("unexpected service control request", "cmd", c.Cmd)
			}
		}
	}
}

// stop waits for the agent to end, at most h.timeout, reporting progress
// to the SCM so that it does not give up on the service first.
func (h *serviceHandler) stop(done <-chan error, status chan<- svc.Status) (bool, uint32) {
	watchdog := time.NewTimer(h.timeout)
	defer watchdog.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	cp := uint32(1)
	status <- svc.Status{State: svc.StopPending, CheckPoint: cp, WaitHint: 3000}
	for {
		select {
		case err := <-done:
			if err != nil {
				h.log.Warn("agent stopped with an error", "err", err)
			}
			h.log.Info("service stopped")
			return false, 0
		case <-tick.C:
			cp++
			status <- svc.Status{State: svc.StopPending, CheckPoint: cp, WaitHint: 3000}
		case <-watchdog.C:
			h.log.Error("agent did not stop in time; the service stops anyway", "timeout", h.timeout)
			return false, 0
		}
	}
}
