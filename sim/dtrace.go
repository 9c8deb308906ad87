package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/livedump/livedump/agent/host"
)

// Environment variables of the simulated dtrace: which machine it runs on,
// and, when the program re-executes itself, which program to be.
const (
	EnvHost  = "LIVEDUMP_SIM_HOST"
	EnvRunAs = "LIVEDUMP_RUN_AS"
	// RunAsDTrace is EnvRunAs's value that makes a livedump binary behave
	// as the simulated dtrace.
	RunAsDTrace = "dtrace-sim"
)

// DTrace finds the simulated machine's dtrace by its files, as on Windows:
// the built-in C:\WINDOWS\System32\dtrace.exe (Server 2025 and later),
// else the MSI's C:\Program Files\DTrace\dtrace.exe. With Config.DTracePath
// set (the agent's dtrace_path) that executable is the machine's dtrace,
// whatever is on C:.
func (h *Host) DTrace() (host.DTrace, error) {
	if h.dtrace != "" {
		return host.DTrace{Kind: host.DTraceConfigured, Path: h.dtrace}, nil
	}
	return host.FindDTrace(h, "")
}

// DTraceCommand prepares the simulated dtrace the way the Windows host
// prepares dtrace.exe: a separate process, the same arguments. It refuses,
// like Windows would fail to find the program, when the simulated C: drive
// has no dtrace.exe. A configured dtrace (Config.DTracePath) runs as it is,
// with the machine named in its environment.
func (h *Host) DTraceCommand(ctx context.Context, args, env []string) (*exec.Cmd, error) {
	d, err := h.DTrace()
	if err != nil {
		return nil, err
	}
	if d.Kind == host.DTraceNone {
		return nil, fmt.Errorf(`C:\Program Files\DTrace\dtrace.exe: the system cannot find the file specified: %w`, host.ErrNoDTrace)
	}
	path := h.dtrace
	extra := []string{EnvHost + "=" + h.dir}
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("sim: find the simulated dtrace: %w", err)
		}
		path = self
		extra = append(extra, EnvRunAs+"="+RunAsDTrace)
	}
	abs, err := filepath.Abs(h.dir)
	if err == nil {
		extra[0] = EnvHost + "=" + abs
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(append(os.Environ(), env...), extra...)
	// On Windows the kernel writes a live dump, not dtrace.exe: a dump
	// under way is finished when dtrace is stopped. The simulated dtrace is
	// that kernel too, so it is stopped with an interrupt (it fires no more
	// probes and exits once the dump being written is complete) and killed
	// only if it has not exited dumpFinishBound later. Killed mid-dump, it
	// leaves a truncated file, as power loss does.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = dumpFinishBound
	return cmd, nil
}

// dumpFinishBound is how long a stopped simulated dtrace may take to finish
// the live dump it is writing.
const dumpFinishBound = 30 * time.Second

// LiveDumpDir maps the machine's live dump folder into its simulated C:
// drive.
func (h *Host) LiveDumpDir() (string, error) {
	p, err := host.LiveDumpWinPath(h)
	if err != nil {
		return "", err
	}
	return h.HostPath(p)
}

// DiskFree reports the simulated drive's free space.
func (h *Host) DiskFree(string) (uint64, error) {
	if h.free == 0 {
		return 1 << 40, nil
	}
	return h.free, nil
}

// PhysicalMemory reports the simulated machine's memory.
func (h *Host) PhysicalMemory() (uint64, error) {
	if h.memory == 0 {
		return 16 << 30, nil
	}
	return h.memory, nil
}

// EventsFile is the simulated machine's Kernel-LiveDump event log: one JSON
// object per line, appended by the simulated dtrace when it writes a dump.
const EventsFile = "livedump-events.jsonl"

// LiveDumpEvent is one line of EventsFile.
type LiveDumpEvent struct {
	ID         int       `json:"id"`
	Time       time.Time `json:"time"`
	NTStatus   uint32    `json:"ntstatus"`
	TotalBytes uint64    `json:"total_bytes"`
	Component  string    `json:"component,omitempty"`
}

// LiveDumpEvents reads the simulated event log.
func (h *Host) LiveDumpEvents(_ context.Context, since time.Time) ([]host.LiveDumpEvent, error) {
	b, err := os.ReadFile(filepath.Join(h.dir, EventsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []host.LiveDumpEvent
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e LiveDumpEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			continue // a line being appended right now
		}
		if (e.ID == host.EventDumpWriteEnd || e.ID == host.EventDumpDiskFull) && !e.Time.Before(since) {
			out = append(out, host.LiveDumpEvent{ID: e.ID, Time: e.Time, NTStatus: e.NTStatus, TotalBytes: e.TotalBytes, Component: e.Component})
		}
	}
	return out, nil
}
