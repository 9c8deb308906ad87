// Package selftest is `livedump-agent selftest`: it checks, on the machine
// the agent runs on, what DTrace and live kernel dumps need, and prints one
// line per check (PASS, FAIL or UNKNOWN with the evidence). It is how a first
// real-Windows user tells the livedump team what the simulated host got
// wrong, and what `livedumpctl agents check` runs remotely.
//
// Every check only reads the machine: dtrace is run to print its version,
// list probes, compile a script without enabling it (-e) and watch one
// syscall return fire with no destructive action; the registry, the event
// log and free space are read through the agent's Host. Each check has its
// own time bound.
package selftest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/provision"
	"github.com/livedump/livedump/internal/version"
)

// Status is the verdict of one check.
type Status string

// The verdicts. UNKNOWN means the check could not decide: it could not
// run, or what it read does not say either way.
const (
	Pass    Status = "PASS"
	Fail    Status = "FAIL"
	Unknown Status = "UNKNOWN"
)

// Names of the checks, stable: scripts, docs and the controller see them.
const (
	CheckDTracePresent  = "dtrace.present"
	CheckDTraceVersion  = "dtrace.version"
	CheckDTraceDriver   = "dtrace.driver"
	CheckSyscallProbe   = "dtrace.syscall_probe"
	CheckCompile        = "dtrace.compile"
	CheckProbeFires     = "dtrace.probe_fires"
	CheckLiveDumpEvents = "livedump.event_channel"
	CheckLiveDumpReg    = "livedump.registry"
	CheckDiskFree       = "livedump.disk_free"
	CheckSecureBootVBS  = "security.secureboot_vbs"
)

// Result is one check's outcome.
type Result struct {
	Check    string        `json:"check"`
	Status   Status        `json:"status"`
	Evidence string        `json:"evidence"`
	Duration time.Duration `json:"-"`
}

// MarshalJSON adds the duration in milliseconds, which people read more
// easily than nanoseconds.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		Millis int64 `json:"duration_ms"`
	}{plain(r), r.Duration.Milliseconds()})
}

// Report is a whole self-test.
type Report struct {
	Hostname     string    `json:"hostname,omitempty"`
	OSBuild      string    `json:"os_build,omitempty"`
	OSUBR        uint32    `json:"os_ubr,omitempty"`
	InstallType  string    `json:"installation_type,omitempty"`
	AgentVersion string    `json:"agent_version"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	Checks       []Result  `json:"checks"`
}

// Failed reports whether any check failed: the self-test's exit status.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// WriteText prints one line per check: `STATUS  check  evidence`.
func (r Report) WriteText(w io.Writer) error {
	for _, c := range r.Checks {
		if _, err := fmt.Fprintln(w, FormatLine(string(c.Status), c.Check, c.Evidence)); err != nil {
			return err
		}
	}
	return nil
}

// FormatLine is one line of the text output, padded so columns align.
func FormatLine(status, check, evidence string) string {
	return fmt.Sprintf("%-7s  %-23s  %s", status, check, evidence)
}

// WriteJSON prints the report as indented JSON: what to send back to the
// livedump team.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ProvisionState is what the self-test asks of the agent's provisioning:
// whether the values it applied wait for a reboot. *provision.Provisioner
// implements it.
type ProvisionState interface {
	State(ctx context.Context) (provision.Report, error)
}

// Config configures a self-test.
type Config struct {
	// Host is the machine: real Windows or the simulated host.
	Host host.Host
	// DTracePath is the agent's dtrace_path setting, shown in the evidence
	// ("" means the dtrace the host finds).
	DTracePath string
	// Provision tells whether provisioned values wait for a reboot; nil
	// leaves that part of the registry check out.
	Provision ProvisionState
	// ExpectedDumpBytes is the free space a dump needs; 0 means the
	// machine's physical memory, as the agent's own check before arming.
	ExpectedDumpBytes uint64
	// WorkDir holds the sample script while it is compiled; "" means the
	// system's temporary directory. The file is removed afterwards.
	WorkDir string
	// CheckTimeout bounds each check (default 60s); FireTimeout bounds the
	// wait for the harmless probe to fire (default 20s).
	CheckTimeout time.Duration
	FireTimeout  time.Duration
	Logger       *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultCheckTimeout = 60 * time.Second
	DefaultFireTimeout  = 20 * time.Second
	// MaxEvidence bounds one evidence line, in bytes.
	MaxEvidence = 400
)

// Tester runs self-tests. One runs at a time: a second Run while one is
// in progress returns ErrBusy, so a burst of remote requests cannot pile
// dtrace processes onto a machine.
type Tester struct {
	cfg     Config
	running sync.Mutex
}

// ErrBusy is returned by Run while another self-test runs.
var ErrBusy = errors.New("a self-test is already running on this machine")

// New checks cfg and fills its defaults.
func New(cfg Config) (*Tester, error) {
	if cfg.Host == nil {
		return nil, errors.New("selftest: Host is required")
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.FireTimeout <= 0 {
		cfg.FireTimeout = DefaultFireTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Tester{cfg: cfg}, nil
}

// Run runs every check, in order, and returns the report. ctx bounds the
// whole run: checks not reached when it ends are UNKNOWN.
func (t *Tester) Run(ctx context.Context) (Report, error) {
	if !t.running.TryLock() {
		return Report{}, ErrBusy
	}
	defer t.running.Unlock()
	rep := Report{AgentVersion: version.Version, Started: t.cfg.Now().UTC()}
	if inv, err := host.ReadInventory(t.cfg.Host); err == nil {
		rep.Hostname, rep.OSBuild, rep.OSUBR, rep.InstallType = inv.Hostname, inv.OSBuild, inv.OSUBR, inv.OSInstallationType
	}
	r := &run{t: t, h: t.cfg.Host}
	for _, c := range []struct {
		name string
		fn   func(context.Context) (Status, string)
	}{
		{CheckDTracePresent, r.present},
		{CheckDTraceVersion, r.version},
		{CheckDTraceDriver, r.driver},
		{CheckSyscallProbe, r.syscallProbe},
		{CheckCompile, r.compile},
		{CheckProbeFires, r.fires},
		{CheckLiveDumpEvents, r.eventChannel},
		{CheckLiveDumpReg, r.registry},
		{CheckDiskFree, r.diskFree},
		{CheckSecureBootVBS, r.secureBootVBS},
	} {
		res := t.check(ctx, c.name, c.fn)
		r.results = append(r.results, res)
		t.cfg.Logger.Info("selftest check", "check", res.Check, "status", res.Status, "evidence", res.Evidence)
	}
	rep.Checks = r.results
	rep.Finished = t.cfg.Now().UTC()
	return rep, nil
}

// check runs one check within its bound. A check that overruns is
// reported UNKNOWN (its dtrace child is killed with the context).
func (t *Tester) check(ctx context.Context, name string, fn func(context.Context) (Status, string)) Result {
	start := t.cfg.Now()
	if err := ctx.Err(); err != nil {
		return Result{Check: name, Status: Unknown, Evidence: "not run: the self-test's time ran out"}
	}
	cctx, cancel := context.WithTimeout(ctx, t.cfg.CheckTimeout)
	defer cancel()
	type out struct {
		st  Status
		ev  string
		pan any
	}
	done := make(chan out, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- out{pan: p}
			}
		}()
		st, ev := fn(cctx)
		done <- out{st: st, ev: ev}
	}()
	var o out
	select {
	case o = <-done:
	case <-cctx.Done():
		// The check ignores its context (a host call that cannot be
		// interrupted): report it and move on; its goroutine ends with it.
		o = out{st: Unknown, ev: fmt.Sprintf("no answer within %s", t.cfg.CheckTimeout)}
	}
	if o.pan != nil {
		o = out{st: Unknown, ev: fmt.Sprintf("check failed unexpectedly: %v", o.pan)}
	}
	if o.st == "" {
		o.st = Unknown
	}
	return Result{Check: name, Status: o.st, Evidence: oneLine(o.ev), Duration: t.cfg.Now().Sub(start)}
}

// run is the state one self-test shares between its checks.
type run struct {
	t       *Tester
	h       host.Host
	results []Result
}

func (r *run) status(check string) Status {
	for _, c := range r.results {
		if c.Check == check {
			return c.Status
		}
	}
	return ""
}

// oneLine makes evidence printable on one line: line breaks become " | ",
// invalid UTF-8 (dtrace prints ANSI code page text) is replaced, and the
// length is bounded.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	s = strings.Join(parts, " | ")
	if len(s) > MaxEvidence {
		cut := MaxEvidence - 3
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
