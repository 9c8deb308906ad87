package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/livedump/livedump/internal/probe"
)

// The on-demand dump's helper process. lkd() takes a dump only from a
// probe that fired at PASSIVE_LEVEL, so `BEGIN { lkd(0); }` never dumps
// (WINDOWS-NOTES, "lkd()"). The agent instead re-executes its own binary
// as a tiny helper that calls SleepEx (the NtDelayExecution syscall) in a
// loop, and the script dumps at that syscall's return in that pid only:
// a user thread returning from a syscall runs at PASSIVE_LEVEL.
//
// The pid goes into the script as a number rather than through dtrace's
// -p or -c: both exist in DTrace on Windows (the MSI's usage text and the
// built-in dtrace's page https://learn.microsoft.com/windows-server/administration/windows-commands/dtrace
// list them), but -c hung after the command ended in released builds
// (microsoft/DTrace-on-Windows issue #4) and -p grabs the process through
// the debugger interface; a predicate on pid needs neither. Because the
// helper keeps making the call until it is stopped, the probe fires however
// long dtrace takes to enable it.

// Environment of the helper: EnvRunAs=RunAsLKDHelper makes any livedump
// binary that links this package the helper (checked in init, so it works
// in the agent and in test binaries alike); envHelperLife bounds how long
// it lives if the agent never stops it.
const (
	EnvRunAs       = "LIVEDUMP_RUN_AS"
	RunAsLKDHelper = "lkd-helper"
	envHelperLife  = "LIVEDUMP_LKD_HELPER_SECONDS"
)

func init() {
	if os.Getenv(EnvRunAs) == RunAsLKDHelper {
		os.Exit(helperMain(os.Getenv(envHelperLife)))
	}
}

// helperMain makes the helper's syscall every 20 ms for life seconds
// (default 600) and exits.
func helperMain(life string) int {
	secs, err := strconv.Atoi(life)
	if err != nil || secs <= 0 {
		secs = 600
	}
	end := time.Now().Add(time.Duration(secs) * time.Second)
	for time.Now().Before(end) {
		delay(20)
	}
	return 0
}

// helperProc is a running helper.
type helperProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (h *helperProc) pid() int { return h.cmd.Process.Pid }

// stop ends the helper and waits for it; calling it again does nothing.
func (h *helperProc) stop() {
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Kill()
	<-h.done
}

// startHelper starts the helper process for at most life.
func startHelper(command func() (*exec.Cmd, error), life time.Duration) (*helperProc, error) {
	if command == nil {
		command = selfHelper
	}
	cmd, err := command()
	if err != nil {
		return nil, err
	}
	cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", envHelperLife, int(life.Seconds())+60))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &helperProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(h.done) }()
	return h, nil
}

// selfHelper re-executes this program as the helper.
func selfHelper() (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), EnvRunAs+"="+RunAsLKDHelper)
	return cmd, nil
}

// errOnDemandTimeout ends an on-demand dump that took longer than its
// bound.
var errOnDemandTimeout = errors.New("on-demand dump timed out")

// DefaultOnDemandTimeout bounds an on-demand dump, from starting the
// helper to the dump file appearing.
const DefaultOnDemandTimeout = 5 * time.Minute

// runOnDemand takes the on-demand dump: helper, dtrace, then waiting for
// the file, within OnDemandTimeout. It finishes the capture, except when
// the agent shuts down (the capture stays armed and runs again at the
// next start).
func (m *Manager) runOnDemand(ctx context.Context, a *armed, spec probe.Spec) {
	id := a.arm.GetCaptureId()
	bound := m.cfg.OnDemandTimeout
	octx, stop := context.WithTimeoutCause(ctx, bound, errOnDemandTimeout)
	defer stop()
	fail := func(detail string) {
		m.mu.Lock()
		m.finish(a, stateFailed, detail)
		m.mu.Unlock()
	}
	h, err := startHelper(m.cfg.HelperCommand, bound)
	if err != nil {
		fail("on-demand dump: cannot start the helper process: " + err.Error())
		return
	}
	defer h.stop()
	spec.HelperPID = h.pid()
	if m.cfg.OnDump != nil {
		m.cfg.OnDump(id, "", a.arm.GetUpload(), m.cfg.Clock.Now())
	}
	err = m.runOnce(octx, a, spec, 0)
	h.stop()
	switch {
	case ctx.Err() != nil:
		m.ended(ctx, a)
		return
	case errors.Is(context.Cause(octx), errOnDemandTimeout):
		fail(fmt.Sprintf("on-demand dump: the probe syscall::%s:return in the helper process (pid %d) did not fire within %v; no dump was taken", probe.OnDemandSyscall, spec.HelperPID, bound))
		return
	case errors.Is(err, errDriverMissing):
		fail("provisioning: " + err.Error() + "; run `livedumpctl provision apply` and reboot")
		return
	case err != nil:
		fail("on-demand dump: dtrace failed: " + err.Error())
		return
	}
	// dtrace exited after lkd(): Windows writes the dump from here on.
	if m.cfg.AwaitDump != nil {
		name, err := m.cfg.AwaitDump(octx, id)
		if ctx.Err() != nil {
			m.ended(ctx, a)
			return
		}
		if err != nil {
			fail(fmt.Sprintf("on-demand dump: lkd() ran but no live dump file appeared within %v (Windows may have throttled it (FullLiveKernelReports), dropped it while another live dump was being written, or failed it: see %s)", bound, "Microsoft-Windows-Kernel-LiveDump/Operational"))
			return
		}
		m.mu.Lock()
		a.Triggered = 1
		m.finish(a, stateDone, "on-demand dump taken: "+name)
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	a.Triggered = 1
	m.finish(a, stateDone, "on-demand dump taken")
	m.mu.Unlock()
}

// maxNoDumpNotes bounds how many triggers without a dump a capture's detail
// names; the count covers the rest.
const maxNoDumpNotes = 3

// NoteNoDump records on a capture's target detail that a trigger's lkd()
// got no live dump (dump.Config.NoDump), e.g. "trigger 1a2b... at
// 14:05:01.123: dump dropped (another live dump ... was being written)",
// and reports the status again. The state does not change.
func (m *Manager) NoteNoDump(captureID, eventID string, at time.Time, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.captures[captureID]
	if !ok {
		return
	}
	a.NoDump++
	who := "the on-demand dump"
	if eventID != "" {
		who = "trigger " + eventID
	}
	note := fmt.Sprintf("%s at %s: %s", who, at.UTC().Format("15:04:05.000"), reason)
	if len(a.NoDumpNotes) < maxNoDumpNotes {
		a.NoDumpNotes = append(a.NoDumpNotes, note)
	}
	m.setState(captureID, a, a.State, a.Detail)
}

// noDumpDetail renders a capture's triggers without a dump for its
// status detail.
func noDumpDetail(a *armed) string {
	if a.NoDump == 0 {
		return ""
	}
	s := fmt.Sprintf("%d trigger(s) got no live dump", a.NoDump)
	for _, n := range a.NoDumpNotes {
		s += "; " + n
	}
	if extra := a.NoDump - len(a.NoDumpNotes); extra > 0 {
		s += fmt.Sprintf("; and %d more", extra)
	}
	return s
}
