package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
)

// Registry locations of the live kernel dump recipe.
const (
	crashControlKey  = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl`
	fullLiveKey      = crashControlKey + `\FullLiveKernelReports`
	liveReportsKey   = crashControlKey + `\LiveKernelReports`
	deviceGuardKey   = `HKLM\SYSTEM\CurrentControlSet\Control\DeviceGuard`
	notSet           = "(not set)"
	dtraceInstalled  = "installed"
	dtraceMissing    = "not installed"
	dtraceBuiltin    = "built into Windows"
	stepSymbolPath   = "dtrace.symbol_path"
	stepInstall      = "dtrace.install"
	stepBCD          = "bcd.dtrace"
	stepVBS          = "deviceguard.enable_vbs"
	stepReportsPath  = "crashcontrol.live_kernel_reports_path"
	stepReportsMax   = "crashcontrol.full_live_reports_max"
	stepSysThrottle  = "crashcontrol.system_throttle_threshold"
	stepCompThrottle = "crashcontrol.component_throttle_threshold"
	stepKeepDump     = "crashcontrol.always_keep_memory_dump"
)

// observed is a step's current state.
type observed struct {
	display string
	ok      bool            // already as desired
	prior   json.RawMessage // what revert restores
}

// step is one change of the recipe. read never changes anything; apply and
// revert are idempotent.
type step interface {
	id() string
	describe() string
	desired() string
	needsReboot() bool
	read(ctx context.Context) (observed, error)
	apply(ctx context.Context) error
	revert(ctx context.Context, prior json.RawMessage) error
}

// regStep sets one registry value.
type regStep struct {
	sid, desc string
	key, name string
	want      host.Value
	reboot    bool
	// bootConfig says the change is one BitLocker may measure at the next
	// boot (VBS), unlike a value that is merely read at boot.
	bootConfig bool
	h          host.Host
}

type regPrior struct {
	Exists bool        `json:"exists"`
	Value  *host.Value `json:"value,omitempty"`
	// CreatedKeys are the keys that did not exist, deepest first up to the
	// first existing ancestor: writing the value creates them, and revert
	// removes them again once empty, so the registry is left as found.
	CreatedKeys []string `json:"created_keys,omitempty"`
}

// missingKeys lists key and its ancestors that do not exist, deepest first.
func missingKeys(h host.Registry, key string) ([]string, error) {
	var missing []string
	for k := key; strings.Count(k, `\`) > 1; k = k[:strings.LastIndex(k, `\`)] {
		ok, err := h.KeyExists(k)
		if err != nil {
			return nil, err
		}
		if ok {
			break
		}
		missing = append(missing, k)
	}
	return missing, nil
}

func (s *regStep) id() string        { return s.sid }
func (s *regStep) describe() string  { return s.desc }
func (s *regStep) desired() string   { return s.want.String() }
func (s *regStep) needsReboot() bool { return s.reboot }

func (s *regStep) read(context.Context) (observed, error) {
	v, err := s.h.GetValue(s.key, s.name)
	if errors.Is(err, host.ErrNotExist) {
		created, err := missingKeys(s.h, s.key)
		if err != nil {
			return observed{}, err
		}
		b, _ := json.Marshal(regPrior{Exists: false, CreatedKeys: created})
		return observed{display: notSet, prior: b}, nil
	}
	if err != nil {
		return observed{}, err
	}
	b, err := json.Marshal(regPrior{Exists: true, Value: &v})
	if err != nil {
		return observed{}, err
	}
	return observed{display: v.String(), ok: v.Equal(s.want), prior: b}, nil
}

func (s *regStep) apply(context.Context) error { return s.h.SetValue(s.key, s.name, s.want) }

func (s *regStep) revert(_ context.Context, prior json.RawMessage) error {
	var p regPrior
	if err := json.Unmarshal(prior, &p); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if !p.Exists {
		if err := s.h.DeleteValue(s.key, s.name); err != nil && !errors.Is(err, host.ErrNotExist) {
			return err
		}
		// Other steps may still have values in these keys; the last one out
		// removes them.
		for _, k := range p.CreatedKeys {
			err := s.h.DeleteKey(k)
			if errors.Is(err, host.ErrKeyNotEmpty) {
				break
			}
			if err != nil && !errors.Is(err, host.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	if p.Value == nil {
		return errors.New("journal: prior value missing")
	}
	return s.h.SetValue(s.key, s.name, *p.Value)
}

// bcdStep turns the dtrace boot flag on.
type bcdStep struct{ h host.Host }

func (s *bcdStep) id() string        { return stepBCD }
func (s *bcdStep) describe() string  { return "boot configuration: bcdedit /set {current} dtrace on" }
func (s *bcdStep) desired() string   { return "on" }
func (s *bcdStep) needsReboot() bool { return true }

func (s *bcdStep) read(ctx context.Context) (observed, error) {
	v, err := s.h.BCDDtrace(ctx)
	if err != nil {
		return observed{}, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return observed{}, err
	}
	return observed{display: v.String(), ok: v.Present && v.On, prior: b}, nil
}

func (s *bcdStep) apply(ctx context.Context) error { return s.h.SetBCDDtrace(ctx, true) }

func (s *bcdStep) revert(ctx context.Context, prior json.RawMessage) error {
	var p host.BCDValue
	if err := json.Unmarshal(prior, &p); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if !p.Present {
		if err := s.h.DeleteBCDDtrace(ctx); err != nil && !errors.Is(err, host.ErrNotExist) {
			return err
		}
		return nil
	}
	return s.h.SetBCDDtrace(ctx, p.On)
}

// symbolStep records the symbol path the dtrace process gets. It changes
// the agent's own state, not the machine: a machine-wide _NT_SYMBOL_PATH
// would change every debugger on the box.
type symbolStep struct {
	want string
	j    *journal
}

func (s *symbolStep) id() string        { return stepSymbolPath }
func (s *symbolStep) describe() string  { return "_NT_SYMBOL_PATH for the dtrace process" }
func (s *symbolStep) desired() string   { return displayString(s.want) }
func (s *symbolStep) needsReboot() bool { return false }

func displayString(s string) string {
	if s == "" {
		return notSet
	}
	return s
}

func (s *symbolStep) read(context.Context) (observed, error) {
	b, _ := json.Marshal(s.j.SymbolPath)
	return observed{display: displayString(s.j.SymbolPath), ok: s.j.SymbolPath == s.want, prior: b}, nil
}

func (s *symbolStep) apply(context.Context) error { s.j.SymbolPath = s.want; return nil }

func (s *symbolStep) revert(_ context.Context, prior json.RawMessage) error {
	return json.Unmarshal(prior, &s.j.SymbolPath)
}

// installStep installs DTrace from its MSI.
type installStep struct {
	p   *Provisioner
	msi func(ctx context.Context) (string, error) // local MSI path
	j   *journal
	// rebootRequired is set when msiexec answered 3010.
	rebootRequired bool
}

type installPrior struct {
	Installed bool `json:"installed"`
}

func (s *installStep) id() string { return stepInstall }
func (s *installStep) describe() string {
	return `DTrace installed (built-in System32\dtrace.exe, else the MSI's C:\Program Files\DTrace\dtrace.exe)`
}
func (s *installStep) desired() string   { return dtraceInstalled }
func (s *installStep) needsReboot() bool { return false }

// read finds dtrace by its files: where Windows ships its own (System32,
// Windows Server 2025 and later) the step is already done and the MSI is
// never installed; never decided by the build number alone.
func (s *installStep) read(context.Context) (observed, error) {
	found, err := host.FindDTrace(s.p.cfg.Host, "")
	if err != nil {
		return observed{}, err
	}
	ok := found.Kind != host.DTraceNone
	b, _ := json.Marshal(installPrior{Installed: ok})
	d := dtraceMissing
	switch found.Kind {
	case host.DTraceBuiltin:
		d = dtraceBuiltin + " (" + found.Path + ")"
	case host.DTraceMSI:
		d = dtraceInstalled
	}
	return observed{display: d, ok: ok, prior: b}, nil
}

func (s *installStep) logPath(verb string) (string, error) {
	dir := filepath.Join(s.p.cfg.StateDir, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(dir, fmt.Sprintf("dtrace-%s-%s.log", verb, s.p.cfg.Clock.Now().UTC().Format("20060102T150405"))), nil
}

func (s *installStep) apply(ctx context.Context) error {
	if s.msi == nil {
		return errors.New("no DTrace MSI: upload one with `livedumpctl provision apply --dtrace-msi FILE`, set provision.dtrace_msi on the controller, or pre-stage one with the agent's dtrace_msi setting")
	}
	msi, err := s.msi(ctx)
	if err != nil {
		return fmt.Errorf("get DTrace MSI: %w", err)
	}
	// msiexec runs the package as SYSTEM: the agent's own policy decides,
	// whoever sent it.
	if err := s.p.checkInstaller(ctx, msi); err != nil {
		return err
	}
	log, err := s.logPath("install")
	if err != nil {
		return err
	}
	code, err := s.p.cfg.Host.InstallMSI(ctx, msi, log)
	if err != nil {
		return fmt.Errorf("run msiexec: %w", err)
	}
	switch code {
	case host.MSISuccess:
	case host.MSIRebootRequired, host.MSIRebootInitiated:
		s.rebootRequired = true
	case host.MSIAnotherInstall:
		return fmt.Errorf("msiexec exit %d: another installation is in progress; apply again later (log %s)", code, log)
	default:
		return fmt.Errorf("msiexec exit %d (%s); log %s", code, msiMeaning(code), log)
	}
	s.j.MSIPath = msi
	return nil
}

func msiMeaning(code int) string {
	switch code {
	case host.MSIFatal:
		return "fatal error during installation"
	case host.MSIPackageOpenFailed:
		return "the package could not be opened"
	case host.MSIPackageInvalid:
		return "the package is not a valid MSI"
	case host.MSIUserExit:
		return "cancelled"
	}
	return "installer error"
}

func (s *installStep) revert(ctx context.Context, prior json.RawMessage) error {
	var p installPrior
	if err := json.Unmarshal(prior, &p); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if p.Installed {
		return nil // it was there before us; leave it
	}
	h := s.p.cfg.Host
	code, err := s.productCode(ctx)
	if err != nil || code == "" {
		return err
	}
	// Windows Installer removes the product with its own cached copy of
	// the package, verified when it was installed: no file of ours runs,
	// and nothing depends on the MSI the agent downloaded still being
	// there (WINDOWS-NOTES: uninstall by the ProductCode under the
	// Uninstall key, not by a cached MSI file).
	log, err := s.logPath("uninstall")
	if err != nil {
		return err
	}
	exit, err := h.UninstallProduct(ctx, code, log)
	if err != nil {
		return fmt.Errorf("run msiexec /x %s: %w", code, err)
	}
	switch exit {
	case host.MSISuccess, host.MSIProductNotInstalled:
	case host.MSIRebootRequired, host.MSIRebootInitiated:
		s.rebootRequired = true
	default:
		return fmt.Errorf("msiexec /x %s exit %d (%s); log %s", code, exit, msiMeaning(exit), log)
	}
	s.j.ProductCode = ""
	return nil
}

// productCode is the ProductCode to uninstall: the one recorded when this
// agent installed DTrace, else the single installed product named "DTrace
// for Windows". "" with no error means nothing is left to remove.
func (s *installStep) productCode(ctx context.Context) (string, error) {
	if s.j.ProductCode != "" {
		return s.j.ProductCode, nil
	}
	found, err := host.FindProducts(s.p.cfg.Host, host.DTraceProductName)
	if err != nil {
		return "", err
	}
	switch len(found) {
	case 1:
		return found[0].Code, nil
	case 0:
		cur, err := s.read(ctx)
		if err != nil {
			return "", err
		}
		if !cur.ok {
			return "", nil // already uninstalled
		}
		return "", fmt.Errorf("DTrace is installed but no product %s is registered under %s and none was recorded at install: uninstall it by hand", host.Quote(host.DTraceProductName), host.UninstallKey)
	}
	codes := make([]string, len(found))
	for i, p := range found {
		codes[i] = p.Code + " " + p.Version
	}
	return "", fmt.Errorf("%d products named %s are installed (%s): uninstall the right one by hand", len(found), host.Quote(host.DTraceProductName), strings.Join(codes, ", "))
}

// newProduct is the product an install added: the one named "DTrace for
// Windows" among the products that were not there before, else the only
// new one; "" when that is ambiguous or nothing was added.
func newProduct(before, after []host.Product) string {
	var added []host.Product
	for _, a := range after {
		if !slices.ContainsFunc(before, func(b host.Product) bool { return b.Code == a.Code }) {
			added = append(added, a)
		}
	}
	for _, a := range added {
		if strings.EqualFold(a.Name, host.DTraceProductName) {
			return a.Code
		}
	}
	if len(added) == 1 {
		return added[0].Code
	}
	return ""
}

// DTracePath is where the DTrace MSI puts dtrace.exe on this host.
func DTracePath(h host.Registry) (string, error) { return host.MSIDTracePath(h) }

// steps returns the recipe for prof, in the order apply runs them.
func (p *Provisioner) steps(prof profile.Profile, j *journal, msi func(context.Context) (string, error)) []step {
	h := p.cfg.Host
	s := []step{
		&regStep{sid: stepReportsMax, desc: `FullLiveKernelReports\FullLiveReportsMax`, key: fullLiveKey, name: "FullLiveReportsMax", want: host.DWORD(prof.FullLiveReportsMax), h: h},
		&regStep{sid: stepSysThrottle, desc: `FullLiveKernelReports\SystemThrottleThreshold (hours)`, key: fullLiveKey, name: "SystemThrottleThreshold", want: host.DWORD(prof.SystemThrottleThreshold), h: h},
		&regStep{sid: stepCompThrottle, desc: `FullLiveKernelReports\ComponentThrottleThreshold (hours)`, key: fullLiveKey, name: "ComponentThrottleThreshold", want: host.DWORD(prof.ComponentThrottleThreshold), h: h},
		&regStep{sid: stepKeepDump, desc: `CrashControl\AlwaysKeepMemoryDump`, key: crashControlKey, name: "AlwaysKeepMemoryDump", want: host.DWORD(prof.AlwaysKeepMemoryDump), h: h},
		// No Microsoft page found says when the live dump path is read
		// (not the DTrace live dump page, nor "Overview of memory dump
		// file options for Windows", KB 254649,
		// https://learn.microsoft.com/en-us/troubleshoot/windows-server/performance/memory-dump-file-options,
		// whose crash dump settings are applied through a restart). It is
		// uncertain, so the harsher reading: a changed path needs a
		// reboot, and until then dumps may land in the old folder.
		&regStep{sid: stepReportsPath, desc: `LiveKernelReports\LiveKernelReportsPath (Windows creates the folder; takes effect at the next boot)`, key: liveReportsKey, name: "LiveKernelReportsPath", want: host.SZ(prof.LiveKernelReportsPath), reboot: true, h: h},
		&symbolStep{want: prof.SymbolPath, j: j},
	}
	if prof.InstallDTrace {
		s = append(s, &installStep{p: p, msi: msi, j: j})
	}
	if prof.VBS {
		s = append(s, &regStep{sid: stepVBS, desc: `DeviceGuard\EnableVirtualizationBasedSecurity (fbt provider)`, key: deviceGuardKey, name: "EnableVirtualizationBasedSecurity", want: host.DWORD(1), reboot: true, bootConfig: true, h: h})
	}
	if prof.DTraceBCD {
		s = append(s, &bcdStep{h: h})
	}
	return s
}

// stepByID rebuilds the step that journal record r belongs to, for revert.
// Revert must not depend on the current profile: the one applied may differ.
func (p *Provisioner) stepByID(id string, j *journal) (step, error) {
	for _, s := range p.steps(profile.Profile{InstallDTrace: true, VBS: true, DTraceBCD: true}, j, nil) {
		if s.id() == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("journal names unknown step %q", id)
}

// changesBoot says whether a step changes what BitLocker measures at the
// next boot: the boot configuration, or VBS. Other steps that need a reboot
// (a value read at boot) do not make a reboot with BitLocker on unsafe.
func changesBoot(s step) bool {
	switch s := s.(type) {
	case *bcdStep:
		return true
	case *regStep:
		return s.reboot && s.bootConfig
	}
	return s.needsReboot()
}
