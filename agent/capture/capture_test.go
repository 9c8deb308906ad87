package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/host"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
)

// scriptedHost runs a shell script in place of dtrace, so the supervisor's
// handling of exits and output can be driven exactly.
type scriptedHost struct {
	*sim.Host
	mu     sync.Mutex
	script string
	starts int
	// compile is the script run for dtrace -e (compile only); empty
	// means the script compiles. compiles counts those runs.
	compile  string
	compiles int
	lastArgs []string
	lastEnv  []string
}

// DTrace reports an installed MSI dtrace, whatever the machine has.
func (h *scriptedHost) DTrace() (host.DTrace, error) {
	return host.DTrace{Kind: host.DTraceMSI, Path: `C:\Program Files\DTrace\dtrace.exe`}, nil
}

func (h *scriptedHost) DTraceCommand(ctx context.Context, args, env []string) (*exec.Cmd, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if slices.Contains(args, "-e") {
		h.compiles++
		s := h.compile
		if s == "" {
			s = "exit 0"
		}
		return exec.CommandContext(ctx, "sh", "-c", s), nil
	}
	h.starts++
	h.lastArgs, h.lastEnv = args, env
	return exec.CommandContext(ctx, "sh", "-c", h.script), nil
}

func (h *scriptedHost) startCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.starts
}

// recorder is the Sender: it keeps every message the manager sends.
type recorder struct {
	mu   sync.Mutex
	msgs []*livedumpv1.ConnectRequest
}

func (r *recorder) Send(m *livedumpv1.ConnectRequest) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	return nil
}

func (r *recorder) lastState(id string) (livedumpv1.TargetState, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.msgs) - 1; i >= 0; i-- {
		if st := r.msgs[i].GetCaptureStatus(); st != nil && st.GetCaptureId() == id {
			return st.GetState(), st.GetDetail()
		}
	}
	return 0, ""
}

func (r *recorder) events() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m.GetEvent() != nil {
			n++
		}
	}
	return n
}

func setup(t *testing.T, script string) (*Manager, *scriptedHost, *recorder, context.CancelFunc) {
	t.Helper()
	return setupIn(t, t.TempDir(), script, nil)
}

// setupIn runs a manager on the machine and state in dir; edit adjusts its
// configuration. The returned cancel stops it and waits until it stopped.
func setupIn(t *testing.T, dir, script string, edit func(*Config)) (*Manager, *scriptedHost, *recorder, context.CancelFunc) {
	t.Helper()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(dir, "host")})
	if err != nil {
		t.Fatal(err)
	}
	sh := &scriptedHost{Host: h, script: script}
	rec := &recorder{}
	cfg := Config{Host: sh, StateDir: filepath.Join(dir, "agent"), AgentID: func() string { return "0123456789abcdef" },
		Sender: rec, RestartMin: 10 * time.Millisecond, RestartMax: 40 * time.Millisecond, MaxRestarts: 3}
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	var once sync.Once
	t.Cleanup(func() { once.Do(stop) })
	return m, sh, rec, func() { once.Do(stop) }
}

func arm(id string, cap uint32, expires time.Time) *livedumpv1.ArmCapture {
	return &livedumpv1.ArmCapture{CaptureId: id, Processes: []string{"ms-teams.exe"}, Statuses: []uint32{0xC000000D},
		PerAgentCap: cap, Expires: timestamppb.New(expires)}
}

func waitState(t *testing.T, rec *recorder, id string, want livedumpv1.TargetState) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, detail := rec.lastState(id); st == want {
			return detail
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, detail := rec.lastState(id)
	t.Fatalf("capture %s is %v (%s), want %v", id, st, detail, want)
	return ""
}

func TestCrashingDtraceIsRestartedThenFails(t *testing.T) {
	m, sh, rec, _ := setup(t, `echo "dtrace: processing aborted: Abort due to systemic unresponsiveness" >&2; exit 1`)
	if err := m.Arm(arm("c-crash", 5, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "c-crash", livedumpv1.TargetState_TARGET_STATE_FAILED)
	if !strings.Contains(detail, "systemic unresponsiveness") || !strings.Contains(detail, "4 times") {
		t.Fatalf("detail %q", detail)
	}
	if n := sh.startCount(); n != 4 {
		t.Fatalf("dtrace started %d times, want 1 + 3 restarts", n)
	}
}

func TestDriverMissingIsAProvisioningFailure(t *testing.T) {
	m, sh, rec, _ := setup(t, `echo "dtrace: failed to initialize dtrace: DTrace device not available on system" >&2; exit 1`)
	if err := m.Arm(arm("c-nodriver", 5, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "c-nodriver", livedumpv1.TargetState_TARGET_STATE_FAILED)
	if !strings.HasPrefix(detail, "provisioning:") || sh.startCount() != 1 {
		t.Fatalf("detail %q after %d starts: want a provisioning failure and no restart", detail, sh.startCount())
	}
}

// framed prints one dtrace record in the rendered script's framing.
func framed(seq int) string {
	return fmt.Sprintf(`echo "@@livedump begin %d %d 4242 17 NtCreateFile:return 0xc000000d ms-teams.exe"; echo "@@livedump ustack"; echo "              ntdll\`+"`"+`NtCreateFile+0x14"; echo; echo "@@livedump end %d";`,
		seq, time.Now().UnixNano()+int64(seq), seq)
}

func TestEventsAreSpooledSentAndAcked(t *testing.T) {
	m, _, rec, _ := setup(t, framed(1)+framed(2)+" sleep 30")
	if err := m.Arm(arm("c-events", 100, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	waitState(t, rec, "c-events", livedumpv1.TargetState_TARGET_STATE_TRIGGERED)
	deadline := time.Now().Add(5 * time.Second)
	for rec.events() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rec.events() != 2 || m.spool.Len() != 2 {
		t.Fatalf("%d events sent, %d spooled; want 2 and 2", rec.events(), m.spool.Len())
	}
	// A reconnect re-sends the spool until the controller acks.
	var ids []string
	for _, msg := range m.Statuses() {
		if e := msg.GetEvent(); e != nil {
			ids = append(ids, e.GetId())
		}
	}
	if len(ids) != 2 {
		t.Fatalf("reconnect report re-sends %d events", len(ids))
	}
	m.Acked(ids)
	if m.spool.Len() != 0 {
		t.Fatal("acked events stayed in the spool")
	}
	m.Disarm("c-events", "cancelled")
	waitState(t, rec, "c-events", livedumpv1.TargetState_TARGET_STATE_CANCELLED)
}

func TestExpiryOnTheAgentsOwnClock(t *testing.T) {
	m, _, rec, _ := setup(t, "sleep 30")
	if err := m.Arm(arm("c-expire", 5, time.Now().Add(300*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	waitState(t, rec, "c-expire", livedumpv1.TargetState_TARGET_STATE_EXPIRED)
	if err := m.Arm(arm("c-late", 5, time.Now().Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	if d := waitState(t, rec, "c-late", livedumpv1.TargetState_TARGET_STATE_EXPIRED); !strings.Contains(d, "before it could run") {
		t.Fatalf("detail %q", d)
	}
}

// TestArmRefusesUnsafeCaptureIDs: the capture ID names the script file,
// so it is checked for raw scripts too (a hostile controller's
// "../../x" must not leave the state directory).
func TestArmRefusesUnsafeCaptureIDs(t *testing.T) {
	m, sh, _, _ := setup(t, `exit 0`)
	for _, id := range []string{"../../evil", `..\..\evil`, "", "C-UPPER", strings.Repeat("a", 65)} {
		a := &livedumpv1.ArmCapture{CaptureId: id, Script: "BEGIN { exit(0); }", Expires: timestamppb.New(time.Now().Add(time.Hour))}
		if err := m.Arm(a); err == nil || !strings.Contains(err.Error(), "capture_id") {
			t.Errorf("Arm(%q) = %v, want a capture_id refusal", id, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := sh.startCount(); n != 0 {
		t.Fatalf("dtrace started %d times for refused captures", n)
	}
}

func rawArm(id string) *livedumpv1.ArmCapture {
	return &livedumpv1.ArmCapture{CaptureId: id, Script: "#pragma D option destructive\nBEGIN { lkd(0); }\n", Expires: timestamppb.New(time.Now().Add(time.Hour))}
}

// TestRawScriptRefusedUnlessAllowed: a capture that carries its own D
// script runs only where the local setting allows it; refused, it leaves
// nothing behind.
func TestRawScriptRefusedUnlessAllowed(t *testing.T) {
	dir := t.TempDir()
	m, sh, rec, _ := setupIn(t, dir, "sleep 30", nil)
	if err := m.Arm(rawArm("c-raw")); !errors.Is(err, ErrRawScriptNotAllowed) {
		t.Fatalf("Arm = %v, want %v", err, ErrRawScriptNotAllowed)
	}
	if want := "capture.script: raw D scripts are not allowed on this machine (agent setting allow_raw_scripts is off)"; ErrRawScriptNotAllowed.Error() != want {
		t.Errorf("refusal %q, want %q", ErrRawScriptNotAllowed, want)
	}
	time.Sleep(50 * time.Millisecond)
	if n := sh.startCount(); n != 0 {
		t.Fatalf("dtrace started %d times for a refused raw script", n)
	}
	if st, _ := rec.lastState("c-raw"); st != 0 {
		t.Fatalf("a refused capture was reported %v", st)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "agent", StateFile)); err == nil && strings.Contains(string(b), "c-raw") {
		t.Fatalf("a refused capture was persisted:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent", "scripts", "c-raw.d")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused raw script was written: %v", err)
	}
	// Templated captures are not affected.
	if err := m.Arm(arm("c-templated", 5, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	waitState(t, rec, "c-templated", livedumpv1.TargetState_TARGET_STATE_ARMED)

	m2, sh2, rec2, _ := setupIn(t, t.TempDir(), "sleep 30", func(c *Config) { c.AllowRawScripts = true })
	if err := m2.Arm(rawArm("c-raw")); err != nil {
		t.Fatalf("allow_raw_scripts on: %v", err)
	}
	waitState(t, rec2, "c-raw", livedumpv1.TargetState_TARGET_STATE_ARMED)
	if sh2.startCount() != 1 {
		t.Fatalf("dtrace started %d times, want 1", sh2.startCount())
	}
}

// TestPersistedRawScriptNotResumedWhenOff: a raw-script capture armed
// while allow_raw_scripts was on ends, failed and counted, when the agent
// starts with the setting off; a templated one next to it resumes.
func TestPersistedRawScriptNotResumedWhenOff(t *testing.T) {
	dir := t.TempDir()
	m, _, rec, stop := setupIn(t, dir, "sleep 30", func(c *Config) { c.AllowRawScripts = true })
	if err := m.Arm(rawArm("c-raw")); err != nil {
		t.Fatal(err)
	}
	if err := m.Arm(arm("c-templated", 5, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	waitState(t, rec, "c-raw", livedumpv1.TargetState_TARGET_STATE_ARMED)
	waitState(t, rec, "c-templated", livedumpv1.TargetState_TARGET_STATE_ARMED)
	stop()

	var mu sync.Mutex
	var refused []string
	_, sh, rec, _ := setupIn(t, dir, "sleep 30", func(c *Config) {
		c.Refused = func(r string) { mu.Lock(); refused = append(refused, r); mu.Unlock() }
	})
	if d := waitState(t, rec, "c-raw", livedumpv1.TargetState_TARGET_STATE_FAILED); d != ErrRawScriptNotAllowed.Error() {
		t.Errorf("detail %q, want %q", d, ErrRawScriptNotAllowed)
	}
	waitState(t, rec, "c-templated", livedumpv1.TargetState_TARGET_STATE_ARMED)
	if n := sh.startCount(); n != 1 {
		t.Errorf("dtrace started %d times, want once (the templated capture)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(refused) != 1 || refused[0] != "raw_script" {
		t.Errorf("refusals counted %q, want [raw_script]", refused)
	}
}
