package dtracesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/livedump/livedump/sim"
)

// The simulated dtrace reads the simulated machine's state file directly
// and read-only, rather than through sim.New: opening a machine may write
// it (seeding a new one, performing a reboot that came due), and the
// machine belongs to the agent that started this process. dtrace.exe does
// not change the machine either; it only reads the boot state, the
// registry and the C: drive.

// dtraceExe is where the DTrace MSI installs dtrace.exe.
const dtraceExe = `C:\Program Files\DTrace\dtrace.exe`

// Registry locations read by the simulated kernel.
const (
	liveKernelReportsKey = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\LiveKernelReports`
	liveKernelReportsVal = "LiveKernelReportsPath"
	currentVersionKey    = `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`
	environmentKey       = `HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\Environment`
)

// machine is what the simulated dtrace knows of the simulated Windows
// machine it runs on.
type machine struct {
	dir          string // sim.Config.StateDir; "" for the local machine
	local        bool   // the Windows machine this process runs on (local_windows.go)
	driverLoaded bool   // the dtrace boot flag was on at the last boot
	// hvci is memory integrity running since the last boot: the driver
	// does not load then (the harsher reading of DTrace-on-Windows
	// issue #64, where users report "DTrace device not available on
	// system" until Device Guard is off).
	hvci     bool
	recovery bool // stopped at the BitLocker recovery screen
	bootTime time.Time
	values   map[string]regValue // by folded key + `\` + folded value name
}

type regValue struct {
	typ string // REG_SZ, REG_EXPAND_SZ, REG_DWORD, ...
	str string
	num uint64
}

// stateFile is the part of sim's state file that dtrace reads. Fields are
// matched by name; anything else in the file is ignored.
type stateFile struct {
	Format  int `json:"format"`
	Machine *struct {
		BootTime         time.Time `json:"boot_time"`
		BCDDtraceAtBoot  string    `json:"bcd_dtrace_at_boot"`
		RecoveryRequired bool      `json:"recovery_required"`
		HVCIRunning      bool      `json:"hvci_running"`
	} `json:"machine"`
	Keys []struct {
		Key    string `json:"key"`
		Values []struct {
			Name string          `json:"name"`
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"values"`
	} `json:"keys"`
}

// stateFormat is the state file format this reader understands.
const stateFormat = 2

// loadMachine reads the machine in dir without changing it.
func loadMachine(dir string) (*machine, error) {
	data, err := os.ReadFile(filepath.Join(dir, sim.StateFile))
	if err != nil {
		return nil, err
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, fmt.Errorf("%s: %w", sim.StateFile, err)
	}
	if sf.Format != stateFormat || sf.Machine == nil {
		return nil, fmt.Errorf("%s: format %d, this dtrace reads format %d", sim.StateFile, sf.Format, stateFormat)
	}
	m := &machine{
		dir:          dir,
		driverLoaded: sf.Machine.BCDDtraceAtBoot == "on",
		recovery:     sf.Machine.RecoveryRequired,
		hvci:         sf.Machine.HVCIRunning,
		bootTime:     sf.Machine.BootTime,
		values:       map[string]regValue{},
	}
	for _, k := range sf.Keys {
		for _, v := range k.Values {
			rv := regValue{typ: v.Type}
			switch v.Type {
			case "REG_SZ", "REG_EXPAND_SZ":
				if err := json.Unmarshal(v.Data, &rv.str); err != nil {
					return nil, fmt.Errorf("%s: %s\\%s: %w", sim.StateFile, k.Key, v.Name, err)
				}
			case "REG_DWORD", "REG_QWORD":
				if err := json.Unmarshal(v.Data, &rv.num); err != nil {
					return nil, fmt.Errorf("%s: %s\\%s: %w", sim.StateFile, k.Key, v.Name, err)
				}
			}
			m.values[regIndex(k.Key, v.Name)] = rv
		}
	}
	return m, nil
}

// regIndex folds a key and value name the way the registry compares them.
// The state file writes keys with the HKLM root.
func regIndex(key, name string) string {
	key = strings.ToUpper(key)
	if rest, ok := strings.CutPrefix(key, `HKEY_LOCAL_MACHINE\`); ok {
		key = `HKLM\` + rest
	}
	return key + `\` + strings.ToUpper(name)
}

func (m *machine) value(key, name string) (regValue, bool) {
	v, ok := m.values[regIndex(key, name)]
	return v, ok
}

func (m *machine) stringValue(key, name string) string {
	if v, ok := m.value(key, name); ok && (v.typ == "REG_SZ" || v.typ == "REG_EXPAND_SZ") {
		return v.str
	}
	return ""
}

// dtraceInstalled reports whether a dtrace.exe is on the simulated drive:
// the MSI's or the built-in one.
func (m *machine) dtraceInstalled() bool {
	if m.local {
		return localInstalled()
	}
	return m.fileExists(dtraceExe) || m.builtinDTrace()
}

// builtinDTrace reports whether the machine has Windows' own dtrace.exe in
// System32 (Windows Server 2025 and later), the build that takes -y.
func (m *machine) builtinDTrace() bool {
	return m != nil && !m.local && m.fileExists(m.systemRoot()+`\System32\dtrace.exe`)
}

func (m *machine) fileExists(win string) bool {
	p, err := hostPath(m.dir, win)
	if err != nil {
		return false
	}
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ncpu is NUMBER_OF_PROCESSORS from the machine's environment.
func (m *machine) ncpu() int {
	n, err := strconv.Atoi(m.stringValue(environmentKey, "NUMBER_OF_PROCESSORS"))
	if err != nil || n < 1 || n > 2048 {
		return 4
	}
	return n
}

// build is the Windows build number, for the dump header.
func (m *machine) build() uint32 {
	n, err := strconv.ParseUint(m.stringValue(currentVersionKey, "CurrentBuildNumber"), 10, 32)
	if err != nil {
		return 22631
	}
	return uint32(n)
}

// systemRoot is %SystemRoot%.
func (m *machine) systemRoot() string {
	if s := m.stringValue(currentVersionKey, "SystemRoot"); s != "" {
		return s
	}
	return `C:\WINDOWS`
}

// reportsDir is the Windows path live kernel dumps are written to:
// LiveKernelReportsPath when set (an NT path such as \??\C:\livedumps, or
// a DOS path, with %SystemRoot% expanded), otherwise
// %SystemRoot%\LiveKernelReports.
func (m *machine) reportsDir() string {
	p := m.stringValue(liveKernelReportsKey, liveKernelReportsVal)
	if p == "" {
		return m.systemRoot() + `\LiveKernelReports`
	}
	for _, v := range []string{"%SystemRoot%", "%windir%"} {
		for {
			i := strings.Index(strings.ToUpper(p), strings.ToUpper(v))
			if i < 0 {
				break
			}
			p = p[:i] + m.systemRoot() + p[i+len(v):]
		}
	}
	for _, prefix := range []string{`\??\`, `\DosDevices\`, `\GLOBAL??\`} {
		if len(p) >= len(prefix) && strings.EqualFold(p[:len(prefix)], prefix) {
			p = p[len(prefix):]
			break
		}
	}
	return strings.TrimRight(p, `\`)
}

// path is the file that holds the Windows path win on this machine.
func (m *machine) path(win string) (string, error) {
	if m.local {
		return localPath(win)
	}
	return hostPath(m.dir, win)
}

// reload reads the machine again (its registry may have changed).
func (m *machine) reload() (*machine, error) {
	if m.local {
		return localMachine()
	}
	return loadMachine(m.dir)
}

// hostPath maps a Windows path on the simulated C: drive to the file that
// holds it, with the rules of sim.Host.HostPath: C:\a\b is
// <dir>/drive_c/a/b; only C: exists; components are plain names.
func hostPath(dir, win string) (string, error) {
	if strings.IndexByte(win, '/') >= 0 || len(win) < 3 || win[1] != ':' || win[2] != '\\' {
		return "", fmt.Errorf("%q is not an absolute Windows path such as C:\\Windows", win)
	}
	if win[0] != 'C' && win[0] != 'c' {
		return "", fmt.Errorf("%q: the simulated machine has only drive C:", win)
	}
	parts := []string{dir, sim.DriveDir}
	if rest := win[3:]; rest != "" {
		for _, c := range strings.Split(rest, `\`) {
			if err := checkComponent(c); err != nil {
				return "", fmt.Errorf("%q: %w", win, err)
			}
			parts = append(parts, c)
		}
	}
	return filepath.Join(parts...), nil
}

// checkComponent applies sim's allow-list for path components.
func checkComponent(c string) error {
	if c == "" {
		return errors.New("empty path component")
	}
	if c == "." || strings.Contains(c, "..") {
		return fmt.Errorf("component %q is not allowed", c)
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !isIdentChar(b) && strings.IndexByte(" .-()", b) < 0 {
			return fmt.Errorf("character %q is not allowed", b)
		}
	}
	if c[0] == ' ' || c[len(c)-1] == ' ' || c[len(c)-1] == '.' {
		return fmt.Errorf("component %q begins with a space or ends with a space or dot", c)
	}
	return nil
}

// isWindowsPath reports whether p is an absolute Windows path (X:\...).
func isWindowsPath(p string) bool {
	return len(p) >= 3 && p[1] == ':' && p[2] == '\\' && (('a' <= p[0] && p[0] <= 'z') || ('A' <= p[0] && p[0] <= 'Z'))
}
