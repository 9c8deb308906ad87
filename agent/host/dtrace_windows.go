//go:build windows

package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// DTrace finds the dtrace this machine runs: the configured DTracePath,
// else the built-in %SystemRoot%\System32\dtrace.exe, else the MSI's
// ProgramFilesDir\DTrace\dtrace.exe (locations read from the registry
// rather than an environment a service may not have).
func (w *Windows) DTrace() (DTrace, error) { return FindDTrace(w, w.DTracePath) }

// DTraceCommand prepares the dtrace DTrace finds.
func (w *Windows) DTraceCommand(ctx context.Context, args, env []string) (*exec.Cmd, error) {
	d, err := w.DTrace()
	if err != nil {
		return nil, fmt.Errorf("locate dtrace.exe: %w", err)
	}
	if d.Kind == DTraceNone {
		msi, _ := MSIDTracePath(w)
		return nil, fmt.Errorf("neither %s nor %s exists: %w", BuiltinDTracePath(w), msi, ErrNoDTrace)
	}
	if _, err := os.Stat(d.Path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s (%s): not found: %w", d.Path, d.Kind, ErrNoDTrace)
		}
		return nil, err
	}
	cmd := exec.CommandContext(ctx, d.Path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true}
	return cmd, nil
}

// LiveDumpDir is where Windows writes live kernel dumps on this machine.
func (w *Windows) LiveDumpDir() (string, error) { return LiveDumpWinPath(w) }

// DiskFree is GetDiskFreeSpaceEx's free bytes available to the caller.
func (*Windows) DiskFree(path string) (uint64, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, err
	}
	var free, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &free, &total, &totalFree); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", path, err)
	}
	return free, nil
}

// memoryStatusEx is MEMORYSTATUSEX; x/sys/windows does not wrap it.
type memoryStatusEx struct {
	Length, MemoryLoad           uint32
	TotalPhys, AvailPhys         uint64
	TotalPageFile, AvailPageFile uint64
	TotalVirtual, AvailVirtual   uint64
	AvailExtendedVirtual         uint64
}

var procGlobalMemoryStatusEx = windows.NewLazySystemDLL("kernel32.dll").NewProc("GlobalMemoryStatusEx")

// PhysicalMemory is GlobalMemoryStatusEx's total physical memory.
func (*Windows) PhysicalMemory() (uint64, error) {
	m := memoryStatusEx{}
	m.Length = uint32(unsafe.Sizeof(m))
	if r, _, err := procGlobalMemoryStatusEx.Call(uintptr(unsafe.Pointer(&m))); r == 0 {
		return 0, fmt.Errorf("GlobalMemoryStatusEx: %w", err)
	}
	return m.TotalPhys, nil
}

// LiveDumpEvents queries the Kernel-LiveDump channel with wevtutil, whose
// XML carries the manifest's field names whatever the display language.
func (*Windows) LiveDumpEvents(ctx context.Context, since time.Time) ([]LiveDumpEvent, error) {
	dir, err := windows.GetSystemDirectory()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, dir+`\wevtutil.exe`, "qe", LiveDumpChannel, "/q:"+LiveDumpEventsQuery(since), "/f:xml", "/e:Events")
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("wevtutil qe %s: %w", LiveDumpChannel, err)
	}
	return ParseLiveDumpEventsXML(out)
}
