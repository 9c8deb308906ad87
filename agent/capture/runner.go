package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	agentprobe "github.com/livedump/livedump/agent/probe"
	"github.com/livedump/livedump/agent/statedir"
	"github.com/livedump/livedump/internal/ids"
	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// errDriverMissing marks a dtrace that cannot start because the host is not
// provisioned: restarting cannot help.
var errDriverMissing = errors.New("dtrace driver not loaded")

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
	spec := specOf(a.arm)
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
		wait := m.cfg.RestartMin << (restarts - 1)
		if wait > m.cfg.RestartMax || wait <= 0 {
			wait = m.cfg.RestartMax
		}
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
	var env []string
	if m.cfg.SymbolPath != nil {
		if sp := m.cfg.SymbolPath(); sp != "" {
			env = append(env, "_NT_SYMBOL_PATH="+sp)
		}
	}
	cmd, err := m.cfg.Host.DTraceCommand(ctx, []string{"-q", "-s", path}, env)
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
		m.setState(id, a, stateArmed, "")
	}
	m.mu.Unlock()

	var stderrText []string
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if len(stderrText) < 16 { // keep the first lines; the rest is drained
				stderrText = append(stderrText, sc.Text())
			}
		}
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
	p := &agentprobe.Parser{}
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
func (m *Manager) emit(a *armed, rec *agentprobe.Record) {
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
		m.setState(id, a, stateTriggered, "")
	} else if err := m.save(); err != nil { // the count keeps the cap across restarts
		m.log.Error("save captures", "err", err)
	}
	m.mu.Unlock()
	if err := m.cfg.Sender.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: ev}}); err != nil {
		m.log.Debug("event spooled, sent on reconnect", "event_id", ev.GetId(), "err", err)
	}
}

func frameProto(f agentprobe.Frame) *livedumpv1.Frame {
	return &livedumpv1.Frame{Module: f.Module, Function: f.Function, Offset: f.Offset, Address: f.Address}
}
