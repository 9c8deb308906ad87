package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/version"
)

// Exit statuses: 0 success, 1 a failed operation, 2 a usage error.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// app is one invocation of livedumpctl. Tests replace now and dial.
type app struct {
	stdout, stderr io.Writer
	now            func() time.Time
	// dial connects to the controller described by s.
	dial func(ctx context.Context, s settings) (fleetClient, func() error, error)

	configFlag string // --config
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr, now: time.Now, dial: dialController}
}

// run executes livedumpctl with args and returns the exit status. Output
// goes to stdout; an error is reported as one line on stderr.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return newApp(stdout, stderr).run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.newRootCmd()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(a.stderr, "livedumpctl: "+oneLine(err.Error()))
		var ue *usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

// usageError is a mistake in the command line itself (unknown command or
// flag, wrong number of arguments). Its message ends with a pointer to the
// command's help instead of a full usage dump.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%v (see '%s --help')", e.err, e.cmd.CommandPath())
}

func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// oneLine folds a message onto a single line: errors from the server or
// from libraries may contain newlines, and the contract is one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

const rootLong = `livedumpctl talks to a livedump controller to manage the fleet of Windows
agents: list, label and revoke agents; provision machines for live kernel
dumps; arm captures across a group and watch their trigger events; download
the dumps they take; create enrollment tokens and read the audit log.

Configuration (highest precedence first):
  1. flags                  --controller, --ca, --cert, --key, -o, --timeout
  2. environment            LIVEDUMP_CONTROLLER, LIVEDUMP_CA, LIVEDUMP_CERT,
                            LIVEDUMP_KEY, LIVEDUMP_OUTPUT, LIVEDUMP_TIMEOUT
  3. config file (YAML)     keys controller, ca, cert, key, output, timeout
  4. defaults               output: table, timeout: 15s
The config file is --config FILE, else $LIVEDUMPCTL_CONFIG, else
<user config dir>/livedump/livedumpctl.yaml if it exists. Relative paths in
the file are relative to the file's directory. Example:

  controller: controller.example.com:7443
  ca: ca.crt
  cert: alice.crt
  key: alice.key

The connection is mutual TLS 1.3; the controller's certificate must chain to
the CA file and nothing else.

Shell completion: "livedumpctl completion bash|zsh|fish|powershell" prints a
completion script; see "livedumpctl completion bash --help" for how to load it.

Exit status is 0 on success, 1 when the operation failed and 2 on a usage
error; the reason is printed as one line on stderr.`

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "livedumpctl",
		Short:         "Manage a livedump fleet",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	groupCommand(root)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{cmd: c, err: err}
	})
	// No flag value or argument holds a control character (flags.go).
	root.PersistentPreRunE = checkControlChars

	pf := root.PersistentFlags()
	pf.StringVar(&a.configFlag, "config", "", "config `FILE` (default $LIVEDUMPCTL_CONFIG, else <user config dir>/livedump/livedumpctl.yaml)")
	pf.String(keyController, "", "controller `HOST:PORT` (env LIVEDUMP_CONTROLLER)")
	pf.String(keyCA, "", "CA certificate `FILE` the controller's certificate must chain to (env LIVEDUMP_CA)")
	pf.String(keyCert, "", "operator client certificate `FILE` (env LIVEDUMP_CERT)")
	pf.String(keyKey, "", "operator private key `FILE` (env LIVEDUMP_KEY)")
	pf.StringP(keyOutput, "o", defaultOutput, "output `FORMAT`: table or json (env LIVEDUMP_OUTPUT)")
	pf.Duration(keyTimeout, defaultTimeout, "time limit for each call to the controller (env LIVEDUMP_TIMEOUT)")
	for _, name := range []string{"config", keyCA, keyCert, keyKey} {
		_ = root.MarkPersistentFlagFilename(name)
	}
	_ = root.RegisterFlagCompletionFunc(keyController, cobra.NoFileCompletions)

	root.AddCommand(a.agentsCmd(), a.provisionCmd(), a.captureCmd(), a.eventsCmd(), a.dumpsCmd(), a.tokensCmd(), a.operatorsCmd(), a.auditCmd(), a.uiCmd(), a.versionCmd())

	// Add cobra's completion command now rather than at Execute, so that
	// its group behaves like ours (an unknown shell is an error).
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			groupCommand(c)
		}
	}
	a.registerCompletions(root)
	return root
}

// groupCommand makes cmd a command that only holds subcommands: without
// arguments it prints its help, and an unknown subcommand is a usage error
// (cobra would otherwise print help and exit 0).
func groupCommand(cmd *cobra.Command) {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2
		}
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return &usageError{cmd: c, err: errors.New(msg)}
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
}

// exactArgs requires exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf(cmd, "want %d argument(s) %s, got %d", len(names), strings.Join(names, " "), len(args))
		}
		for i, a := range args {
			if strings.TrimSpace(a) == "" {
				return usageErrorf(cmd, "%s must not be empty", names[i])
			}
		}
		return nil
	}
}

// noArgs rejects positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf(cmd, "unexpected argument %q", args[0])
	}
	return nil
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the livedumpctl version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(a.stdout, "livedumpctl %s (%s, %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
