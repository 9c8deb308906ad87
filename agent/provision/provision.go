// Package provision brings a Windows host to the state the live kernel dump
// recipe needs, and back: plan shows every step with current and desired
// values and what blocks it; apply changes only what differs, journaling the
// prior value durably before each change; revert restores exactly what the
// journal holds. Everything goes through host.Host, so the same code runs on
// Windows and on the simulated host.
package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
)

// State is a host's provisioning state.
type State string

// The states an agent reports.
const (
	NotProvisioned State = "not-provisioned"
	RebootRequired State = "reboot-required"
	Rebooting      State = "rebooting"
	Ready          State = "ready"
	Blocked        State = "blocked"
	Failed         State = "failed"
)

// RebootPolicy says whether provisioning may restart the machine.
type RebootPolicy int

// The reboot policies.
const (
	RebootNever RebootPolicy = iota
	RebootIfNeeded
)

// Outcomes of a step in a Report.
const (
	OutcomePlanned   = "planned"
	OutcomeUnchanged = "unchanged"
	OutcomeApplied   = "applied"
	OutcomeReverted  = "reverted"
	OutcomeFailed    = "failed"
	OutcomeSkipped   = "skipped"
)

// StepResult is one step of a Report.
type StepResult struct {
	ID          string
	Description string
	Current     string
	Desired     string
	Change      bool
	NeedsReboot bool
	Outcome     string
	Error       string
}

// Report is the result of Plan, Apply, Revert or State.
type Report struct {
	State          State
	Detail         string
	Steps          []StepResult
	Blockers       []string
	Notes          []string
	RebootRequired bool
	RebootAt       time.Time
}

// MSISource returns a local path of the DTrace MSI, fetching it if needed.
type MSISource func(ctx context.Context) (string, error)

// Config configures a Provisioner.
type Config struct {
	Host     host.Host
	StateDir string
	// Installers decides which installers the agent runs (checked before
	// every msiexec, install and uninstall).
	Installers InstallerPolicy
	Clock      clockwork.Clock
	Logger     *slog.Logger
	// Metrics receives the provisioner's metrics; nil registers none.
	Metrics prometheus.Registerer
}

// Provisioner plans, applies and reverts profiles on one host. Operations
// are serialized: two applies never interleave their journal writes.
type Provisioner struct {
	cfg     Config
	metrics installerMetrics
	mu      sync.Mutex
	// driverProven is the boot time at which the DTrace driver was last
	// proven to work: proving it again in the same boot is not needed.
	driverProven time.Time
}

// New returns a Provisioner.
func New(cfg Config) (*Provisioner, error) {
	if cfg.Host == nil || cfg.StateDir == "" {
		return nil, errors.New("provision: Host and StateDir are required")
	}
	cfg.Installers = cfg.Installers.withDefaults()
	if err := cfg.Installers.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	return &Provisioner{cfg: cfg, metrics: newInstallerMetrics(cfg.Metrics)}, nil
}

// SymbolPath returns the _NT_SYMBOL_PATH provisioning set for dtrace.
func (p *Provisioner) SymbolPath() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, err := loadJournal(p.cfg.StateDir)
	if err != nil {
		return "", err
	}
	return j.SymbolPath, nil
}

// Minimum builds with DTrace support (WINDOWS-NOTES.md).
const (
	minClientBuild   = 18980 // builds must be above this
	minServerBuild   = 18975
	systemDriveFallb = "C:"
)

// systemDrive reads the system volume from SystemRoot ("C:\WINDOWS").
func systemDrive(h host.Registry) string {
	v, err := h.GetValue(host.CurrentVersionKey, "SystemRoot")
	if err != nil || len(v.Str) < 2 || v.Str[1] != ':' {
		return systemDriveFallb
	}
	return strings.ToUpper(v.Str[:2])
}

// blockers lists what makes provisioning unsafe or useless on this host.
// bootChange says whether the plan changes boot configuration, which is
// what BitLocker guards.
func (p *Provisioner) blockers(ctx context.Context, prof profile.Profile, bootChange bool) ([]string, error) {
	h := p.cfg.Host
	inv, err := host.ReadInventory(h)
	if err != nil {
		return nil, err
	}
	var b []string
	if inv.Arch != "amd64" {
		b = append(b, fmt.Sprintf("not x64: DTrace for Windows runs on x64 only (this machine is %s)", inv.Arch))
	}
	build, err := strconv.Atoi(inv.OSBuild)
	if err != nil {
		return nil, fmt.Errorf("inventory: CurrentBuildNumber %q is not a number", inv.OSBuild)
	}
	server := strings.HasPrefix(inv.OSInstallationType, "Server")
	switch {
	case server && build <= minServerBuild:
		b = append(b, fmt.Sprintf("Windows build %d is too old: DTrace needs a server build above %d", build, minServerBuild))
	case !server && build <= minClientBuild:
		b = append(b, fmt.Sprintf("Windows build %d is too old: DTrace needs a client build above %d", build, minClientBuild))
	}
	if slices.Contains(prof.UnsupportedEditions, inv.OSEdition) {
		b = append(b, fmt.Sprintf("unsupported edition: %s is excluded by the profile", inv.OSEdition))
	}
	if bootChange {
		vol := systemDrive(h)
		st, err := h.BitLockerStatus(ctx, vol)
		if err != nil {
			return nil, fmt.Errorf("BitLocker status of %s: %w", vol, err)
		}
		switch {
		case st == host.BitLockerUnknown:
			b = append(b, fmt.Sprintf("BitLocker status of %s is unknown (locked volume?): a boot configuration change could trigger recovery", vol))
		case st == host.BitLockerOn && !prof.AllowBitLockerSuspend:
			b = append(b, fmt.Sprintf("BitLocker is on for %s and the profile does not allow suspending it for one reboot: a boot configuration change would trigger BitLocker recovery", vol))
		}
	}
	return b, nil
}

// observe reads every step.
func (p *Provisioner) observe(ctx context.Context, steps []step) ([]observed, []StepResult, error) {
	obs := make([]observed, len(steps))
	res := make([]StepResult, len(steps))
	for i, s := range steps {
		o, err := s.read(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", s.id(), err)
		}
		obs[i] = o
		res[i] = StepResult{
			ID: s.id(), Description: s.describe(), Current: o.display, Desired: s.desired(),
			Change: !o.ok, NeedsReboot: s.needsReboot(), Outcome: OutcomeUnchanged,
		}
		if !o.ok {
			res[i].Outcome = OutcomePlanned
		}
	}
	return obs, res, nil
}

// rebootPending reports whether a change that needs a reboot was made after
// the last boot.
func (p *Provisioner) rebootPending(ctx context.Context, j *journal) (bool, error) {
	if j.RebootNeededSince.IsZero() {
		return false, nil
	}
	boot, err := p.cfg.Host.BootTime(ctx)
	if err != nil {
		return false, fmt.Errorf("boot time: %w", err)
	}
	return !boot.After(j.RebootNeededSince), nil
}

func bootChange(steps []step, res []StepResult) bool {
	for i, s := range steps {
		if changesBoot(s) && res[i].Change {
			return true
		}
	}
	return false
}

// plan computes the report for prof without changing anything.
func (p *Provisioner) plan(ctx context.Context, prof profile.Profile, j *journal, msi MSISource) ([]step, []observed, Report, error) {
	if err := prof.Validate(); err != nil {
		return nil, nil, Report{}, err
	}
	steps := p.steps(prof, j, msi)
	obs, res, err := p.observe(ctx, steps)
	if err != nil {
		return nil, nil, Report{}, err
	}
	rep := Report{Steps: res}
	if rep.Blockers, err = p.blockers(ctx, prof, bootChange(steps, res)); err != nil {
		return nil, nil, Report{}, err
	}
	for _, r := range res {
		if r.ID == stepInstall && r.Change && msi == nil {
			rep.Blockers = append(rep.Blockers, "no DTrace MSI available: upload one with `livedumpctl provision apply --dtrace-msi FILE` or set provision.dtrace_msi on the controller")
		}
	}
	pending, err := p.rebootPending(ctx, j)
	if err != nil {
		return nil, nil, Report{}, err
	}
	rep.RebootRequired = pending
	if rep.Notes, err = p.notes(ctx, prof); err != nil {
		return nil, nil, Report{}, err
	}
	changes := slices.ContainsFunc(res, func(r StepResult) bool { return r.Change })
	switch {
	case len(rep.Blockers) > 0:
		rep.State, rep.Detail = Blocked, rep.Blockers[0]
	case changes && j.FailedStep != "":
		rep.State, rep.Detail = Failed, j.FailedStep+": "+j.Failure
	case changes:
		rep.State = NotProvisioned
	case pending && !j.RebootRequestedAt.IsZero() && p.cfg.Clock.Now().Before(j.RebootRequestedAt.Add(prof.RebootDelay+10*time.Minute)):
		rep.State = Rebooting
	case pending:
		rep.State = RebootRequired
	default:
		rep.State = Ready
	}
	if rep.State == Ready {
		if err := p.proveDriver(ctx, &rep); err != nil {
			return nil, nil, Report{}, err
		}
	}
	return steps, obs, rep, nil
}

// notes reports what the operator should know but provisioning does not
// change: which dtrace captures will run, reboots Windows itself is
// waiting for, and the running VBS state.
func (p *Provisioner) notes(ctx context.Context, prof profile.Profile) ([]string, error) {
	var n []string
	d, err := p.cfg.Host.DTrace()
	if err != nil {
		return nil, fmt.Errorf("dtrace: %w", err)
	}
	n = append(n, dtraceNote(d, prof))
	pending, reasons, err := host.PendingReboot(p.cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("pending reboot: %w", err)
	}
	if pending {
		n = append(n, "Windows is already waiting for a reboot ("+strings.Join(reasons, "; ")+")")
	}
	if prof.VBS {
		st, err := p.cfg.Host.VBSStatus(ctx)
		if err != nil {
			return nil, fmt.Errorf("VBS status: %w", err)
		}
		n = append(n, "VBS is "+st.String()+" now")
	}
	sec, err := p.securityNotes(ctx)
	if err != nil {
		return nil, err
	}
	return append(n, sec...), nil
}

// securityNotes is the Secure Boot and memory integrity state, read and
// reported on every plan and state: both are known causes of "DTrace device
// not available on system" (DTrace-on-Windows issue #64).
func (p *Provisioner) securityNotes(ctx context.Context) ([]string, error) {
	bs, err := host.ReadBootSecurity(ctx, p.cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("Secure Boot / memory integrity: %w", err)
	}
	return bs.Notes(), nil
}

// Plan reports what Apply would do with prof. msi is nil when no DTrace MSI
// is available.
func (p *Provisioner) Plan(ctx context.Context, prof profile.Profile, msi MSISource) (Report, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, err := loadJournal(p.cfg.StateDir)
	if err != nil {
		return Report{}, err
	}
	_, _, rep, err := p.plan(ctx, prof, j, msi)
	return rep, err
}

// State reports the state for the last applied profile, for the agent's
// report after (re)connecting.
func (p *Provisioner) State(ctx context.Context) (Report, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, err := loadJournal(p.cfg.StateDir)
	if err != nil {
		return Report{}, err
	}
	if j.Profile == nil {
		pending, err := p.rebootPending(ctx, j)
		if err != nil {
			return Report{}, err
		}
		notes, err := p.securityNotes(ctx)
		if err != nil {
			return Report{}, err
		}
		return Report{State: NotProvisioned, RebootRequired: pending, Notes: notes}, nil
	}
	_, _, rep, err := p.plan(ctx, *j.Profile, j, nil)
	if err != nil {
		return Report{}, err
	}
	// Without an MSI source the install step can look blocked even though
	// it is installed or was never part of the state question.
	if rep.State == Blocked && len(rep.Blockers) == 1 && strings.HasPrefix(rep.Blockers[0], "no DTrace MSI") {
		rep.State, rep.Detail, rep.Blockers = NotProvisioned, "", nil
	}
	return rep, nil
}

// Apply brings the host to prof. It does nothing on a blocked host. Each
// prior value is journaled durably before its change, so an apply
// interrupted at any point is finished by running it again, and a revert
// after it restores the machine as it was before the first apply.
func (p *Provisioner) Apply(ctx context.Context, prof profile.Profile, policy RebootPolicy, msi MSISource) (Report, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, err := loadJournal(p.cfg.StateDir)
	if err != nil {
		return Report{}, err
	}
	steps, obs, rep, err := p.plan(ctx, prof, j, msi)
	if err != nil {
		return Report{}, err
	}
	if rep.State == Blocked {
		for i := range rep.Steps {
			if rep.Steps[i].Change {
				rep.Steps[i].Outcome = OutcomeSkipped
			}
		}
		return rep, nil
	}
	now := p.cfg.Clock.Now().UTC()
	rebootNow := false
	for i, s := range steps {
		if !rep.Steps[i].Change {
			continue
		}
		if _, ok := j.find(s.id()); !ok {
			j.Records = append(j.Records, record{Step: s.id(), Prior: obs[i].prior, At: now})
		}
		if s.needsReboot() {
			j.RebootNeededSince = now
		}
		if err := j.save(p.cfg.StateDir); err != nil {
			return Report{}, fmt.Errorf("journal before %s: %w", s.id(), err)
		}
		var productsBefore []host.Product
		_, isInstall := s.(*installStep)
		if isInstall {
			if productsBefore, err = host.InstalledProducts(p.cfg.Host); err != nil {
				return Report{}, err
			}
		}
		if err := s.apply(ctx); err != nil {
			rep.Steps[i].Outcome, rep.Steps[i].Error = OutcomeFailed, err.Error()
			j.FailedStep, j.Failure = s.id(), err.Error()
			if serr := j.save(p.cfg.StateDir); serr != nil {
				p.cfg.Logger.Error("save provisioning journal", "err", serr)
			}
			rep.State, rep.Detail = Failed, s.id()+": "+err.Error()
			return rep, nil
		}
		if is, ok := s.(*installStep); ok && is.rebootRequired {
			j.RebootNeededSince = p.cfg.Clock.Now().UTC()
		}
		if isInstall {
			// Remember what to uninstall by: the ProductCode the
			// install registered under the Uninstall key.
			after, err := host.InstalledProducts(p.cfg.Host)
			if err != nil {
				return Report{}, err
			}
			if code := newProduct(productsBefore, after); code != "" {
				j.ProductCode = code
			}
			if err := j.save(p.cfg.StateDir); err != nil {
				return Report{}, err
			}
		}
		rep.Steps[i].Outcome = OutcomeApplied
		rebootNow = rebootNow || s.needsReboot()
	}
	j.FailedStep, j.Failure = "", ""
	j.Profile = &prof
	if err := j.save(p.cfg.StateDir); err != nil {
		return Report{}, err
	}
	p.cfg.Logger.Info("provisioning applied", "changed", countChanged(rep.Steps))
	return p.finish(ctx, rep, j, prof, policy)
}

func countChanged(res []StepResult) int {
	n := 0
	for _, r := range res {
		if r.Outcome == OutcomeApplied || r.Outcome == OutcomeReverted {
			n++
		}
	}
	return n
}

// finish decides the state after apply or revert and, when the policy
// allows, schedules the reboot that makes boot changes effective.
func (p *Provisioner) finish(ctx context.Context, rep Report, j *journal, prof profile.Profile, policy RebootPolicy) (Report, error) {
	pending, err := p.rebootPending(ctx, j)
	if err != nil {
		return Report{}, err
	}
	rep.RebootRequired = pending
	rep.Detail = ""
	switch {
	case !pending && j.Profile != nil:
		rep.State = Ready
		if err := p.proveDriver(ctx, &rep); err != nil {
			return Report{}, err
		}
		return rep, nil
	case !pending:
		rep.State = NotProvisioned
		return rep, nil
	case policy == RebootNever:
		rep.State = RebootRequired
		rep.Detail = "a reboot makes the boot configuration change effective (policy: never)"
		return rep, nil
	}
	h := p.cfg.Host
	vol := systemDrive(h)
	st, err := h.BitLockerStatus(ctx, vol)
	if err != nil {
		return Report{}, fmt.Errorf("BitLocker status of %s: %w", vol, err)
	}
	if st == host.BitLockerOn {
		if !prof.AllowBitLockerSuspend {
			rep.State, rep.Detail = Blocked, fmt.Sprintf("BitLocker is on for %s: not rebooting without the suspend policy", vol)
			return rep, nil
		}
		if err := h.SuspendBitLocker(ctx, vol, 1); err != nil {
			return Report{}, fmt.Errorf("suspend BitLocker on %s for one reboot: %w", vol, err)
		}
		p.cfg.Logger.Info("BitLocker suspended for one reboot", "volume", vol)
	}
	msg := fmt.Sprintf("livedump: restarting in %d seconds to apply the boot configuration for live kernel dumps.", int(prof.RebootDelay.Seconds()))
	if err := h.Reboot(ctx, prof.RebootDelay, msg); err != nil {
		return Report{}, fmt.Errorf("schedule reboot: %w", err)
	}
	now := p.cfg.Clock.Now().UTC()
	j.RebootRequestedAt = now
	if err := j.save(p.cfg.StateDir); err != nil {
		return Report{}, err
	}
	rep.State, rep.RebootAt = Rebooting, now.Add(prof.RebootDelay)
	p.cfg.Logger.Info("reboot scheduled", "at", rep.RebootAt)
	return rep, nil
}

// Revert restores every journaled value, newest change first, and forgets
// the profile. Restoring boot configuration with BitLocker on is refused
// unless prof allows a one-reboot suspension, as for apply.
func (p *Provisioner) Revert(ctx context.Context, prof profile.Profile, policy RebootPolicy) (Report, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, err := loadJournal(p.cfg.StateDir)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	var steps []step
	touchesBoot := false
	for i := len(j.Records) - 1; i >= 0; i-- {
		s, err := p.stepByID(j.Records[i].Step, j)
		if err != nil {
			return Report{}, err
		}
		steps = append(steps, s)
		touchesBoot = touchesBoot || changesBoot(s)
	}
	if touchesBoot {
		vol := systemDrive(p.cfg.Host)
		st, err := p.cfg.Host.BitLockerStatus(ctx, vol)
		if err != nil {
			return Report{}, fmt.Errorf("BitLocker status of %s: %w", vol, err)
		}
		if st != host.BitLockerOff && !prof.AllowBitLockerSuspend {
			rep.Blockers = []string{fmt.Sprintf("BitLocker is %s for %s and the profile does not allow suspending it for one reboot: reverting the boot configuration would trigger BitLocker recovery", st, vol)}
			rep.State, rep.Detail = Blocked, rep.Blockers[0]
			return rep, nil
		}
	}
	for _, s := range steps {
		idx, _ := j.find(s.id())
		rec := j.Records[idx]
		cur, err := s.read(ctx)
		if err != nil {
			return Report{}, fmt.Errorf("read %s: %w", s.id(), err)
		}
		res := StepResult{ID: s.id(), Description: s.describe(), Current: cur.display, NeedsReboot: s.needsReboot(), Change: true, Outcome: OutcomeReverted}
		if s.needsReboot() {
			j.RebootNeededSince = p.cfg.Clock.Now().UTC()
			if err := j.save(p.cfg.StateDir); err != nil {
				return Report{}, err
			}
		}
		if err := s.revert(ctx, rec.Prior); err != nil {
			res.Outcome, res.Error = OutcomeFailed, err.Error()
			rep.Steps = append(rep.Steps, res)
			rep.State, rep.Detail = Failed, "revert "+s.id()+": "+err.Error()
			return rep, nil
		}
		if after, err := s.read(ctx); err == nil {
			res.Desired = after.display
		}
		if is, ok := s.(*installStep); ok && is.rebootRequired {
			j.RebootNeededSince = p.cfg.Clock.Now().UTC()
		}
		j.Records = slices.Delete(j.Records, idx, idx+1)
		if err := j.save(p.cfg.StateDir); err != nil {
			return Report{}, err
		}
		rep.Steps = append(rep.Steps, res)
	}
	j.Profile, j.FailedStep, j.Failure, j.MSIPath, j.ProductCode = nil, "", "", "", ""
	if err := j.save(p.cfg.StateDir); err != nil {
		return Report{}, err
	}
	p.cfg.Logger.Info("provisioning reverted", "restored", len(rep.Steps))
	return p.finish(ctx, rep, j, prof, policy)
}

// dtraceNote says which dtrace captures run on this machine. Windows
// Server 2025 ships its own (System32\dtrace.exe, "differs from the MSI
// installer of DTrace for Windows surrounding parameters",
// https://learn.microsoft.com/en-us/windows-server/administration/windows-commands/dtrace):
// there it is used and the MSI is not installed.
func dtraceNote(d host.DTrace, prof profile.Profile) string {
	switch d.Kind {
	case host.DTraceBuiltin:
		return "dtrace: Windows' built-in " + d.Path + " (the DTrace MSI is not installed; enabled by bcdedit /set dtrace on and a reboot)"
	case host.DTraceMSI:
		return "dtrace: DTrace for Windows (MSI) " + d.Path
	case host.DTraceConfigured:
		return "dtrace: " + d.Path + " (the agent's dtrace_path setting)"
	}
	if prof.InstallDTrace {
		return "dtrace: none yet; the DTrace MSI will be installed"
	}
	return "dtrace: none, and the profile does not install it"
}
