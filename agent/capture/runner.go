package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/statedir"
	"github.com/livedump/livedump/internal/backoff"
	"github.com/livedump/livedump/internal/ids"
	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// errDriverMissing marks a dtrace that cannot start because the host is not
// provisioned: restarting cannot help.
var errDriverMissing = errors.New("dtrace driver not loaded")

// compileError is dtrace refusing the script in its compile-only run (-e):
// a probe that does not exist ("does not match any probes"), a syntax
// error, an option this dtrace build does not take. The same script fails
// the same way every time, so the target fails at once with dtrace's own
// words instead of being restarted.
type compileError struct{ msg string }

func (e *compileError) Error() string { return e.msg }

// compileTimeout bounds dtrace -e, which only compiles and matches probes.
const compileTimeout = time.Minute

// noteEvery is how often a running target's detail is updated with the
// drops and probe errors dtrace reported, at most.
const noteEvery = 2 * time.Second

// start launches the capture's supervisor; the caller holds m.mu.
func (m *Manager) start(a *armed) {
	// Not derived from the agent's context: Run cancels each capture itself
	// with errShutdown, so "the agent stopped" is never mistaken for
	// "the operator cancelled".
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(m.ctx))
	a.cancel = cancel
	a.done = make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(a.done)
		m.supervise(ctx, a)
	}()
}

// supervise runs dtrace until the capture ends, restarting it with bounded
// backoff when it exits unexpectedly.
func (m *Manager) supervise(ctx context.Context, a *armed) {
	id := a.arm.GetCaptureId()
	log := m.log.With("capture_id", id)
	spec := probe.FromArm(a.arm)
	// Expiry is enforced here, on the agent's own clock, so a capture stops
	// even if the controller is never heard from again.
	if exp := a.arm.GetExpires(); exp != nil {
		wait := exp.AsTime().Sub(m.cfg.Clock.Now())
		if wait <= 0 {
			m.mu.Lock()
			m.finish(a, stateExpired, "expired before it could run")
			m.mu.Unlock()
			return
		}
		t := m.cfg.Clock.AfterFunc(wait, func() { a.cancel(errExpired) })
		defer t.Stop()
	}
	for {
		m.mu.Lock()
		triggered := a.Triggered
		m.mu.Unlock()
		if a.arm.GetScript() == "" && !spec.OnDemand && triggered >= spec.PerAgentCap {
			m.mu.Lock()
			m.finish(a, stateDone, fmt.Sprintf("per-agent cap of %d reached", spec.PerAgentCap))
			m.mu.Unlock()
			return
		}
		if spec.OnDemand {
			if triggered > 0 {
				m.mu.Lock()
				m.finish(a, stateDone, "on-demand dump taken")
				m.mu.Unlock()
				return
			}
			m.runOnDemand(ctx, a, spec) // helper.go
			return
		}
		err := m.runOnce(ctx, a, spec, triggered)
		if ctx.Err() != nil {
			m.ended(ctx, a)
			return
		}
		switch {
		case err == nil:
			m.mu.Lock()
			m.finish(a, stateDone, "dtrace exited after the probe's exit()")
			m.mu.Unlock()
			return
		case errors.Is(err, errDriverMissing):
			m.mu.Lock()
			m.finish(a, stateFailed, "provisioning: "+err.Error()+"; run `livedumpctl provision apply` and reboot")
			m.mu.Unlock()
			return
		}
		var ce *compileError
		if errors.As(err, &ce) {
			m.compileFailures.Inc()
			log.Error("dtrace could not compile the capture's script; not restarting", "err", ce.msg)
			m.mu.Lock()
			m.finish(a, stateFailed, "dtrace could not compile the script (not restarted): "+ce.msg)
			m.mu.Unlock()
			return
		}
		m.mu.Lock()
		a.Restarts++
		restarts := a.Restarts
		if restarts > m.cfg.MaxRestarts {
			m.finish(a, stateFailed, fmt.Sprintf("dtrace failed %d times: %v", restarts, err))
			m.mu.Unlock()
			return
		}
		_ = m.save()
		m.mu.Unlock()
		m.restarts.Inc()
		// The restart count is persisted, so the wait follows it rather
		// than a schedule that would start again with the agent.
		wait := backoff.Policy{Min: m.cfg.RestartMin, Max: m.cfg.RestartMax}.Delay(restarts - 1)
		log.Warn("dtrace exited; restarting", "err", err, "restart", restarts, "in", wait)
		select {
		case <-ctx.Done():
		case <-m.cfg.Clock.After(wait):
		}
	}
}

// ended finishes a capture whose context ended, by the cause.
func (m *Manager) ended(ctx context.Context, a *armed) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errExpired):
		m.finish(a, stateExpired, "expired")
	case errors.Is(cause, errShutdown):
		// Still armed: the next agent start resumes it.
	case errors.Is(cause, errOverhead):
		m.finish(a, stateFailed, a.overheadNote)
	default:
		m.finish(a, stateCancelled, "cancelled")
	}
}

// runOnce runs one dtrace process to its end. nil means it exited 0.
func (m *Manager) runOnce(ctx context.Context, a *armed, spec probe.Spec, triggered int) error {
	id := a.arm.GetCaptureId()
	script := a.arm.GetScript()
	if script == "" {
		var err error
		if script, err = probe.Render(spec, triggered); err != nil {
			return fmt.Errorf("render: %w", err)
		}
	}
	if err := ids.CaptureID(id); err != nil {
		return err
	}
	path, err := statedir.Join(m.cfg.StateDir, "scripts", id+".d")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		return err
	}
	d, err := m.cfg.Host.DTrace()
	if err != nil {
		return fmt.Errorf("locate dtrace: %w", err)
	}
	if d.Kind == host.DTraceNone {
		return fmt.Errorf("%w: no dtrace on this machine (%v)", errDriverMissing, host.ErrNoDTrace)
	}
	var symbolPath string
	if m.cfg.SymbolPath != nil {
		symbolPath = m.cfg.SymbolPath()
	}
	// Compile first (-e: "exit after compiling request but prior to
	// enabling probes", in both builds' usage and on Microsoft's dtrace
	// page): a script dtrace refuses is a permanent failure with dtrace's
	// own message, never a crash to restart.
	if err := m.compile(ctx, d, symbolPath, path); err != nil {
		return err
	}
	argv, env := d.Invocation(symbolPath, []string{"-q", "-s", path})
	cmd, err := m.cfg.Host.DTraceCommand(ctx, argv, env)
	if err != nil {
		return fmt.Errorf("%w: %v", errDriverMissing, err)
	}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dtrace: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go m.watchOverhead(wctx, cmd.Process.Pid, a.cancel, func(note string) {
		m.mu.Lock()
		a.overheadNote = note
		m.mu.Unlock()
		m.log.Warn("probe disarmed for overhead", "capture_id", id, "note", note)
	})
	m.mu.Lock()
	if a.State != stateTriggered {
		m.setState(id, a, stateArmed, dtraceNote(a))
	}
	m.mu.Unlock()

	var stderrText []string
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		stderrText = m.readStderr(a, stderr)
	}()
	// Read until dtrace's output ends, or until the capture is stopped: a
	// child that dtrace left holding the pipe must not keep a cancelled
	// capture alive. Wait then kills dtrace (CommandContext) and closes the
	// pipes, which ends the readers.
	consumed := make(chan struct{})
	go func() { defer close(consumed); m.consume(a, stdout) }()
	select {
	case <-consumed:
		// Both pipes are read to their end before Wait closes them.
		select {
		case <-stderrDone:
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
	waitErr := cmd.Wait()
	<-consumed
	<-stderrDone
	msg := strings.Join(stderrText, "; ")
	if strings.Contains(msg, "DTrace device not available") || strings.Contains(msg, "failed to initialize dtrace") {
		return fmt.Errorf("%w: %s", errDriverMissing, msg)
	}
	if waitErr != nil {
		if msg == "" {
			return waitErr
		}
		return fmt.Errorf("%v: %s", waitErr, msg)
	}
	return nil
}

// consume parses dtrace's output line by line as it is printed.
func (m *Manager) consume(a *armed, r io.Reader) {
	id := a.arm.GetCaptureId()
	p := &probe.Parser{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rec, err := p.Line(sc.Text())
		if err != nil {
			m.log.Warn("unreadable dtrace record", "capture_id", id, "err", err)
			continue
		}
		if rec == nil {
			continue
		}
		m.emit(a, rec)
	}
}

// emit spools an event durably, then sends it.
func (m *Manager) emit(a *armed, rec *probe.Record) {
	id := a.arm.GetCaptureId()
	agentID := m.cfg.AgentID()
	ev := &livedumpv1.TriggerEvent{
		Id:         EventID(agentID, id, rec.Seq, rec.Time, rec.PID, rec.TID),
		CaptureId:  id,
		AgentId:    agentID,
		Time:       timestamp(rec.Time),
		Pid:        int32(rec.PID),
		Tid:        int32(rec.TID),
		Process:    rec.Process,
		Probe:      rec.Probe,
		Status:     rec.Status,
		StatusName: ntstatus.Name(rec.Status),
	}
	for _, f := range rec.User {
		ev.UserFrames = append(ev.UserFrames, frameProto(f))
	}
	for _, f := range rec.Kernel {
		ev.KernelFrames = append(ev.KernelFrames, frameProto(f))
	}
	data, err := proto.Marshal(ev)
	if err == nil {
		err = m.spool.Put(ev.GetId(), data)
	}
	if err != nil {
		m.log.Error("spool event", "capture_id", id, "err", err)
	}
	m.events.Inc()
	if a.arm.GetAction() == livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP && m.cfg.OnDump != nil {
		m.cfg.OnDump(id, ev.GetId(), a.arm.GetUpload(), rec.Time)
	}
	m.mu.Lock()
	a.Triggered++
	if a.State != stateTriggered {
		m.setState(id, a, stateTriggered, dtraceNote(a))
	} else if err := m.save(); err != nil { // the count keeps the cap across restarts
		m.log.Error("save captures", "err", err)
	}
	m.mu.Unlock()
	if err := m.cfg.Sender.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: ev}}); err != nil {
		m.log.Debug("event spooled, sent on reconnect", "event_id", ev.GetId(), "err", err)
	}
}

func frameProto(f probe.Frame) *livedumpv1.Frame {
	return &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address}
}

// compile runs dtrace's compile-only mode on the script: it parses the
// script and matches its probe descriptions against the probes the machine
// has, then exits without enabling anything. A refusal is a
// *compileError; a dtrace that cannot start is errDriverMissing; anything
// else (a timeout, a crash) is an ordinary failure, retried with backoff.
func (m *Manager) compile(ctx context.Context, d host.DTrace, symbolPath, path string) error {
	cctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	argv, env := d.Invocation(symbolPath, []string{"-e", "-q", "-s", path})
	cmd, err := m.cfg.Host.DTraceCommand(cctx, argv, env)
	if err != nil {
		return fmt.Errorf("%w: %v", errDriverMissing, err)
	}
	cmd.WaitDelay = 5 * time.Second
	var out boundedBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &out
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cctx.Err() != nil {
		return fmt.Errorf("dtrace -e did not finish within %s", compileTimeout)
	}
	msg := dtraceMessage(out.String())
	var exit *exec.ExitError
	switch {
	case runErr == nil:
		return nil
	case strings.Contains(msg, "DTrace device not available") || strings.Contains(msg, "failed to initialize dtrace"):
		return fmt.Errorf("%w: %s", errDriverMissing, msg)
	case errors.As(runErr, &exit) && (exit.ExitCode() == 1 || exit.ExitCode() == 2) && strings.HasPrefix(msg, "dtrace: "):
		// 1 is E_ERROR (failed to compile, invalid probe specifier), 2
		// E_USAGE (an option this build does not take): dtrace said why.
		return &compileError{msg: msg}
	case msg != "":
		return fmt.Errorf("dtrace -e: %v: %s", runErr, msg)
	}
	return fmt.Errorf("dtrace -e: %w", runErr)
}

// dtraceMessage is what dtrace printed on stderr, as one line: lines
// trimmed (CRLF on Windows), blank ones and the usage text that follows an
// illegal option left out, bounded.
func dtraceMessage(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "Usage: ") {
			break
		}
		lines = append(lines, l)
	}
	msg := strings.Join(lines, "; ")
	if len(msg) > 1024 {
		msg = msg[:1024] + "..."
	}
	return strings.ToValidUTF8(msg, "?")
}

// boundedBuffer keeps the first 64 KiB written to it and drops the rest,
// so a dtrace that prints without end cannot exhaust the agent's memory.
type boundedBuffer struct{ b []byte }

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string { return string(w.b) }

// Lines dtrace prints on stderr while tracing that say data was lost. The
// formats are libdtrace's (dt_handle.c): dt_handle_cpudrop's
// "%llu %sdrop%s on CPU %d" (principal or aggregation buffer),
// dt_handle_status's "%llu dynamic variable drop%s..." and
// "%llu speculative drop%s", and dt_handle_err's "error on enabled probe
// ID %u (ID %u: %s:%s:%s:%s): %s...", each prefixed "dtrace: " by dtrace's
// drop and error handlers (cmd/dtrace.c). With the droptags option a
// "[DTRACEDROP_...] " tag comes first.
var (
	dropLine  = regexp.MustCompile(`^dtrace: (?:\[\w+\] )?(\d+) (?:aggregation |dynamic variable |speculative )?drops?\b`)
	errorLine = regexp.MustCompile(`^dtrace: (?:\[\w+\] )?error on enabled probe ID \d+`)
)

// readStderr reads dtrace's stderr to its end. Drop and probe-error lines
// are counted (metrics, and the target's detail); the first other lines
// are returned for the message if dtrace fails.
func (m *Manager) readStderr(a *armed, r io.Reader) []string {
	id := a.arm.GetCaptureId()
	var kept []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r \t")
		var drops, errs uint64
		if g := dropLine.FindStringSubmatch(line); g != nil {
			drops, _ = strconv.ParseUint(g[1], 10, 64)
		} else if errorLine.MatchString(line) {
			errs = 1
		} else {
			if line != "" && len(kept) < 16 { // keep the first lines; the rest is drained
				kept = append(kept, line)
			}
			continue
		}
		m.dtraceDrops.Add(float64(drops))
		m.dtraceErrors.Add(float64(errs))
		m.mu.Lock()
		a.Drops += drops
		a.ProbeErrors += errs
		now := m.cfg.Clock.Now()
		if now.Sub(a.noted) >= noteEvery && !terminal(a.State) {
			a.noted = now
			m.setState(id, a, a.State, dtraceNote(a))
		}
		m.mu.Unlock()
		if errs > 0 {
			m.log.Debug("dtrace probe error", "capture_id", id, "line", line)
		}
	}
	// A line longer than the buffer stops the scanner: drain the rest so
	// dtrace never blocks writing to a full pipe.
	_, _ = io.Copy(io.Discard, r)
	return kept
}

// dtraceNote is what a target's detail says about the data dtrace lost:
// "dtrace reported 1,234 drops, 2 probe errors", or "" when none.
func dtraceNote(a *armed) string {
	var parts []string
	if a.Drops > 0 {
		parts = append(parts, plural(a.Drops, "drop"))
	}
	if a.ProbeErrors > 0 {
		parts = append(parts, plural(a.ProbeErrors, "probe error"))
	}
	if len(parts) == 0 {
		return ""
	}
	return "dtrace reported " + strings.Join(parts, ", ")
}

func plural(n uint64, what string) string {
	s := thousands(n) + " " + what
	if n != 1 {
		s += "s"
	}
	return s
}

// thousands writes n with comma separators: 1234 is "1,234".
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
