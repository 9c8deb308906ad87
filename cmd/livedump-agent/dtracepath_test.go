package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// syncBuffer is a bytes.Buffer several goroutines may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// wantEvent is what the controller must store for one record of
// testdata/fake-dtrace.out.
type wantEvent struct {
	pid     int32
	process string   // "" when undecodable bytes make the expectation the parser's (item 6)
	user    []string // module`function (offset in the frame), or the raw address
	kernel  int
	ansi    bool // carries ANSI code page bytes (decoded by internal/probe, issue 14 item 6)
}

// TestDTracePathRunsFile is issue 14's acceptance test for dtrace_path: a
// real agent started by this command with --simulate --dtrace-path FILE
// runs FILE as its dtrace (compile-only first, then the capture), and a
// stack capture against a real controller stores every record FILE
// prints: CRLF line ends, raw-address frames, an empty user stack, C++
// template symbols, a 519-byte frame, and module and process names in
// the ANSI code page.
func TestDTracePathRunsFile(t *testing.T) {
	file, err := filepath.Abs(filepath.Join("testdata", "fake-dtrace.sh"))
	if err != nil {
		t.Fatal(err)
	}
	argLog := filepath.Join(t.TempDir(), "dtrace-args.log")
	t.Setenv("FAKE_DTRACE_LOG", argLog)

	c := harness.StartController(t, nil)
	tok := c.Token(t, 1, map[string]string{"role": "fake-dtrace"})
	stateDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{
			"--simulate", "--dtrace-path", file, "--sim-hostname", "FAKE-DTRACE-01",
			"--controller", c.Addr(), "--ca", c.CAFile, "--token", tok,
			"--state-dir", stateDir, "--metrics-listen", "-", "--log-level", "debug",
		}, &stderr, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("agent exited %d:\n%s", code, stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("agent did not stop")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	})

	op := c.Fleet(t, pki.RoleOperator)
	harness.Eventually(t, 20*time.Second, "the agent online", func() bool {
		r, err := op.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{Selector: "role=fake-dtrace"})
		return err == nil && len(r.GetAgents()) == 1 && r.GetAgents()[0].GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE
	})
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=fake-dtrace", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, Expire: durationpb.New(10 * time.Minute), PerAgentCap: 1000, Kstack: true,
	}, Force: true}) // the simulated machine is not provisioned; the fake dtrace runs anyway
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	want := []wantEvent{
		{pid: 4242, process: "ms-teams.exe", user: []string{"ntdll`NtCreateFile+0x14", "KERNELBASE`CreateFileW+0x66", "ms-teams`main+0x2a"}, kernel: 2},
		{pid: 4243, process: "ms-teams.exe", user: []string{"0x7ffd4a2b10e4", "KERNELBASE`0x7ffd47c3a5f1", "ntdll`RtlUserThreadStart"}},
		{pid: 4244, process: "ms-teams.exe", user: nil},
		{pid: 4245, process: "ms-teams.exe", user: []string{
			"msvcp140`std::basic_string<char,std::char_traits<char>,std::allocator<char> >::_Reallocate_grow_by<<lambda_1>,char const *,unsigned __int64>+0x9c",
			"ms-teams`std::operator+<char,std::char_traits<char>,std::allocator<char> >+0x31",
			"ms-teams`Concurrency::details::_TaskProcHandle::_RunChoreBridge+0x1e"}},
		{pid: 4246, process: "ms-teams.exe", user: []string{longFrame(t), "ntdll`RtlUserThreadStart+0x21"}},
		{pid: 4247, process: "ms-teams.exe", ansi: true},
		{pid: 4248, ansi: true},
	}
	var target *livedumpv1.CaptureTarget
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := op.GetCapture(context.Background(), &livedumpv1.GetCaptureRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if tg := r.GetCapture().GetTargets(); len(tg) == 1 {
			target = tg[0]
			if target.GetState() != livedumpv1.TargetState_TARGET_STATE_ARMED && target.GetState() != livedumpv1.TargetState_TARGET_STATE_TRIGGERED &&
				target.GetEvents() >= int64(len(want)) {
				break
			}
			if target.GetState() == livedumpv1.TargetState_TARGET_STATE_FAILED {
				t.Fatalf("target failed: %s", target.GetDetail())
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if target == nil || target.GetState() != livedumpv1.TargetState_TARGET_STATE_DONE {
		t.Errorf("target %v, want done after FILE exited 0", target)
	}

	// FILE ran as the agent's dtrace: compile-only first, then the script.
	b, err := os.ReadFile(argLog)
	if err != nil {
		t.Fatalf("FILE never ran: %v", err)
	}
	runs := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(runs) != 2 || !strings.HasPrefix(runs[0], "-e -q -s ") || !strings.HasPrefix(runs[1], "-q -s ") || !strings.HasSuffix(runs[1], id+".d") {
		t.Fatalf("FILE's command lines %q: want dtrace -e -q -s SCRIPT, then -q -s SCRIPT", runs)
	}

	evs, err := op.ListEvents(context.Background(), &livedumpv1.ListEventsRequest{CaptureId: id})
	if err != nil {
		t.Fatal(err)
	}
	byPID := map[int32]*livedumpv1.TriggerEvent{}
	for _, e := range evs.GetEvents() {
		byPID[e.GetPid()] = e
	}
	for i, w := range want {
		e := byPID[w.pid]
		if e == nil {
			// A non-UTF-8 record is lost unless the parser decodes the
			// ANSI code page (issue 14 item 6).
			t.Errorf("record %d (pid %d, non-UTF-8 names %v) was not stored", i+1, w.pid, w.ansi)
			continue
		}
		if e.GetStatus() != 0xC000000D || e.GetProbe() != "NtCreateFile:return" {
			t.Errorf("record %d: status %#x probe %q", i+1, e.GetStatus(), e.GetProbe())
		}
		if !utf8.ValidString(e.GetProcess()) || (w.process != "" && e.GetProcess() != w.process) || (w.process == "" && !strings.HasSuffix(e.GetProcess(), "rich.exe")) {
			t.Errorf("record %d: process %q", i+1, e.GetProcess())
		}
		if w.ansi {
			for _, f := range e.GetUserFrames() {
				if !utf8.ValidString(f.GetModule()) || !utf8.ValidString(f.GetFunction()) {
					t.Errorf("record %d: frame %v is not UTF-8", i+1, f)
				}
			}
			if w.pid == 4247 && (len(e.GetUserFrames()) != 2 || !strings.HasPrefix(e.GetUserFrames()[0].GetModule(), "Caf") || e.GetUserFrames()[0].GetFunction() != "Brew") {
				t.Errorf("record %d: frames %v", i+1, e.GetUserFrames())
			}
			continue
		}
		var got []string
		for _, f := range e.GetUserFrames() {
			got = append(got, frameText(f))
		}
		if strings.Join(got, "\n") != strings.Join(w.user, "\n") {
			t.Errorf("record %d: user frames\n%q\nwant\n%q", i+1, got, w.user)
		}
		if len(e.GetKernelFrames()) != w.kernel {
			t.Errorf("record %d: %d kernel frames, want %d", i+1, len(e.GetKernelFrames()), w.kernel)
		}
	}
	if len(evs.GetEvents()) != len(want) {
		t.Errorf("%d events stored, want %d", len(evs.GetEvents()), len(want))
	}
}

// frameText prints a stored frame the way dtrace printed it.
func frameText(f *livedumpv1.Frame) string {
	switch {
	case f.GetFunction() == "" && f.GetModule() == "":
		return "0x" + hex(f.GetAddress())
	case f.GetFunction() == "":
		return f.GetModule() + "`0x" + hex(f.GetAddress())
	case f.GetOffset() == 0:
		return f.GetModule() + "`" + f.GetFunction()
	}
	return f.GetModule() + "`" + f.GetFunction() + "+0x" + hex(f.GetOffset())
}

func hex(v uint64) string { return strconv.FormatUint(v, 16) }

// longFrame is record 5's 519-byte frame, read from the fixture.
func longFrame(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join("testdata", "fake-dtrace.out"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\r\n") {
		if l = strings.TrimSpace(l); len(l) == 519 {
			return l
		}
	}
	t.Fatal("fake-dtrace.out has no 519-byte frame")
	return ""
}
