// Package sim is the simulated Windows machine behind host.Host, used by the
// agent's development mode and by tests on Linux.
//
// It exists so that the agent code above host.Host is exactly the code that
// runs on Windows: the simulation must therefore behave like the real
// registry where the agent can observe it (typed values, case-insensitive
// names, keys created on write, "not found" errors) and keep its state across
// agent restarts the way a machine does. Nothing outside this package and the
// agent's main should know it is in use.
package sim

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/livedump/livedump/agent/host"
)

// StateFile is the name of the registry file inside Config.StateDir, exported
// so that tests and operators can find (and inspect) the simulated machine.
const StateFile = "registry.json"

// Config describes the simulated machine. Every field except StateDir only
// shapes the machine's first boot: once StateDir holds a registry, that
// registry wins, as a real machine's registry wins over its installation
// media. Use a fresh StateDir to get a different machine.
type Config struct {
	// StateDir holds the persisted registry; it is created if missing.
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
	path string

	mu   sync.Mutex
	keys map[string]*key // by folded path
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
// Windows 11 registry on first use so that a development agent starts on a
// believable machine without any setup.
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
		path: filepath.Join(cfg.StateDir, StateFile),
		keys: make(map[string]*key),
	}
	data, err := os.ReadFile(h.path)
	switch {
	case err == nil:
		if err := h.load(data); err != nil {
			return nil, fmt.Errorf("sim: %s: %w", h.path, err)
		}
		return h, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("sim: %w", err)
	}
	if err := seed(h, cfg); err != nil {
		return nil, fmt.Errorf("sim: seeding registry: %w", err)
	}
	if err := h.save(); err != nil {
		return nil, err
	}
	return h, nil
}

// withDefaults fills and checks cfg. Bad values are refused even when the
// registry already exists, so a typo in a flag is never silently ignored.
func withDefaults(cfg Config) (Config, error) {
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

// StatePath returns the registry file, so that callers can report where the
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

// SetValue stores the value and persists the whole registry before
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
	k, created := h.createKey(norm)
	f := fold(name)
	old, existed := k.values[f]
	if existed {
		k.values[f] = &entry{name: old.name, value: canonical(v)}
	} else {
		k.values[f] = &entry{name: name, value: canonical(v)}
	}
	if err := h.save(); err != nil {
		if existed {
			k.values[f] = old
		} else {
			delete(k.values, f)
		}
		for _, c := range created {
			delete(h.keys, c)
		}
		return err
	}
	return nil
}

// DeleteValue removes the value and persists the registry; like SetValue it
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
	f := fold(name)
	old := k.values[f]
	if old == nil {
		return fmt.Errorf("registry key %s value %s: %w", host.Quote(k.path), host.Quote(host.DisplayName(name)), host.ErrNotExist)
	}
	delete(k.values, f)
	if err := h.save(); err != nil {
		k.values[f] = old
		return err
	}
	return nil
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

// fileFormat is the on-disk registry. It is JSON, sorted and indented so a
// developer can read and diff the simulated machine's state; values carry
// their Windows type name so the file reads like a .reg export.
type fileFormat struct {
	Format int       `json:"format"`
	Keys   []fileKey `json:"keys"`
}

type fileKey struct {
	Key    string      `json:"key"`
	Values []fileValue `json:"values,omitempty"`
}

type fileValue struct {
	Name string          `json:"name"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// formatVersion lets a later agent refuse, rather than misread, a file
// written by a different layout.
const formatVersion = 1

// save writes the registry to a temporary file and renames it over the old
// one, so a crash leaves either the old or the new registry, never half of
// one. The caller holds h.mu.
func (h *Host) save() error {
	data, err := h.encode()
	if err != nil {
		return fmt.Errorf("sim: encoding registry: %w", err)
	}
	dir := filepath.Dir(h.path)
	tmp, err := os.CreateTemp(dir, StateFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("sim: saving registry: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("sim: saving registry: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("sim: saving registry: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sim: saving registry: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sim: saving registry: %w", err)
	}
	if err := os.Rename(tmp.Name(), h.path); err != nil {
		return fmt.Errorf("sim: saving registry: %w", err)
	}
	// Make the rename itself durable; not every filesystem supports
	// syncing a directory, and the data is already safe, so errors are
	// ignored.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// encode serializes the registry in a stable order.
func (h *Host) encode() ([]byte, error) {
	ff := fileFormat{Format: formatVersion, Keys: make([]fileKey, 0, len(h.keys))}
	for _, k := range h.keys {
		fk := fileKey{Key: k.path}
		for _, e := range k.values {
			var data any
			switch e.value.Type {
			case host.String, host.ExpandString:
				data = e.value.Str
			case host.MultiString:
				data = e.value.Strs
			default:
				data = e.value.Num
			}
			raw, err := json.Marshal(data)
			if err != nil {
				return nil, err
			}
			fk.Values = append(fk.Values, fileValue{Name: e.name, Type: e.value.Type.String(), Data: raw})
		}
		sort.Slice(fk.Values, func(i, j int) bool { return fold(fk.Values[i].Name) < fold(fk.Values[j].Name) })
		ff.Keys = append(ff.Keys, fk)
	}
	sort.Slice(ff.Keys, func(i, j int) bool { return fold(ff.Keys[i].Key) < fold(ff.Keys[j].Key) })
	out, err := json.MarshalIndent(ff, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// load replaces the in-memory registry with data. It checks everything the
// write path checks, because the file may have been edited by hand and a
// value the real registry could not hold must not reach the agent.
func (h *Host) load(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ff fileFormat
	if err := dec.Decode(&ff); err != nil {
		return fmt.Errorf("corrupt registry file: %w", err)
	}
	if dec.More() {
		return errors.New("corrupt registry file: trailing data after the JSON object")
	}
	if ff.Format != formatVersion {
		return fmt.Errorf("registry file format %d, this agent reads format %d", ff.Format, formatVersion)
	}
	for i := range ff.Keys {
		norm, err := host.NormalizeKey(ff.Keys[i].Key)
		if err != nil {
			return err
		}
		ff.Keys[i].Key = norm
	}
	// Parents sort before their children, so each component takes the
	// spelling of the first key that names it, as when the keys were made.
	sort.SliceStable(ff.Keys, func(i, j int) bool { return fold(ff.Keys[i].Key) < fold(ff.Keys[j].Key) })
	seen := make(map[string]string)
	for _, fk := range ff.Keys {
		norm := fk.Key
		if prev, dup := seen[fold(norm)]; dup {
			return fmt.Errorf("registry key %s listed twice (also as %s)", host.Quote(norm), host.Quote(prev))
		}
		seen[fold(norm)] = norm
		k, _ := h.createKey(norm)
		for _, fv := range fk.Values {
			if err := host.ValidateValueName(fv.Name); err != nil {
				return fmt.Errorf("registry key %s: %w", host.Quote(norm), err)
			}
			v, err := decodeValue(fv)
			if err != nil {
				return fmt.Errorf("registry key %s value %s: %w", host.Quote(norm), host.Quote(host.DisplayName(fv.Name)), err)
			}
			f := fold(fv.Name)
			if _, dup := k.values[f]; dup {
				return fmt.Errorf("registry key %s value %s listed twice", host.Quote(norm), host.Quote(host.DisplayName(fv.Name)))
			}
			k.values[f] = &entry{name: fv.Name, value: v}
		}
	}
	return nil
}

// decodeValue parses one stored value, insisting that the data matches the
// declared type.
func decodeValue(fv fileValue) (host.Value, error) {
	t, err := host.ParseValueType(fv.Type)
	if err != nil {
		return host.Value{}, err
	}
	if len(fv.Data) == 0 {
		return host.Value{}, errors.New("missing data")
	}
	v := host.Value{Type: t}
	switch t {
	case host.String, host.ExpandString:
		err = json.Unmarshal(fv.Data, &v.Str)
	case host.MultiString:
		err = json.Unmarshal(fv.Data, &v.Strs)
	default:
		err = json.Unmarshal(fv.Data, &v.Num)
	}
	if err != nil {
		return host.Value{}, fmt.Errorf("%s data %s: %w", t, fv.Data, err)
	}
	if err := v.Validate(); err != nil {
		return host.Value{}, err
	}
	return canonical(v), nil
}
