package sim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/livedump/livedump/agent/host"
)

// maxPath is Windows' MAX_PATH including the drive. Long paths exist on
// Windows 10+, but msiexec and much of the tooling the agent drives still
// stop at MAX_PATH, so a longer path would work here and fail there.
const maxPath = 260

// winPath is a validated Windows path on C:, as its components below the
// drive root; nil is `C:\` itself.
type winPath []string

// String spells the path the way Windows prints it.
func (w winPath) String() string { return `C:\` + strings.Join(w, `\`) }

// parseWinPath validates a Windows path on the simulated C: drive. It is an
// allow-list, like registry keys, because paths reach the simulation from
// package manifests and the registry, and anything that could escape the
// drive directory or mean something else on Linux must be refused, not
// interpreted. Components are kept as given: the simulated drive is
// case-sensitive where NTFS is not, so the agent must spell a path the way it
// was created (which it does, reading paths back from the registry).
func parseWinPath(p string) (winPath, error) {
	if len(p) > maxPath {
		return nil, fmt.Errorf("path %s: longer than %d characters", host.Quote(p), maxPath)
	}
	if strings.IndexByte(p, '/') >= 0 {
		return nil, fmt.Errorf("path %s: Windows paths use backslashes", host.Quote(p))
	}
	if len(p) < 3 || p[1] != ':' || p[2] != '\\' {
		return nil, fmt.Errorf(`path %s: not an absolute path such as C:\Windows`, host.Quote(p))
	}
	if p[0] != 'C' && p[0] != 'c' {
		return nil, fmt.Errorf("path %s: the simulated machine has only drive C:", host.Quote(p))
	}
	rest := p[3:]
	if rest == "" {
		return nil, nil
	}
	comps := strings.Split(rest, `\`)
	for _, c := range comps {
		if err := checkComponent(c); err != nil {
			return nil, fmt.Errorf("path %s: %w", host.Quote(p), err)
		}
	}
	return comps, nil
}

// checkComponent applies Windows' own rules on top of the allow-list: it
// silently strips trailing dots and spaces, and maps reserved device names
// (NUL, COM1, ...) to devices in every directory, so such names would not
// name the file the agent meant.
func checkComponent(c string) error {
	if c == "" {
		return errors.New("empty path component")
	}
	if len(c) > host.MaxKeyComponent {
		return fmt.Errorf("component longer than %d characters", host.MaxKeyComponent)
	}
	if c == "." || strings.Contains(c, "..") {
		return fmt.Errorf("component %s is not allowed", host.Quote(c))
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte(" _.-()", b) >= 0:
		default:
			return fmt.Errorf("character %q is not allowed", b)
		}
	}
	if c[0] == ' ' || c[len(c)-1] == ' ' || c[len(c)-1] == '.' {
		return fmt.Errorf("component %s begins with a space or ends with a space or dot", host.Quote(c))
	}
	base, _, _ := strings.Cut(strings.ToUpper(c), ".")
	switch base {
	case "CON", "PRN", "AUX", "NUL":
		return fmt.Errorf("component %s is a reserved device name", host.Quote(c))
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) && '1' <= base[3] && base[3] <= '9' {
		return fmt.Errorf("component %s is a reserved device name", host.Quote(c))
	}
	return nil
}

// driveRoot is the Linux directory that is C:\.
func (h *Host) driveRoot() string { return filepath.Join(h.dir, DriveDir) }

// hostPath is where w lives on this machine's disk.
func (h *Host) hostPath(w winPath) string {
	return filepath.Join(append([]string{h.driveRoot()}, w...)...)
}

// HostPath maps a Windows path on the simulated C: drive to the file that
// holds it, so that simulated programs (dtrace.exe, msiexec) and tests can
// reach what the agent names with Windows paths: `C:\a\b` becomes
// <StateDir>/drive_c/a/b. Only drive C: exists; components must be plain
// names ([A-Za-z0-9 _.-()], no "..", no empty component) and are matched as
// given, not case-insensitively as on NTFS.
func (h *Host) HostPath(winPath string) (string, error) {
	w, err := parseWinPath(winPath)
	if err != nil {
		return "", fmt.Errorf("sim: %w", err)
	}
	return h.hostPath(w), nil
}

// FileExists reports whether something exists at path, a file or a
// directory, as GetFileAttributes does on Windows. A path through a file
// (`C:\x.txt\y`) does not exist rather than failing, as on Windows.
func (h *Host) FileExists(path string) (bool, error) {
	w, err := parseWinPath(path)
	if err != nil {
		return false, fmt.Errorf("sim: %w", err)
	}
	_, err = os.Stat(h.hostPath(w))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return false, nil
	}
	return false, fmt.Errorf("sim: %s: %w", w, err)
}

// seedDirs are the directories of a fresh Windows installation that the
// agent or the packages it installs expect to exist. LiveKernelReports is
// deliberately absent: Windows creates it with the first dump.
var seedDirs = []string{
	`WINDOWS\System32`,
	`Program Files`,
	`Program Files (x86)`,
	`ProgramData`,
}

// seedDrive creates the simulated C: drive of a new machine.
func seedDrive(root string, cfg Config) error {
	for _, d := range seedDirs {
		if err := os.MkdirAll(filepath.Join(root, filepath.FromSlash(strings.ReplaceAll(d, `\`, "/"))), 0o755); err != nil {
			return err
		}
	}
	if builtinDTrace(cfg) {
		p := filepath.Join(root, "WINDOWS", "System32", "dtrace.exe")
		if err := os.WriteFile(p, []byte("MZ simulated built-in dtrace.exe\n"), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// firstBuiltinDTraceBuild is Windows Server 2025's build, the first that
// ships dtrace.exe in System32 ("Beginning with Windows Server 2025, dtrace
// is included as a built-in tool",
// https://learn.microsoft.com/en-us/windows-server/administration/windows-commands/dtrace).
const firstBuiltinDTraceBuild = 26100

// builtinDTrace reports whether a fresh machine of cfg's kind has the
// built-in dtrace. Only servers get it: some Microsoft pages say newer
// Windows 11 builds ship it too, but that is not certain, and the harsher
// simulation is the one without it (the agent finds it by its file anyway).
func builtinDTrace(cfg Config) bool {
	b, err := strconv.Atoi(cfg.Build)
	return err == nil && isServer(cfg.InstallationType) && b >= firstBuiltinDTraceBuild
}

// fileTxn is a set of changes to the simulated drive that can be taken back,
// so that an installation that fails half-way, or cannot be recorded, leaves
// the drive as it found it, as Windows Installer's rollback does.
type fileTxn struct {
	undo []func()
}

// write replaces or creates a file, remembering its old content.
func (t *fileTxn) write(path string, data []byte) error {
	old, err := os.ReadFile(path)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	t.undo = append(t.undo, func() {
		if existed {
			_ = os.WriteFile(path, old, 0o644)
		} else {
			_ = os.Remove(path)
		}
	})
	return nil
}

// remove deletes a file, remembering its content; a file that is already
// gone is not an error, since the goal is its absence.
func (t *fileTxn) remove(path string) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	t.undo = append(t.undo, func() { _ = os.WriteFile(path, old, 0o644) })
	return nil
}

// mkdir creates a directory that does not exist yet.
func (t *fileTxn) mkdir(path string) error {
	if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	t.undo = append(t.undo, func() { _ = os.Remove(path) })
	return nil
}

// rmdir removes a directory if it is empty, remembering to recreate it.
func (t *fileTxn) rmdir(path string) {
	if os.Remove(path) == nil {
		t.undo = append(t.undo, func() { _ = os.Mkdir(path, 0o755) })
	}
}

// rollback takes back every change, newest first.
func (t *fileTxn) rollback() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.undo = nil
}
