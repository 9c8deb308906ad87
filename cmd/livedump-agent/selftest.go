package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/provision"
	"github.com/livedump/livedump/agent/selftest"
)

// errChecksFailed makes the exit status 1 without another line: the
// report already says which check failed.
var errChecksFailed = errors.New("a self-test check failed")

// selftestTotal bounds a whole local self-test.
const selftestTotal = 10 * time.Minute

func newSelftestCmd(ctx context.Context, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "selftest",
		Short: "Check this machine's DTrace and live-dump prerequisites; change nothing",
		Long: `selftest checks what capturing stacks and live kernel dumps needs on this
machine and prints one line per check: PASS, FAIL or UNKNOWN, the check, and
the evidence. It changes nothing: dtrace is run to print its version, list
probes, compile a sample capture script without enabling it (-e), and watch
one syscall return fire (no destructive action); the registry, the
Kernel-LiveDump event log and free space are only read.

Exit status 0 when no check failed, 1 otherwise. With -o json the report is
what to send to the livedump team (see docs/selftest.md).`,
		Args: cobra.NoArgs,
	}
	agentFlags(cmd.Flags())
	cmd.Flags().StringP("output", "o", "text", "text or json")
	cmd.Flags().Duration("fire-timeout", selftest.DefaultFireTimeout, "how long to wait for the harmless probe to fire")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		out, _ := cmd.Flags().GetString("output")
		if out != "text" && out != "json" {
			return fmt.Errorf("--output %q: want text or json", out)
		}
		fire, _ := cmd.Flags().GetDuration("fire-timeout")
		if fire <= 0 || fire > 5*time.Minute {
			return fmt.Errorf("--fire-timeout %s: want more than 0 and at most 5m", fire)
		}
		v, err := loadConfig(cmd)
		if err != nil {
			return err
		}
		stateDir := v.Path("state_dir")
		var h host.Host
		if v.GetBool("simulate") {
			if h, err = simulatedHost(v, stateDir, v.Path("dtrace_path")); err != nil {
				return err
			}
		} else if h, err = realHost(v.Path("dtrace_path")); err != nil {
			return err
		}
		cfg := selftest.Config{
			Host:              h,
			DTracePath:        v.Path("dtrace_path"),
			ExpectedDumpBytes: v.GetUint64("expected_dump_bytes"),
			FireTimeout:       fire,
		}
		// The provisioning journal says whether applied values wait for a
		// reboot; an agent that never ran has none (and none is created).
		if st, err := os.Stat(stateDir); err == nil && st.IsDir() {
			if p, err := provision.New(provision.Config{Host: h, StateDir: stateDir}); err == nil {
				cfg.Provision = p
			}
		}
		t, err := selftest.New(cfg)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, selftestTotal)
		defer cancel()
		rep, err := t.Run(ctx)
		if err != nil {
			return err
		}
		if out == "json" {
			err = rep.WriteJSON(stdout)
		} else {
			err = rep.WriteText(stdout)
		}
		if err != nil {
			return err
		}
		if rep.Failed() {
			return errChecksFailed
		}
		return nil
	}
	return cmd
}
