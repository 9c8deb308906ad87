package sim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/livedump/livedump/agent/host"
)

// machine is everything about the simulated Windows machine that is not the
// registry or the C: drive's files: what the boot manager stores, what was in
// force at the last boot, and the state of the volumes and installed
// products. It is copied whole before a change (see clone) so that a change
// that cannot be persisted is undone in one assignment.
type machine struct {
	bootTime time.Time
	// bcdStored is what `bcdedit /enum` shows; bcdBoot is what the
	// running kernel was started with.
	bcdStored, bcdBoot host.BCDValue
	vbsCapable         bool
	vbs                host.VBSStatus // decided at the last boot
	// hvci is memory integrity running, decided at the last boot.
	hvci bool
	// noBitLocker: the BitLocker feature is not installed (Server).
	noBitLocker bool
	volumes     map[string]*volume
	products    map[string]*product // by folded product name
	reboot      *rebootRequest      // nil: none scheduled
	// recovery is set when a boot stopped at the BitLocker recovery
	// screen; such a machine does not boot again in the simulation.
	recovery bool
}

// volume is one BitLocker volume. Protection is on when the volume is
// encrypted and not suspended; suspendedBoots counts the reboots left before
// protection resumes by itself (Suspend-BitLocker -RebootCount).
type volume struct {
	encrypted      bool
	suspendedBoots int
}

func (v *volume) status() host.BitLockerStatus {
	if v.encrypted && v.suspendedBoots == 0 {
		return host.BitLockerOn
	}
	return host.BitLockerOff
}

// product is an installed MSI product with what its installation created,
// so that uninstalling removes exactly that, as Windows Installer does from
// its own records rather than from the package.
type product struct {
	name, version string
	code          string   // ProductCode, the name of its Uninstall subkey
	files         []string // Windows paths
	dirs          []string // directories the installation created, parents first
}

// rebootRequest is a restart scheduled by `shutdown /r /t N /c message`.
type rebootRequest struct {
	requested, due time.Time
	message        string
}

func (m *machine) clone() *machine {
	c := *m
	c.volumes = make(map[string]*volume, len(m.volumes))
	for k, v := range m.volumes {
		vv := *v
		c.volumes[k] = &vv
	}
	c.products = make(map[string]*product, len(m.products))
	for k, p := range m.products {
		pp := *p
		pp.files = slices.Clone(p.files)
		pp.dirs = slices.Clone(p.dirs)
		c.products[k] = &pp
	}
	if m.reboot != nil {
		r := *m.reboot
		c.reboot = &r
	}
	return &c
}

// systemVolume is the volume Windows boots from: its BitLocker protector is
// the one that measures the boot configuration.
const systemVolume = "C:"

// firstBoot is the state of a freshly installed machine that has just booted
// for the first time.
func firstBoot(h *Host, cfg Config) *machine {
	m := &machine{
		bootTime:    h.clock.Now().UTC(),
		vbsCapable:  !cfg.NoVBS,
		volumes:     map[string]*volume{systemVolume: {encrypted: cfg.BitLocker}},
		products:    map[string]*product{},
		noBitLocker: cfg.NoBitLockerFeature,
	}
	m.vbs, m.hvci = h.vbsAtBoot(m)
	return m
}

// mutate applies change to a copy of the machine state and persists it. If
// change fails, or the state cannot be saved, the old state stays in force
// (undo, if change returned one, takes back what it did outside the machine
// struct), so memory never runs ahead of disk. The caller holds h.mu.
func (h *Host) mutate(change func(m *machine) (undo func(), err error)) error {
	old := h.m
	h.m = old.clone()
	undo, err := change(h.m)
	if err == nil {
		err = h.save()
	}
	if err != nil {
		h.m = old
		if undo != nil {
			undo()
		}
		return err
	}
	return nil
}

// BCDDtrace returns the dtrace element as stored, which is what
// `bcdedit /enum {current}` shows: a change is visible at once even though the
// running kernel only sees it after the next boot.
func (h *Host) BCDDtrace(ctx context.Context) (host.BCDValue, error) {
	if err := ctxErr(ctx); err != nil {
		return host.BCDValue{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m.bcdStored, nil
}

// SetBCDDtrace stores the dtrace element; it takes effect at the next boot.
func (h *Host) SetBCDDtrace(ctx context.Context, on bool) error {
	return h.setBCD(ctx, host.BCDValue{Present: true, On: on})
}

// DeleteBCDDtrace removes the dtrace element; like bcdedit /deletevalue on
// Windows it fails when the element is not set, so a revert that thinks it
// has something to undo learns that it has not.
func (h *Host) DeleteBCDDtrace(ctx context.Context) error {
	return h.setBCD(ctx, host.BCDValue{})
}

// setBCD stores v as the dtrace element. Removing an element that is not
// there fails with bcdedit's words for ERROR_NOT_FOUND (0x80070490).
func (h *Host) setBCD(ctx context.Context, v host.BCDValue) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !v.Present && !h.m.bcdStored.Present {
		return errors.New("sim: bcdedit /deletevalue {current} dtrace: An error occurred while attempting to delete the specified data element. Element not found.")
	}
	return h.mutate(func(m *machine) (func(), error) {
		m.bcdStored = v
		return nil, nil
	})
}

// DtraceDriverLoaded reports whether the running kernel was booted with the
// dtrace element on, which is what decides on Windows whether the DTrace
// driver is loaded. The simulated dtrace.exe uses it to refuse to start the
// way the real one does ("DTrace device not available on system").
func (h *Host) DtraceDriverLoaded() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m.bcdBoot.Present && h.m.bcdBoot.On
}

// VBSStatus reports what was decided at the last boot, not what the registry
// asks for now, because that is what Win32_DeviceGuard reports.
func (h *Host) VBSStatus(ctx context.Context) (host.VBSStatus, error) {
	if err := ctxErr(ctx); err != nil {
		return host.VBSStatusNone, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m.vbs, nil
}

// vbsAtBoot is the VBS and memory integrity state a boot arrives at. VBS
// runs when the registry asks for it (EnableVirtualizationBasedSecurity
// DWORD 1, nothing else) or when memory integrity is asked for
// (HypervisorEnforcedCodeIntegrity\Enabled DWORD 1), which runs inside VBS
// and needs no separate switch, and the hardware can; "enabled, not
// running" when asked but the hardware cannot. Memory integrity runs only
// where VBS does. The caller holds h.mu.
func (h *Host) vbsAtBoot(m *machine) (host.VBSStatus, bool) {
	on := func(key, name string) bool {
		e := h.lookup(key, name)
		return e != nil && e.value.Type == host.DWord && e.value.Num == 1
	}
	hvci := on(host.HVCIKey, host.HVCIValue)
	if !on(deviceGuardKey, "EnableVirtualizationBasedSecurity") && !hvci {
		return host.VBSOff, false
	}
	if !m.vbsCapable {
		return host.VBSEnabled, false
	}
	return host.VBSRunning, hvci
}

// SecurityServicesRunning reports the VBS services decided at the last
// boot: memory integrity (2) when it runs. Win32_DeviceGuard exists on every
// Windows the simulation models, so it is always reported.
func (h *Host) SecurityServicesRunning(ctx context.Context) (host.SecurityServices, error) {
	if err := ctxErr(ctx); err != nil {
		return host.SecurityServices{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := host.SecurityServices{Reported: true, Running: []int{}}
	if h.m.hvci {
		s.Running = append(s.Running, host.SecurityServiceHVCI)
	}
	return s, nil
}

// HVCIRunning reports whether memory integrity runs since the last boot.
func (h *Host) HVCIRunning() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m.hvci
}

// volumePattern is the only volume spelling accepted, the one WMI's
// DriveLetter property uses; mount-point paths and lower case are refused
// rather than guessed at.
var volumePattern = regexp.MustCompile(`^[A-Z]:$`)

// checkVolume returns the volume, or an error naming the volume so that the
// operator sees which one the agent asked about.
func (h *Host) checkVolume(vol string) (*volume, error) {
	if !volumePattern.MatchString(vol) {
		return nil, fmt.Errorf("sim: BitLocker volume %s: want a drive letter such as \"C:\"", host.Quote(vol))
	}
	v := h.m.volumes[vol]
	if v == nil {
		return nil, fmt.Errorf("sim: BitLocker volume %s: no such volume", host.Quote(vol))
	}
	return v, nil
}

// BitLockerStatus reports On only for an encrypted volume whose protection
// is not suspended, as GetProtectionStatus does.
func (h *Host) BitLockerStatus(ctx context.Context, vol string) (host.BitLockerStatus, error) {
	if err := ctxErr(ctx); err != nil {
		return host.BitLockerUnknown, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.checkVolume(vol)
	if err != nil {
		return host.BitLockerUnknown, err
	}
	if h.m.noBitLocker {
		// No WMI namespace: the Windows host reads that as off
		// (host.ParseBitLockerStatusJSON).
		return host.BitLockerOff, nil
	}
	return v.status(), nil
}

// MaxSuspendReboots is the largest reboot count Suspend-BitLocker accepts.
const MaxSuspendReboots = 15

// SuspendBitLocker suspends protection for rebootCount boots, after which
// it resumes by itself. Windows also accepts 0 ("until resumed by hand"),
// which the simulation refuses: the agent must never leave a disk
// unprotected indefinitely. Suspending again replaces the count, as on
// Windows. A volume that is not encrypted has no protector to suspend and
// fails as on Windows.
func (h *Host) SuspendBitLocker(ctx context.Context, vol string, rebootCount int) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if rebootCount < 1 || rebootCount > MaxSuspendReboots {
		return fmt.Errorf("sim: Suspend-BitLocker %s: reboot count %d is outside 1..%d", vol, rebootCount, MaxSuspendReboots)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.checkVolume(vol)
	if err != nil {
		return err
	}
	if h.m.noBitLocker {
		return fmt.Errorf("sim: Suspend-BitLocker %s: The term 'Suspend-BitLocker' is not recognized as the name of a cmdlet (the BitLocker feature is not installed)", vol)
	}
	if !v.encrypted {
		// FVE_E_NOT_ENCRYPTED.
		return fmt.Errorf("sim: Suspend-BitLocker %s: BitLocker Drive Encryption is not enabled on this drive (0x80310001)", vol)
	}
	return h.mutate(func(m *machine) (func(), error) {
		m.volumes[vol].suspendedBoots = rebootCount
		return nil, nil
	})
}

// BootTime returns when the machine last booted.
func (h *Host) BootTime(ctx context.Context) (time.Time, error) {
	if err := ctxErr(ctx); err != nil {
		return time.Time{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m.bootTime, nil
}

// Limits of `shutdown /r`: /c takes at most 512 characters. Windows accepts
// delays of up to ten years; nothing the agent does needs more than a few
// minutes of warning, so a longer delay is a bug worth refusing.
const (
	MaxRebootDelay   = 10 * time.Minute
	MaxRebootMessage = 512
)

// Reboot schedules a restart and returns, as `shutdown /r /t N /c message`
// does. The restart happens in RunService when the delay has elapsed on the
// machine's clock, or at the next New if no RunService is watching. Like
// Windows it refuses a second request while one is scheduled
// (ERROR_SHUTDOWN_IS_SCHEDULED), because an agent that asks twice has lost
// track of what it did.
func (h *Host) Reboot(ctx context.Context, delay time.Duration, message string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if delay < 0 || delay > MaxRebootDelay {
		return fmt.Errorf("sim: reboot delay %v is outside 0..%v", delay, MaxRebootDelay)
	}
	if n := utf8.RuneCountInString(message); n > MaxRebootMessage {
		return fmt.Errorf("sim: reboot message is %d characters, at most %d are allowed", n, MaxRebootMessage)
	}
	if !utf8.ValidString(message) || strings.IndexByte(message, 0) >= 0 {
		return errors.New("sim: reboot message is not valid text")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m.reboot != nil {
		return fmt.Errorf("sim: shutdown /r: A system shutdown has already been scheduled.(1190), due at %s", h.m.reboot.due.Format(time.RFC3339))
	}
	now := h.clock.Now().UTC()
	err := h.mutate(func(m *machine) (func(), error) {
		m.reboot = &rebootRequest{requested: now, due: now.Add(delay), message: message}
		return nil, nil
	})
	if err != nil {
		return err
	}
	select {
	case h.wake <- struct{}{}:
	default: // a signal is already waiting
	}
	return nil
}

// ErrRecoveryRequired is wrapped by the error of a boot that stopped at the
// BitLocker recovery screen. On a real machine someone would have to type the
// 48-digit recovery key at the console; provisioning exists to never get
// there, and the simulation makes that mistake loud.
var ErrRecoveryRequired = errors.New("BitLocker recovery key required: the boot configuration changed while BitLocker protection was on")

// RecoveryRequired reports whether the last boot stopped at the BitLocker
// recovery screen.
func (h *Host) RecoveryRequired() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m.recovery
}

// Boot restarts the machine now, whatever is scheduled: it is a power cycle,
// for tests and for RunService. It does not stop anything running on the
// machine; RunService does that before it calls Boot.
func (h *Host) Boot() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.boot()
}

// boot is one Windows boot. The boot manager measures the boot
// configuration first: with BitLocker protecting the system volume, a dtrace
// element different from the last boot's makes the TPM refuse the key, and
// the machine stops at the recovery screen. Otherwise the kernel starts with
// the stored configuration, VBS starts if the registry asks for it, each
// suspended BitLocker volume uses up one reboot of its suspension, pending
// file renames are done, and the scheduled restart is over. The caller holds
// h.mu.
func (h *Host) boot() error {
	if h.m.recovery {
		return fmt.Errorf("sim: boot: %w", ErrRecoveryRequired)
	}
	if v := h.m.volumes[systemVolume]; v != nil && v.status() == host.BitLockerOn && h.m.bcdStored != h.m.bcdBoot {
		err := h.mutate(func(m *machine) (func(), error) {
			m.recovery = true
			m.reboot = nil
			return nil, nil
		})
		if err != nil {
			return err
		}
		return fmt.Errorf("sim: boot: dtrace element %s at the last boot, %s now on %s: %w", h.m.bcdBoot, h.m.bcdStored, systemVolume, ErrRecoveryRequired)
	}
	return h.mutate(func(m *machine) (func(), error) {
		m.bootTime = h.clock.Now().UTC()
		m.bcdBoot = m.bcdStored
		m.vbs, m.hvci = h.vbsAtBoot(m)
		for _, v := range m.volumes {
			if v.suspendedBoots > 0 {
				v.suspendedBoots--
			}
		}
		m.reboot = nil
		return h.removeValue(sessionManagerKey, pendingRenamesValue), nil
	})
}

// pendingReboot returns when the scheduled restart is due, if one is.
func (h *Host) pendingReboot() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m.reboot == nil {
		return time.Time{}, false
	}
	return h.m.reboot.due, true
}

// RunService plays the Windows service control manager for the agent's
// service on h. It calls run with a context that it cancels when a restart
// requested through h.Reboot comes due on the machine's clock, as the SCM
// stops services at shutdown; once run has returned it boots the machine and
// calls run again with a fresh context, as Windows starts the service after
// the reboot.
//
// It returns when run returns on its own (with run's error, nil for a
// service that simply stopped), when a boot fails (the error wraps
// ErrRecoveryRequired when BitLocker stopped it), or when ctx ends: then it
// cancels run's context, waits for run, and returns ctx.Err(), or run's error
// if that is something other than the cancellation. An error that run
// returns while being stopped for a reboot does not stop the reboot, as it
// would not on Windows, but is returned once the machine has booted. Only
// one RunService may run on a Host at a time.
func RunService(ctx context.Context, h *Host, run func(context.Context) error) error {
	h.mu.Lock()
	if h.running {
		h.mu.Unlock()
		return errors.New("sim: RunService is already running on this machine")
	}
	h.running = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running = false
		h.mu.Unlock()
	}()

	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rebooted, runErr := serveOnce(ctx, h, run)
		if !rebooted {
			return runErr
		}
		if err := h.Boot(); err != nil {
			return errors.Join(err, runErr)
		}
		if runErr != nil {
			return runErr
		}
	}
}

// serveOnce runs the service for one boot of the machine. It reports whether
// it stopped the service for a reboot that is now due, and the error to
// return.
func serveOnce(ctx context.Context, h *Host, run func(context.Context) error) (rebooted bool, err error) {
	child, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(child) }()

	// stop cancels the service and waits for it, keeping only an error
	// that says more than "you stopped me".
	stop := func() error {
		cancel()
		err := <-done
		if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return err
	}
	for {
		var due <-chan time.Time
		var timer interface{ Stop() bool }
		if at, ok := h.pendingReboot(); ok {
			d := h.clock.Until(at)
			if d <= 0 {
				return true, stop()
			}
			t := h.clock.NewTimer(d)
			due, timer = t.Chan(), t
		}
		select {
		case err := <-done:
			stopTimer(timer)
			// run may notice ctx's end before this select does.
			if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
				return false, ctx.Err()
			}
			return false, err
		case <-h.wake:
			stopTimer(timer) // look at the schedule again
		case <-due:
			// Boot may have been called directly in the meantime,
			// and the machine must not restart twice for one request.
			if _, ok := h.pendingReboot(); ok {
				return true, stop()
			}
		case <-ctx.Done():
			stopTimer(timer)
			if err := stop(); err != nil {
				return false, err
			}
			return false, ctx.Err()
		}
	}
}

func stopTimer(t interface{ Stop() bool }) {
	if t != nil {
		t.Stop()
	}
}

// sortedVolumes lists volume names in order, for a stable state file.
func sortedVolumes(m *machine) []string {
	return slices.Sorted(maps.Keys(m.volumes))
}
