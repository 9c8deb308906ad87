// Package sim is the simulated Windows machine behind host.Host, used by the
// agent's development mode and by tests on Linux.
//
// It exists so that the agent code above host.Host is exactly the code that
// runs on Windows: the simulation must therefore behave like Windows wherever
// the agent can observe it. The registry has typed values, case-insensitive
// names, keys created on write and "not found" errors; the boot configuration
// and VBS change only at a reboot; BitLocker demands its recovery key when
// the boot configuration changes under an unsuspended protector; msiexec
// answers with its real exit codes and writes files onto a simulated C:
// drive; and all of it survives agent restarts the way a machine's state
// does. Nothing outside this package and the agent's main should know it is
// in use.
//
// A simulated machine lives in Config.StateDir: the file StateFile holds the
// registry and the rest of the machine's state, and the directory DriveDir
// is its C: drive.
package sim

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/agent/host"
)

// StateFile is the name of the machine's state file inside Config.StateDir,
// exported so that tests and operators can find (and inspect) the simulated
// machine. It keeps its historical name although it now holds more than the
// registry, so that an old state directory is refused by its format version
// instead of being silently replaced by a fresh machine.
const StateFile = "registry.json"

// DriveDir is the directory inside Config.StateDir that holds the simulated
// C: drive; see Host.HostPath.
const DriveDir = "drive_c"

// Config describes the simulated machine. Every field except StateDir and
// Clock only shapes the machine's first boot: once StateDir holds a machine,
// its stored state wins, as a real machine's disk wins over its installation
// media. Use a fresh StateDir to get a different machine.
type Config struct {
	// StateDir holds the persisted machine; it is created if missing.
	StateDir string
	// Hostname is the DNS host name; empty means "SIM-" plus six random
	// characters, so that several simulated agents differ by default.
	Hostname string
	// Build is CurrentBuildNumber; empty means "22631" (Windows 11 23H2).
	Build string
	// UBR is the update build revision; zero means 4460.
	UBR uint32
	// Edition is EditionID; empty means "Enterprise" (or "ServerDatacenter"
	// when InstallationType is a server one).
	Edition string
	// InstallationType is "Client" (the default), "Server" or "Server Core".
	InstallationType string
	// BitLocker makes C: an encrypted volume with protection on, as on most
	// managed laptops. The zero value is an unencrypted C:.
	BitLocker bool
	// NoVBS makes the machine unable to run virtualization-based security
	// (no virtualization extensions, or Hyper-V unavailable), so that asking
	// for VBS leaves it "enabled, not running". It is phrased negatively so
	// that the zero value is a capable machine, which current hardware is.
	NoVBS bool
	// NoSecureBoot turns Secure Boot off in the firmware
	// (UEFISecureBootEnabled 0). The zero value is Secure Boot on, as on
	// every machine Windows 11 installs on; real users report that the
	// DTrace driver then fails to load (DTrace-on-Windows issue #64), which
	// the simulation does not model: it warns, and the agent's driver check
	// after the reboot is what tells.
	NoSecureBoot bool
	// HVCI turns memory integrity (hypervisor-enforced code integrity) on:
	// HypervisorEnforcedCodeIntegrity\Enabled = 1, running from the first
	// boot on a VBS-capable machine. Microsoft turns it on by default on
	// clean installs of Windows 11 on compatible hardware
	// (https://learn.microsoft.com/en-us/windows-hardware/design/device-experiences/oem-hvci-enablement);
	// it is off by default here so that development mode works. While it
	// runs, the simulated dtrace fails with "DTrace device not available on
	// system", the harsher reading of DTrace-on-Windows issue #64.
	HVCI bool
	// NoBitLockerFeature makes a Windows Server without the BitLocker
	// feature (not installed by default on Server): no WMI namespace, so
	// BitLocker reads off and Suspend-BitLocker does not exist. It cannot
	// be combined with BitLocker.
	NoBitLockerFeature bool
	// FreeBytes is the free space of the simulated C: drive; zero means
	// 1 TiB. MemoryBytes is its installed memory; zero means 16 GiB. Neither
	// is persisted.
	FreeBytes   uint64
	MemoryBytes uint64
	// DTracePath is the machine's dtrace executable, the agent's
	// dtrace_path (--dtrace-path): it replaces the simulated dtrace and
	// runs whatever is on the simulated C: drive (cmd/dtrace-sim, or a
	// test's fake). Empty means the simulated dtrace: this program itself,
	// re-executed with LIVEDUMP_RUN_AS=dtrace-sim, which the livedump
	// binaries honour so dev mode needs no second binary, run only when
	// C: has a dtrace.exe. It is not persisted.
	DTracePath string
	// Clock is the machine's clock, read for boot times and reboot delays;
	// nil means the real clock. Tests pass a fake one to make reboots
	// deterministic. It is not persisted.
	Clock clockwork.Clock
}

// Defaults for Config, exported so tests can assert against them instead of
// repeating magic numbers.
const (
	// DefaultBuild is Windows 11 23H2, a current client release on which
	// DTrace for Windows is supported.
	DefaultBuild = "22631"
	// DefaultUBR is a 2024 cumulative update of that release.
	DefaultUBR = 4460
	// DefaultEdition is the edition fleets usually run.
	DefaultEdition = "Enterprise"
	// DefaultInstallationType makes the machine a client, not a server.
	DefaultInstallationType = "Client"
)

// Host is a simulated Windows machine. It is safe for concurrent use; one
// process at a time may own a StateDir, as one OS owns one disk.
type Host struct {
	dir   string // Config.StateDir
	path  string // the state file
	clock clockwork.Clock
	// dtrace is the simulated dtrace executable; "" means os.Executable.
	dtrace       string
	free, memory uint64
	// wake tells a running RunService that a reboot was requested, so it
	// can arm its timer. It has room for one signal; more would say nothing
	// new.
	wake chan struct{}

	// msiexecRuns counts msiexec runs, install and uninstall, whatever
	// their outcome: what tests check to prove a package was never run.
	msiexecRuns atomic.Int64

	mu      sync.Mutex
	keys    map[string]*key // by folded path
	m       *machine
	running bool // a RunService is active
}

var _ host.Host = (*Host)(nil)

// key is one registry key. Keys and value names are stored in the case they
// were first written and looked up folded, as Windows does.
type key struct {
	path   string // canonical case, e.g. HKLM\SOFTWARE\Microsoft
	values map[string]*entry
}

type entry struct {
	name  string
	value host.Value
}

// fold is the comparison form of a key or value name. Validation restricts
// names to ASCII, where Windows' upcase table and strings.ToUpper agree.
func fold(s string) string { return strings.ToUpper(s) }

// New opens the simulated machine in cfg.StateDir, creating and seeding a
// Windows 11 machine on first use so that a development agent starts on a
// believable machine without any setup.
//
// Opening an existing machine is also the moment it catches up on a reboot
// that was requested while no RunService watched it and whose delay has
// elapsed: the machine rebooted while nobody was looking, so the new agent
// process finds it freshly booted. A machine stuck at the BitLocker recovery
// screen cannot be opened at all; the error wraps ErrRecoveryRequired.
func New(cfg Config) (*Host, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("sim: Config.StateDir is required")
	}
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sim: state directory: %w", err)
	}
	h := &Host{
		dir:    cfg.StateDir,
		path:   filepath.Join(cfg.StateDir, StateFile),
		clock:  cfg.Clock,
		dtrace: cfg.DTracePath,
		free:   cfg.FreeBytes,
		memory: cfg.MemoryBytes,
		wake:   make(chan struct{}, 1),
		keys:   make(map[string]*key),
	}
	data, err := os.ReadFile(h.path)
	switch {
	case err == nil:
		if err := h.load(data); err != nil {
			return nil, fmt.Errorf("sim: %s: %w", h.path, err)
		}
		return h, h.resume()
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("sim: %w", err)
	}
	if err := seed(h, cfg); err != nil {
		return nil, fmt.Errorf("sim: seeding registry: %w", err)
	}
	if err := seedDrive(h.driveRoot(), cfg); err != nil {
		return nil, fmt.Errorf("sim: seeding drive C: %w", err)
	}
	h.m = firstBoot(h, cfg)
	if err := h.save(); err != nil {
		return nil, err
	}
	return h, nil
}

// resume brings a loaded machine to where real time says it is: stuck in
// recovery, or rebooted if a scheduled restart came due while no agent ran.
func (h *Host) resume() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m.recovery {
		return fmt.Errorf("sim: %s: %w", h.dir, ErrRecoveryRequired)
	}
	if r := h.m.reboot; r != nil && !h.clock.Now().Before(r.due) {
		if err := h.boot(); err != nil {
			return fmt.Errorf("sim: %s: performing the reboot requested at %s: %w", h.dir, r.requested.Format("2006-01-02 15:04:05"), err)
		}
	}
	return nil
}

// withDefaults fills and checks cfg. Bad values are refused even when the
// machine already exists, so a typo in a flag is never silently ignored.
func withDefaults(cfg Config) (Config, error) {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Hostname == "" {
		name, err := randomHostname()
		if err != nil {
			return Config{}, err
		}
		cfg.Hostname = name
	}
	if err := checkHostname(cfg.Hostname); err != nil {
		return Config{}, err
	}
	if cfg.Build == "" {
		cfg.Build = DefaultBuild
	}
	if len(cfg.Build) > 6 || strings.Trim(cfg.Build, "0123456789") != "" {
		return Config{}, fmt.Errorf("sim: build %q is not a Windows build number", cfg.Build)
	}
	if cfg.UBR == 0 {
		cfg.UBR = DefaultUBR
	}
	if cfg.BitLocker && cfg.NoBitLockerFeature {
		return Config{}, errors.New("sim: BitLocker and NoBitLockerFeature: an encrypted volume needs the BitLocker feature")
	}
	if cfg.InstallationType == "" {
		cfg.InstallationType = DefaultInstallationType
	}
	switch cfg.InstallationType {
	case "Client", "Server", "Server Core":
	default:
		return Config{}, fmt.Errorf("sim: installation type %q: want Client, Server or Server Core", cfg.InstallationType)
	}
	if cfg.Edition == "" {
		cfg.Edition = DefaultEdition
		if isServer(cfg.InstallationType) {
			cfg.Edition = "ServerDatacenter"
		}
	}
	if err := host.ValidateValueName(cfg.Edition); err != nil {
		// The same charset as names is a simple sanity check for an ID.
		return Config{}, fmt.Errorf("sim: edition %q is not an edition ID", cfg.Edition)
	}
	return cfg, nil
}

// checkHostname applies Windows' rules for a DNS host name, so the simulated
// machine never has a name a real one could not.
func checkHostname(name string) error {
	if len(name) > 63 {
		return fmt.Errorf("sim: hostname %q is longer than 63 characters", name)
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("sim: hostname %q begins or ends with a hyphen", name)
	}
	digits := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case '0' <= c && c <= '9':
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '-':
			digits = false
		default:
			return fmt.Errorf("sim: hostname %q: character %q is not allowed (letters, digits, hyphen)", name, c)
		}
	}
	if digits {
		return fmt.Errorf("sim: hostname %q is all digits, which Windows refuses", name)
	}
	return nil
}

// randomHostname mimics Windows' generated names (DESKTOP-XXXXXXX) with a
// prefix that makes simulated agents obvious in the controller.
func randomHostname() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("sim: random hostname: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "SIM-" + string(b), nil
}

// StatePath returns the state file, so that callers can report where the
// simulated machine lives.
func (h *Host) StatePath() string { return h.path }

// Hostname returns the DNS host name the way GetComputerNameEx does on
// Windows: from the TCP/IP parameters (case preserved), falling back to the
// NetBIOS ComputerName.
func (h *Host) Hostname() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, loc := range [][2]string{{tcpipKey, "Hostname"}, {computerNameKey, "ComputerName"}} {
		if e := h.lookup(loc[0], loc[1]); e != nil && e.value.Type == host.String && e.value.Str != "" {
			return e.value.Str, nil
		}
	}
	return "", fmt.Errorf("sim: hostname: neither %s\\Hostname nor %s\\ComputerName is set", tcpipKey, computerNameKey)
}

// lookup finds a value by already-normalized key and name; nil if absent.
func (h *Host) lookup(norm, name string) *entry {
	k := h.keys[fold(norm)]
	if k == nil {
		return nil
	}
	return k.values[fold(name)]
}

// check validates a key and value name exactly as the Windows host does.
func check(key, name string) (string, error) {
	norm, err := host.NormalizeKey(key)
	if err != nil {
		return "", err
	}
	if err := host.ValidateValueName(name); err != nil {
		return "", err
	}
	return norm, nil
}

// GetValue returns a copy of the value so callers cannot alter the stored
// state behind the mutex.
func (h *Host) GetValue(key, name string) (host.Value, error) {
	norm, err := check(key, name)
	if err != nil {
		return host.Value{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.keys[fold(norm)]
	if k == nil {
		return host.Value{}, fmt.Errorf("registry key %s (value %s): key not found: %w", host.Quote(norm), host.Quote(host.DisplayName(name)), host.ErrNotExist)
	}
	e := k.values[fold(name)]
	if e == nil {
		return host.Value{}, fmt.Errorf("registry key %s value %s: %w", host.Quote(k.path), host.Quote(host.DisplayName(name)), host.ErrNotExist)
	}
	return canonical(e.value), nil
}

// KeyExists reports whether the key exists, whether or not it holds values:
// the pending-reboot markers Windows sets are empty keys.
func (h *Host) KeyExists(key string) (bool, error) {
	norm, err := host.NormalizeKey(key)
	if err != nil {
		return false, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.keys[fold(norm)]
	return ok, nil
}

// DeleteKey removes an empty key and persists the machine, undoing the
// removal if it cannot be persisted.
func (h *Host) DeleteKey(key string) error {
	norm, err := host.NormalizeKey(key)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	f := fold(norm)
	k := h.keys[f]
	if k == nil {
		return fmt.Errorf("registry key %s: %w", host.Quote(norm), host.ErrNotExist)
	}
	if len(k.values) > 0 {
		return fmt.Errorf("registry key %s holds %d values: %w", host.Quote(k.path), len(k.values), host.ErrKeyNotEmpty)
	}
	for other := range h.keys {
		if strings.HasPrefix(other, f+`\`) {
			return fmt.Errorf("registry key %s has subkeys: %w", host.Quote(k.path), host.ErrKeyNotEmpty)
		}
	}
	delete(h.keys, f)
	if err := h.save(); err != nil {
		h.keys[f] = k
		return err
	}
	return nil
}

// SetValue stores the value and persists the whole machine before
// returning, so an acknowledged write survives an agent crash the way it
// survives one on Windows. If persisting fails the change is undone, keeping
// memory and disk in agreement.
func (h *Host) SetValue(key, name string, v host.Value) error {
	norm, err := check(key, name)
	if err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("registry key %s value %s: %w", host.Quote(norm), host.Quote(host.DisplayName(name)), err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	undo := h.putValue(norm, name, v)
	if err := h.save(); err != nil {
		undo()
		return err
	}
	return nil
}

// DeleteValue removes the value and persists the machine; like SetValue it
// undoes the change if it cannot be persisted.
func (h *Host) DeleteValue(key, name string) error {
	norm, err := check(key, name)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.keys[fold(norm)]
	if k == nil {
		return fmt.Errorf("registry key %s (value %s): key not found: %w", host.Quote(norm), host.Quote(host.DisplayName(name)), host.ErrNotExist)
	}
	if k.values[fold(name)] == nil {
		return fmt.Errorf("registry key %s value %s: %w", host.Quote(k.path), host.Quote(host.DisplayName(name)), host.ErrNotExist)
	}
	undo := h.removeValue(norm, name)
	if err := h.save(); err != nil {
		undo()
		return err
	}
	return nil
}

// SubKeys lists the direct subkeys of key in their stored spelling, sorted
// (Windows gives no order; sorting keeps the simulation deterministic).
func (h *Host) SubKeys(key string) ([]string, error) {
	norm, err := host.NormalizeKey(key)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	f := fold(norm)
	if h.keys[f] == nil {
		return nil, fmt.Errorf("registry key %s: key not found: %w", host.Quote(norm), host.ErrNotExist)
	}
	var out []string
	for other, k := range h.keys {
		if rest, ok := strings.CutPrefix(other, f+`\`); ok && !strings.Contains(rest, `\`) {
			out = append(out, k.path[strings.LastIndex(k.path, `\`)+1:])
		}
	}
	slices.Sort(out)
	return out, nil
}

// putValue writes an already validated value in memory only and returns how
// to take the write back, including any keys it had to create, so that every
// caller can undo a change that could not be persisted. The caller holds
// h.mu.
func (h *Host) putValue(norm, name string, v host.Value) (undo func()) {
	k, created := h.createKey(norm)
	f := fold(name)
	old, existed := k.values[f]
	if existed {
		k.values[f] = &entry{name: old.name, value: canonical(v)}
	} else {
		k.values[f] = &entry{name: name, value: canonical(v)}
	}
	return func() {
		if existed {
			k.values[f] = old
		} else {
			delete(k.values, f)
		}
		for _, c := range created {
			delete(h.keys, c)
		}
	}
}

// removeValue deletes a value in memory only, if present, and returns how to
// restore it. The caller holds h.mu.
func (h *Host) removeValue(norm, name string) (undo func()) {
	k := h.keys[fold(norm)]
	if k == nil {
		return func() {}
	}
	f := fold(name)
	old := k.values[f]
	if old == nil {
		return func() {}
	}
	delete(k.values, f)
	return func() { k.values[f] = old }
}

// createKey returns the key at norm, creating it and its missing parents. A
// new component is appended to its parent's stored spelling, so the first
// spelling of each component wins as on Windows. It returns the folded paths
// it created so a failed write can remove them again.
func (h *Host) createKey(norm string) (*key, []string) {
	parts := strings.Split(norm, `\`)
	canon := parts[0]
	var created []string
	var k *key
	for i := 1; i < len(parts); i++ {
		f := fold(strings.Join(parts[:i+1], `\`))
		k = h.keys[f]
		if k == nil {
			k = &key{path: canon + `\` + parts[i], values: make(map[string]*entry)}
			h.keys[f] = k
			created = append(created, f)
		}
		canon = k.path
	}
	return k, created
}

// canonical keeps only the data that belongs to v's type, with its own copy
// of any slice, so stored and returned values never alias caller memory and
// compare cleanly.
func canonical(v host.Value) host.Value {
	switch v.Type {
	case host.String, host.ExpandString:
		return host.Value{Type: v.Type, Str: v.Str}
	case host.MultiString:
		return host.Value{Type: v.Type, Strs: append([]string{}, v.Strs...)}
	default:
		return host.Value{Type: v.Type, Num: v.Num}
	}
}

// ctxErr is the first thing every method that stands for a Windows command
// checks: on Windows a cancelled context stops the command from starting, and
// the simulation must not do work the real machine would not have done.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}
