package host

import (
	"errors"
	"fmt"
	"strings"
)

// DTraceKind says which dtrace a machine has. Two builds exist and they take
// different parameters:
//
//   - the built-in dtrace of Windows Server 2025 (and, by some Microsoft
//     pages, newer Windows 11 builds): System32\dtrace.exe, enabled with
//     `bcdedit /set dtrace on` and a reboot, "differs from the MSI installer
//     of DTrace for Windows surrounding parameters and other capabilities"
//     and documents `-y symbol path`
//     (https://learn.microsoft.com/en-us/windows-server/administration/windows-commands/dtrace);
//   - DTrace for Windows from its MSI, installed to Program Files\DTrace
//     (https://learn.microsoft.com/en-us/windows-hardware/drivers/devtest/dtrace),
//     which reads the symbol path from _NT_SYMBOL_PATH.
//
// Which one a machine has is decided by looking for the files, never by the
// build number alone: the same build may or may not ship it (client SKUs,
// servicing updates).
type DTraceKind string

// The kinds of dtrace.
const (
	// DTraceNone: neither file exists and no dtrace_path is configured.
	DTraceNone DTraceKind = "none"
	// DTraceBuiltin is System32\dtrace.exe, shipped with Windows.
	DTraceBuiltin DTraceKind = "built-in"
	// DTraceMSI is Program Files\DTrace\dtrace.exe, from DTrace.amd64.msi.
	DTraceMSI DTraceKind = "msi"
	// DTraceConfigured is the executable named by the agent's dtrace_path
	// setting (--dtrace-path), used as it is.
	DTraceConfigured DTraceKind = "dtrace_path"
)

// DTrace is the dtrace a machine runs: its kind and the path of the
// executable (a Windows path, or the configured dtrace_path as given).
type DTrace struct {
	Kind DTraceKind
	Path string
}

// String renders it the way plans and logs show it.
func (d DTrace) String() string {
	switch d.Kind {
	case DTraceNone, "":
		return "none"
	case DTraceBuiltin:
		return "built-in " + d.Path
	case DTraceMSI:
		return "DTrace for Windows (MSI) " + d.Path
	}
	return "dtrace_path " + d.Path
}

// The relative locations of the two builds.
const (
	// BuiltinDTraceRel is below %SystemRoot%.
	BuiltinDTraceRel = `\System32\dtrace.exe`
	// MSIDTraceRel is below ProgramFilesDir.
	MSIDTraceRel = `\DTrace\dtrace.exe`
)

// ValueGetter reads registry values.
type ValueGetter interface {
	GetValue(key, name string) (Value, error)
}

// DTraceFiles is what FindDTrace needs of a Host.
type DTraceFiles interface {
	ValueGetter
	FileExists(path string) (bool, error)
}

// WindowsCurrentVersionKey holds ProgramFilesDir (not to be confused with
// CurrentVersionKey, Windows NT's).
const WindowsCurrentVersionKey = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion`

// BuiltinDTracePath is where Windows ships its own dtrace.exe on this
// machine: %SystemRoot%\System32\dtrace.exe, SystemRoot read from the
// registry (a service's environment may lack it).
func BuiltinDTracePath(h ValueGetter) string {
	root := `C:\Windows`
	if v, err := h.GetValue(CurrentVersionKey, "SystemRoot"); err == nil && v.Str != "" {
		root = strings.TrimRight(v.Str, `\`)
	}
	return root + BuiltinDTraceRel
}

// MSIDTracePath is where the DTrace MSI installs dtrace.exe on this
// machine: ProgramFilesDir\DTrace\dtrace.exe.
func MSIDTracePath(h ValueGetter) (string, error) {
	v, err := h.GetValue(WindowsCurrentVersionKey, "ProgramFilesDir")
	if err != nil {
		return "", fmt.Errorf("read ProgramFilesDir: %w", err)
	}
	return strings.TrimRight(v.Str, `\`) + MSIDTraceRel, nil
}

// FindDTrace finds the dtrace this machine runs. A configured path
// (dtrace_path) wins and is used as it is; otherwise the built-in
// System32\dtrace.exe is preferred to the MSI's, since it is the build
// Windows ships with its own driver. Kind is DTraceNone when neither file
// exists.
func FindDTrace(h DTraceFiles, configured string) (DTrace, error) {
	if configured != "" {
		return DTrace{Kind: DTraceConfigured, Path: configured}, nil
	}
	builtin := BuiltinDTracePath(h)
	ok, err := h.FileExists(builtin)
	if err != nil {
		return DTrace{}, fmt.Errorf("look for %s: %w", builtin, err)
	}
	if ok {
		return DTrace{Kind: DTraceBuiltin, Path: builtin}, nil
	}
	msi, err := MSIDTracePath(h)
	if err != nil {
		return DTrace{}, err
	}
	if ok, err = h.FileExists(msi); err != nil {
		return DTrace{}, fmt.Errorf("look for %s: %w", msi, err)
	}
	if ok {
		return DTrace{Kind: DTraceMSI, Path: msi}, nil
	}
	return DTrace{Kind: DTraceNone}, nil
}

// ErrNoDTrace is returned, wrapped, when a machine has no dtrace to run.
var ErrNoDTrace = errors.New("DTrace is not installed")

// Invocation is how to run dtrace with the agent's arguments on a machine
// with this dtrace and symbol path: the full argument list and the
// environment entries to add.
//
// The built-in dtrace documents `-y symbol path`, so it gets one. The MSI
// build is given the symbol path only as _NT_SYMBOL_PATH, as Microsoft's
// DTrace on Windows page says to set it: its open-source cmd/dtrace.c
// (microsoft/DTrace-on-Windows) has a -y option, but its usage text does
// not list it and released builds differ, and an option a build does not
// know makes dtrace print its usage and exit 2. _NT_SYMBOL_PATH is set for
// every kind: dbghelp reads it whatever the build.
func (d DTrace) Invocation(symbolPath string, args []string) (argv, env []string) {
	if symbolPath != "" && d.Kind == DTraceBuiltin {
		argv = append(argv, "-y", symbolPath)
	}
	argv = append(argv, args...)
	if symbolPath != "" {
		env = append(env, "_NT_SYMBOL_PATH="+symbolPath)
	}
	return argv, env
}
