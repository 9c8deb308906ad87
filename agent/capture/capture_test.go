package capture

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/host/sim"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// scriptedHost runs a shell script in place of dtrace, so the supervisor's
// handling of exits and output can be driven exactly.
type scriptedHost struct {
	*sim.Host
	mu     sync.Mutex
	script string
	starts int
}

func (h *scriptedHost) DTraceCommand(ctx context.Context, args, env []string) (*exec.Cmd, error) {
	h.mu.Lock()
	h.starts++
	s := h.script
	h.mu.Unlock()
	return exec.CommandContext(ctx, "sh", "-c", s), nil
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
	dir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(dir, "host")})
	if err != nil {
		t.Fatal(err)
	}
	sh := &scriptedHost{Host: h, script: script}
	rec := &recorder{}
	m, err := New(Config{Host: sh, StateDir: filepath.Join(dir, "agent"), AgentID: func() string { return "0123456789abcdef" },
		Sender: rec, RestartMin: 10 * time.Millisecond, RestartMax: 40 * time.Millisecond, MaxRestarts: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m, sh, rec, cancel
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
