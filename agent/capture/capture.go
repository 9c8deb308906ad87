// Package capture runs the captures armed on this agent: it renders each
// capture's D script, runs dtrace under supervision, turns its output into
// trigger events, spools them durably and sends them to the controller, and
// disarms on cancel, on expiry (even with the controller unreachable) and
// when the per-agent cap is reached.
package capture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/spool"
	"github.com/livedump/livedump/internal/atomicfile"
	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ids"
	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// StateFile records the captures armed on this agent, so a restarted agent
// resumes them and still disarms them at expiry.
const StateFile = "captures.json"

// Sender delivers a message to the controller if connected.
type Sender interface {
	Send(m *livedumpv1.ConnectRequest) error
}

// Config configures a Manager.
type Config struct {
	Host       host.Host
	StateDir   string
	AgentID    func() string
	Sender     Sender
	SymbolPath func() string // _NT_SYMBOL_PATH for dtrace
	Logger     *slog.Logger
	Clock      clockwork.Clock
	Metrics    prometheus.Registerer
	// Restart bounds: a dtrace that keeps exiting is restarted with
	// exponential backoff from RestartMin to RestartMax, at most
	// MaxRestarts times, after which the capture fails.
	RestartMin, RestartMax time.Duration
	MaxRestarts            int
	// CPUBudget is the share of one core dtrace may use before its probe
	// is disarmed (default 0.25); OverheadInterval is how often it is
	// sampled (default 5s).
	CPUBudget        float64
	OverheadInterval time.Duration
	// OnDump is told about every trigger that takes a live dump (and every
	// on-demand dump), so the dump that appears can be linked to it.
	OnDump func(captureID, eventID string, mode livedumpv1.UploadMode, at time.Time)
	// AwaitDump waits until a live dump file linked to the capture has
	// appeared and returns its name (dump.Manager.Await); an on-demand dump
	// fails when none appears within OnDemandTimeout. Nil skips the wait.
	AwaitDump func(ctx context.Context, captureID string) (string, error)
	// OnDemandTimeout bounds an on-demand dump from starting its helper
	// process to the dump file appearing (default DefaultOnDemandTimeout).
	OnDemandTimeout time.Duration
	// HelperCommand prepares the on-demand dump's helper process (see
	// helper.go); nil re-executes this program as the helper.
	HelperCommand func() (*exec.Cmd, error)
	// ExpectedDumpBytes is the free space a dump capture needs on the dump
	// volume before it is armed; zero means the machine's physical memory,
	// the size of the largest full live dump.
	ExpectedDumpBytes uint64
	// AllowRawScripts lets a capture carry its own D script, which the
	// agent runs as it is, destructive actions included. It is the local
	// setting allow_raw_scripts, off by default: a controller that is
	// compromised or impersonated then gets only templated captures,
	// rendered here from their spec. Captures persisted while it was on do
	// not resume once it is off.
	AllowRawScripts bool
	// Refused is told about each persisted capture that is not resumed
	// because of a local setting (reason "raw_script"); Arm's refusals are
	// returned to the caller instead. Optional.
	Refused func(reason string)
}

// ErrRawScriptNotAllowed refuses a capture with a raw D script on an agent
// whose allow_raw_scripts setting is off.
var ErrRawScriptNotAllowed = errors.New("capture.script: raw D scripts are not allowed on this machine (agent setting allow_raw_scripts is off)")

// armed is a capture on this agent, as persisted.
type armed struct {
	Arm       json.RawMessage `json:"arm"` // ArmCapture as protojson
	State     string          `json:"state"`
	Detail    string          `json:"detail,omitempty"`
	Triggered int             `json:"triggered"`
	Restarts  int             `json:"restarts"`
	// Drops and ProbeErrors are what dtrace reported lost on its stderr
	// (see readStderr), shown on the target's detail.
	Drops       uint64 `json:"drops,omitempty"`
	ProbeErrors uint64 `json:"probe_errors,omitempty"`
	// NoDump counts triggers whose lkd() got no live dump; NoDumpNotes
	// names the first few (NoteNoDump).
	NoDump      int      `json:"no_dump,omitempty"`
	NoDumpNotes []string `json:"no_dump_notes,omitempty"`

	arm          *livedumpv1.ArmCapture
	cancel       context.CancelCauseFunc
	done         chan struct{}
	overheadNote string
	noted        time.Time // when the detail last showed the drop counts
}

// Manager owns the captures of this agent.
type Manager struct {
	cfg   Config
	spool *spool.Spool
	log   *slog.Logger

	mu       sync.Mutex
	captures map[string]*armed
	ctx      context.Context
	wg       sync.WaitGroup

	events          prometheus.Counter
	restarts        prometheus.Counter
	overheadDisarms prometheus.Counter
	dtraceDrops     prometheus.Counter
	dtraceErrors    prometheus.Counter
	compileFailures prometheus.Counter
	spooled         prometheus.GaugeFunc
	armedGauge      prometheus.GaugeFunc
	refusals        refusals
}

// Reasons a capture stops.
var (
	errCancelled = errors.New("cancelled")
	errExpired   = errors.New("expired")
	errShutdown  = errors.New("agent stopping")
)

// New opens the spool and the persisted captures.
func New(cfg Config) (*Manager, error) {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnDemandTimeout <= 0 {
		cfg.OnDemandTimeout = DefaultOnDemandTimeout
	}
	if cfg.RestartMin <= 0 {
		cfg.RestartMin = time.Second
	}
	if cfg.RestartMax <= 0 {
		cfg.RestartMax = 30 * time.Second
	}
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 5
	}
	if cfg.CPUBudget == 0 {
		cfg.CPUBudget = 0.25
	}
	sp, err := spool.Open(filepath.Join(cfg.StateDir, "spool"))
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, spool: sp, log: cfg.Logger, captures: map[string]*armed{}}
	if err := m.load(); err != nil {
		return nil, err
	}
	m.events = prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_agent_trigger_events_total", Help: "Trigger events parsed from dtrace output."})
	m.restarts = prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_agent_dtrace_restarts_total", Help: "dtrace processes restarted after an unexpected exit."})
	m.overheadDisarms = prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_agent_overhead_disarms_total", Help: "Probes disarmed because dtrace exceeded its CPU budget."})
	m.spooled = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "livedump_agent_spooled_events", Help: "Trigger events spooled and not yet acknowledged by the controller."},
		func() float64 { return float64(m.spool.Len()) })
	m.armedGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "livedump_agent_captures_armed", Help: "Captures whose probe is running on this agent."},
		func() float64 { return float64(m.countState(stateArmed, stateTriggered)) })
	m.dtraceDrops = prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_agent_dtrace_drops_total", Help: "Records dtrace reported dropped (\"N drops on CPU k\" and the other drop lines on its stderr)."})
	m.dtraceErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_agent_dtrace_errors_total", Help: "\"error on enabled probe\" lines dtrace printed on its stderr."})
	m.compileFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_agent_dtrace_compile_failures_total", Help: "Captures failed because dtrace -e refused their script."})
	m.refusals.init()
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(m.events, m.restarts, m.overheadDisarms, m.dtraceDrops, m.dtraceErrors, m.compileFailures, m.spooled, m.armedGauge, m.refusals.total)
	}
	return m, nil
}

// Target states as the wire names them.
const (
	stateArmed     = "armed"
	stateTriggered = "triggered"
	stateDone      = "done"
	stateFailed    = "failed"
	stateExpired   = "expired"
	stateCancelled = "cancelled"
)

// stateValue is the wire value of one of the states above: its short name.
func stateValue(state string) livedumpv1.TargetState {
	v, _ := enumname.Parse[livedumpv1.TargetState](state, "_")
	return v
}

func terminal(state string) bool {
	return state == stateDone || state == stateFailed || state == stateExpired || state == stateCancelled
}

func (m *Manager) countState(states ...string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.captures {
		for _, s := range states {
			if a.State == s {
				n++
			}
		}
	}
	return n
}

func (m *Manager) load() error {
	b, err := os.ReadFile(filepath.Join(m.cfg.StateDir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var saved map[string]*armed
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("%s: %w", StateFile, err)
	}
	for id, a := range saved {
		a.arm = &livedumpv1.ArmCapture{}
		if err := protojson.Unmarshal(a.Arm, a.arm); err != nil {
			return fmt.Errorf("%s: capture %s: %w", StateFile, id, err)
		}
		m.captures[id] = a
	}
	return nil
}

// save persists the captures; the caller holds m.mu. Terminal captures are
// kept (newest 100) so their final state can be reported after a restart.
func (m *Manager) save() error {
	b, err := json.MarshalIndent(m.captures, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(m.cfg.StateDir, StateFile), b, 0o600)
}

// Run resumes the persisted captures and waits for ctx to end, then stops
// every dtrace it started.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	for id, a := range m.captures {
		if terminal(a.State) {
			continue
		}
		if a.arm.GetScript() != "" && !m.cfg.AllowRawScripts {
			// Armed while the setting was on (or written by someone
			// else): it ends here, and the controller hears why.
			m.log.Warn("persisted capture not resumed", "capture_id", id, "err", ErrRawScriptNotAllowed)
			m.finish(a, stateFailed, ErrRawScriptNotAllowed.Error())
			if m.cfg.Refused != nil {
				m.cfg.Refused("raw_script")
			}
			continue
		}
		m.start(a)
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	for _, a := range m.captures {
		if a.cancel != nil {
			a.cancel(errShutdown)
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// Arm handles an ArmCapture directive. Arming a capture that is already
// known is a no-op, which makes redelivery harmless.
func (m *Manager) Arm(arm *livedumpv1.ArmCapture) error {
	// The ID names the capture's script file: checked for every capture,
	// raw scripts included, before anything else.
	if err := ids.CaptureID(arm.GetCaptureId()); err != nil {
		return err
	}
	// Then the local policy, before anything is stored or run.
	if arm.GetScript() != "" && !m.cfg.AllowRawScripts {
		return ErrRawScriptNotAllowed
	}
	spec := probe.FromArm(arm)
	if arm.GetScript() == "" {
		if err := spec.Validate(); err != nil {
			return err
		}
	}
	if len(arm.GetScript()) > 64<<10 {
		return errors.New("capture.script: longer than 64 KiB")
	}
	raw, err := protojson.Marshal(arm)
	if err != nil {
		return err
	}
	m.mu.Lock()
	_, known := m.captures[arm.GetCaptureId()]
	m.mu.Unlock()
	if known {
		return nil
	}
	if arm.GetAction() == livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP {
		if err := m.checkSpace(); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := &armed{Arm: raw, arm: proto.Clone(arm).(*livedumpv1.ArmCapture), State: stateArmed}
	m.captures[arm.GetCaptureId()] = a
	if err := m.save(); err != nil {
		delete(m.captures, arm.GetCaptureId())
		return err
	}
	if m.ctx != nil {
		m.start(a)
	}
	return nil
}

// Disarm stops a capture.
func (m *Manager) Disarm(id, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.captures[id]
	if !ok || terminal(a.State) {
		return
	}
	cause := errCancelled
	if reason == "expired" {
		cause = errExpired
	}
	if a.cancel != nil {
		a.cancel(cause)
		return
	}
	m.finish(a, stateCancelled, reason)
}

// Statuses returns the current state of every known capture, for the report
// after (re)connecting, followed by every spooled event to send again.
func (m *Manager) Statuses() []*livedumpv1.ConnectRequest {
	m.mu.Lock()
	ids := make([]string, 0, len(m.captures))
	for id := range m.captures {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []*livedumpv1.ConnectRequest
	for _, id := range ids {
		out = append(out, statusMsg(id, m.captures[id]))
	}
	m.mu.Unlock()
	items, err := m.spool.Pending()
	if err != nil {
		m.log.Error("read spool", "err", err)
	}
	for _, it := range items {
		ev := &livedumpv1.TriggerEvent{}
		if err := proto.Unmarshal(it.Data, ev); err != nil {
			m.log.Error("corrupt spooled event dropped", "event_id", it.ID, "err", err)
			_ = m.spool.Ack(it.ID)
			continue
		}
		out = append(out, &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: ev}})
	}
	return out
}

func statusMsg(id string, a *armed) *livedumpv1.ConnectRequest {
	return &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_CaptureStatus{CaptureStatus: &livedumpv1.CaptureStatus{
		CaptureId: id, State: stateValue(a.State), Detail: joinDetail(a.Detail, noDumpDetail(a)), Triggered: int64(a.Triggered),
	}}}
}

// joinDetail joins a state's detail and the note of triggers without a dump.
func joinDetail(detail, note string) string {
	switch {
	case note == "":
		return detail
	case detail == "":
		return note
	}
	return detail + "; " + note
}

// Acked drops acknowledged events from the spool.
func (m *Manager) Acked(ids []string) {
	if err := m.spool.Ack(ids...); err != nil {
		m.log.Warn("spool ack", "err", err)
	}
}

// setState records and reports a state change; the caller holds m.mu.
func (m *Manager) setState(id string, a *armed, state, detail string) {
	a.State, a.Detail = state, detail
	if err := m.save(); err != nil {
		m.log.Error("save captures", "err", err)
	}
	if err := m.cfg.Sender.Send(statusMsg(id, a)); err != nil {
		m.log.Debug("capture status not sent; the reconnect report carries it", "capture_id", id, "err", err)
	}
}

func (m *Manager) finish(a *armed, state, detail string) {
	if note := dtraceNote(a); note != "" {
		detail += "; " + note
	}
	m.setState(a.arm.GetCaptureId(), a, state, detail)
	a.cancel = nil
}

// EventID is stable for one firing, so an event re-sent after a crash or a
// reconnect is recognised and dropped by the controller.
func EventID(agentID, captureID string, seq int, walltime time.Time, pid, tid int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d\x00%d\x00%d", agentID, captureID, seq, walltime.UnixNano(), pid, tid))
	return hex.EncodeToString(h[:16])
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// checkSpace refuses a dump capture when the dump volume cannot hold the
// expected dump: a live dump that fills the disk hurts the machine more than
// the failure it was meant to catch.
func (m *Manager) checkSpace() error {
	dir, err := m.cfg.Host.LiveDumpDir()
	if err != nil {
		return fmt.Errorf("blocker: live dump folder: %w", err)
	}
	need := m.cfg.ExpectedDumpBytes
	if need == 0 {
		if need, err = m.cfg.Host.PhysicalMemory(); err != nil {
			return fmt.Errorf("blocker: physical memory: %w", err)
		}
	}
	// The folder may not exist yet (Windows creates it with the first
	// dump): ask about the closest existing parent.
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			dir = p
			break
		}
	}
	free, err := m.cfg.Host.DiskFree(dir)
	if err != nil {
		return fmt.Errorf("blocker: free space: %w", err)
	}
	if free < need {
		return fmt.Errorf("blocker: %d MiB free for live dumps, below the expected dump size of %d MiB", free>>20, need>>20)
	}
	return nil
}
