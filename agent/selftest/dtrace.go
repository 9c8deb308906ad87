package selftest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/probe"
)

// dtraceLocations reports the dtrace executables present on the machine,
// at the places host.FindDTrace looks (it then runs the built-in one when
// both exist, or dtrace_path when set).
func dtraceLocations(h host.Host) (builtin, msi string, err error) {
	var errs []error
	exists := func(p string) bool {
		ok, e := h.FileExists(p)
		if e != nil {
			errs = append(errs, e)
		}
		return ok
	}
	if p := host.BuiltinDTracePath(h); exists(p) {
		builtin = p
	}
	if p, e := host.MSIDTracePath(h); e != nil {
		errs = append(errs, e)
	} else if exists(p) {
		msi = p
	}
	return builtin, msi, errors.Join(errs...)
}

func (r *run) present(context.Context) (Status, string) {
	builtin, msi, err := dtraceLocations(r.h)
	var found []string
	if builtin != "" {
		found = append(found, "built-in "+builtin)
	}
	if msi != "" {
		found = append(found, "MSI "+msi)
	}
	ev := strings.Join(found, "; ")
	if cfg := r.t.cfg.DTracePath; cfg != "" {
		if ev == "" {
			ev = "neither built-in nor MSI dtrace found"
		}
		return Pass, fmt.Sprintf("dtrace_path %s (configured, used instead); %s", cfg, ev)
	}
	switch {
	case len(found) > 0:
		return Pass, ev
	case err != nil:
		return Unknown, "could not look for dtrace: " + err.Error()
	}
	return Fail, `no dtrace: neither %SystemRoot%` + host.BuiltinDTraceRel + ` (built-in, Windows Server 2025 and newer) nor %ProgramFiles%` + host.MSIDTraceRel + ` (DTrace for Windows MSI); provisioning installs it`
}

// dtraceOut is what one dtrace run printed.
type dtraceOut struct {
	stdout, stderr *capped
	err            error // start failure, exit status or timeout
	notStarted     bool  // the host could not start dtrace at all
	timedOut       bool
	elapsed        time.Duration
}

// lastErr is the most useful line of a failed run: dtrace's own last
// stderr line, else the exit status.
func (o dtraceOut) lastErr() string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(o.stderr.String(), "\r", "")), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	if o.timedOut {
		return fmt.Sprintf("no answer within %s", o.elapsed.Round(time.Second))
	}
	if o.err != nil {
		return o.err.Error()
	}
	return "(no output)"
}

// runDTrace runs the host's dtrace with args until it exits or ctx ends,
// keeping at most limit bytes of each output stream (the head, plus a
// line count); onLine, if set, sees every stdout line as it arrives.
func (r *run) runDTrace(ctx context.Context, args []string, limit int, onLine func(string) bool) dtraceOut {
	start := time.Now()
	o := dtraceOut{stdout: &capped{limit: limit}, stderr: &capped{limit: 8 << 10}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd, err := r.h.DTraceCommand(ctx, args, nil)
	if err != nil {
		o.err, o.notStarted = err, true
		return o
	}
	if onLine != nil {
		o.stdout.onLine = func(l string) {
			if onLine(l) {
				cancel() // seen what was needed: stop dtrace
			}
		}
	}
	cmd.Stdout, cmd.Stderr = o.stdout, o.stderr
	cmd.WaitDelay = 5 * time.Second
	o.err = cmd.Run()
	var perr *os.PathError
	if errors.As(o.err, &perr) || errors.Is(o.err, exec.ErrNotFound) {
		o.notStarted = true
	}
	o.elapsed = time.Since(start)
	var exit *exec.ExitError
	if ctx.Err() != nil && errors.As(o.err, &exit) || errors.Is(o.err, context.DeadlineExceeded) {
		o.timedOut = true
	}
	return o
}

func (r *run) version(ctx context.Context) (Status, string) {
	o := r.runDTrace(ctx, []string{"-V"}, 4<<10, nil)
	if o.notStarted {
		return Unknown, "not run: " + o.lastErr()
	}
	if o.err != nil {
		return Unknown, "dtrace -V: " + o.lastErr()
	}
	v := strings.TrimSpace(o.stdout.String())
	if v == "" {
		v = strings.TrimSpace(o.stderr.String())
	}
	return Pass, v
}

// listing counts what `dtrace -l` prints: probes by provider.
type listing struct {
	mu        sync.Mutex
	probes    int
	providers map[string]int
	matched   []string // lines onMatch accepted
}

// line reads one line of `dtrace -l`: "   ID   PROVIDER  MODULE  FUNCTION NAME".
func (l *listing) line(s string) {
	f := strings.Fields(s)
	if len(f) < 3 || f[0] == "ID" {
		return
	}
	for _, c := range f[0] {
		if c < '0' || c > '9' {
			return
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probes++
	if l.providers == nil {
		l.providers = map[string]int{}
	}
	if _, ok := l.providers[f[1]]; ok || len(l.providers) < 64 {
		l.providers[f[1]]++
	}
}

func (l *listing) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.providers))
	for p := range l.providers {
		names = append(names, p)
	}
	sort.Slice(names, func(i, j int) bool { return l.providers[names[i]] > l.providers[names[j]] })
	var parts []string
	for i, p := range names {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("... %d more", len(names)-8))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", p, l.providers[p]))
	}
	return strings.Join(parts, ", ")
}

// driver lists every probe. A working driver offers syscall (and etw,
// fbt with VBS, ...) probes; a dtrace whose driver is missing or does not
// match the Windows build lists only dtrace's own BEGIN, END and ERROR
// (DTrace-on-Windows issue #7,
// https://github.com/microsoft/DTrace-on-Windows/issues/7), and one whose
// device cannot be opened fails with "DTrace device not available on
// system" (issues #62 and #64).
func (r *run) driver(ctx context.Context) (Status, string) {
	var l listing
	o := r.runDTrace(ctx, []string{"-l"}, 4<<10, func(s string) bool { l.line(s); return false })
	bcd := ""
	if v, err := r.h.BCDDtrace(ctx); err == nil {
		bcd = "; bcdedit {current} dtrace: " + v.String()
	}
	if o.notStarted {
		return Unknown, "not run: " + o.lastErr() + bcd
	}
	if o.err != nil {
		ev := "dtrace -l: " + o.lastErr() + bcd
		if strings.Contains(o.stderr.String(), "not available") {
			ev += " (see security.secureboot_vbs; the driver loads only after `bcdedit /set dtrace on` and a reboot)"
		}
		return Fail, ev
	}
	if l.probes == 0 {
		return Fail, "dtrace -l listed no probes" + bcd
	}
	if len(l.providers) == 1 && l.providers["dtrace"] > 0 {
		return Fail, fmt.Sprintf("dtrace -l lists only the dtrace provider (%d probes: BEGIN, END, ERROR): the DTrace driver is not loaded or does not match this Windows build (DTrace-on-Windows issue #7)%s", l.probes, bcd)
	}
	return Pass, fmt.Sprintf("dtrace -l lists %d probes: %s%s", l.probes, l.summary(), bcd)
}

// syscallProbe is the probe provisioning also lists to prove the driver
// works after a reboot.
const syscallProbe = "syscall::NtClose:return"

func (r *run) syscallProbe(ctx context.Context) (Status, string) {
	var found string
	o := r.runDTrace(ctx, []string{"-ln", syscallProbe}, 4<<10, func(s string) bool {
		f := strings.Fields(s)
		if len(f) >= 4 && f[1] == "syscall" && f[len(f)-2] == "NtClose" && f[len(f)-1] == "return" {
			found = strings.Join(f, " ")
			return true
		}
		return false
	})
	if found != "" {
		return Pass, "dtrace -ln " + syscallProbe + ": " + found
	}
	if o.notStarted {
		return Unknown, "not run: " + o.lastErr()
	}
	if o.err != nil {
		return Fail, "dtrace -ln " + syscallProbe + ": " + o.lastErr()
	}
	return Fail, "dtrace -ln " + syscallProbe + " listed no such probe: " + oneLine(o.stdout.String())
}

// sampleSpec is the capture the compile check renders: the documented
// example (an Nt* syscall failing with STATUS_INVALID_PARAMETER in a
// named process), stacks only.
func sampleSpec() probe.Spec {
	return probe.Spec{
		CaptureID: "selftest",
		Processes: []string{"notepad.exe"},
		Syscalls:  []string{"NtCreateFile"},
		Statuses:  []uint32{0xC000000D},
		UStack:    10,
		KStack:    true,
		Action:    probe.ActionStacks,
	}
}

// compile renders a capture script exactly as the agent does and has
// dtrace compile it with -e, which exits "after compiling request but
// prior to enabling probes" (dtrace(1M) usage text): nothing is traced.
func (r *run) compile(ctx context.Context) (Status, string) {
	spec := sampleSpec().WithDefaults()
	if err := spec.Validate(); err != nil {
		return Unknown, "sample capture: " + err.Error()
	}
	script, err := probe.Render(spec, 0)
	if err != nil {
		return Unknown, "render sample capture: " + err.Error()
	}
	dir, err := os.MkdirTemp(r.t.cfg.WorkDir, "livedump-selftest-")
	if err != nil {
		return Unknown, "temporary folder for the sample script: " + err.Error()
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "selftest.d")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		return Unknown, "write the sample script: " + err.Error()
	}
	o := r.runDTrace(ctx, []string{"-q", "-e", "-s", path}, 4<<10, nil)
	what := fmt.Sprintf("rendered capture (%s %s %s, ustack %d, kstack)", spec.Processes[0], spec.Syscalls[0], "STATUS_INVALID_PARAMETER", spec.UStack)
	if o.notStarted {
		return Unknown, "not run: " + o.lastErr()
	}
	if o.err != nil {
		return Fail, "dtrace -e -s " + what + ": " + o.lastErr()
	}
	return Pass, "dtrace -e -s " + what + " compiled (" + fmt.Sprint(len(script)) + " bytes of D)"
}

// fireScript prints one line at the first NtClose return anywhere (every
// process closes handles all the time) and exits. It has no destructive
// action: dtrace refuses those without -w or the destructive pragma,
// neither of which is given.
const fireScript = `syscall::NtClose:return { printf("livedump-selftest fired in pid %d\n", pid); exit(0); }`

func (r *run) fires(ctx context.Context) (Status, string) {
	ctx, cancel := context.WithTimeout(ctx, r.t.cfg.FireTimeout)
	defer cancel()
	start := time.Now()
	var line string
	o := r.runDTrace(ctx, []string{"-q", "-n", fireScript}, 4<<10, func(s string) bool {
		if strings.HasPrefix(strings.TrimSpace(s), "livedump-selftest fired") {
			line = strings.TrimSpace(s)
			return true
		}
		return false
	})
	if o.notStarted {
		return Unknown, "not run: " + o.lastErr()
	}
	if line != "" {
		return Pass, fmt.Sprintf("%s fired after %s: %s", syscallProbe, time.Since(start).Round(10*time.Millisecond), line)
	}
	if o.timedOut || ctx.Err() != nil {
		ev := fmt.Sprintf("%s did not fire within %s", syscallProbe, r.t.cfg.FireTimeout)
		if e := strings.TrimSpace(o.stderr.String()); e != "" {
			ev += "; dtrace said: " + e
		}
		return Fail, ev
	}
	return Fail, "dtrace -n '" + syscallProbe + " {...}': " + o.lastErr()
}

// capped is an io.Writer keeping the first limit bytes and handing each
// complete line to onLine, so a probe listing of any size is counted
// without being held in memory.
type capped struct {
	mu     sync.Mutex
	limit  int
	buf    bytes.Buffer
	part   []byte
	onLine func(string)
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	if c.onLine != nil {
		c.part = append(c.part, p...)
		for {
			i := bytes.IndexByte(c.part, '\n')
			if i < 0 {
				break
			}
			c.onLine(strings.TrimRight(string(c.part[:i]), "\r"))
			c.part = c.part[i+1:]
		}
		if len(c.part) > 64<<10 {
			c.part = c.part[:0] // a line this long is not dtrace's
		}
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
