package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/capture"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// The fake's watched captures: c-1 (stacks, ends done), failedCapture
// (every target failed), uploadingCapture (a dump capture whose two dumps
// are still being uploaded when it ends) and stuckCapture (a dump capture
// whose dump never finishes uploading).
const (
	failedCapture    = "c-failed"
	uploadingCapture = "c-dumps"
	stuckCapture     = "c-stuck"
)

func watchTarget(agent, host string, st livedumpv1.TargetState, detail string) *livedumpv1.WatchCaptureResponse {
	return &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Target{Target: &livedumpv1.CaptureTarget{
		AgentId: agent, Hostname: host, State: st, Detail: detail}}}
}

func watchEvent(f *fakeFleet, id, agent, host, sig string, frames ...*livedumpv1.Frame) *livedumpv1.WatchCaptureResponse {
	return &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Event{Event: &livedumpv1.TriggerEvent{
		Id: id, CaptureId: "c-1", AgentId: agent, Hostname: host, Time: ts(f.now), Pid: 42, Tid: 7, Process: "app.exe",
		Probe: "NtCreateFile:return", Status: 0xC000000D, UserFrames: frames, Signature: sig}}}
}

func (f *fakeFleet) WatchCapture(req *livedumpv1.WatchCaptureRequest, stream grpc.ServerStreamingServer[livedumpv1.WatchCaptureResponse]) error {
	if err := f.record(stream.Context(), "WatchCapture", req); err != nil {
		return err
	}
	frame := &livedumpv1.Frame{Module: "app", Function: "Open", Offset: 0x1c}
	armed := livedumpv1.TargetState_TARGET_STATE_ARMED
	ended := func(state livedumpv1.CaptureState, detail string, spec *livedumpv1.CaptureSpec, events int64, counts map[string]int64) *livedumpv1.WatchCaptureResponse {
		return &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Ended{Ended: &livedumpv1.Capture{
			Id: req.GetId(), State: state, Detail: detail, Spec: spec, Events: events, TargetCounts: counts}}}
	}
	var msgs []*livedumpv1.WatchCaptureResponse
	switch req.GetId() {
	case "c-1":
		msgs = []*livedumpv1.WatchCaptureResponse{
			watchTarget("ws-0001", "WS-0001", armed, ""),
			watchTarget("ws-0002", "WS-0002", armed, ""),
			watchEvent(f, "ev-1", "ws-0001", "WS-0001", "app!Open < app!Main", frame),
			watchEvent(f, "ev-2", "ws-0002", "WS-0002", "app!Open < app!Main", frame),
			watchEvent(f, "ev-3", "ws-0002", "WS-0002", "NtCreateFile:return in app.exe: no user frames"),
			watchTarget("ws-0002", "WS-0002", livedumpv1.TargetState_TARGET_STATE_DONE, "per-agent cap reached"),
			ended(livedumpv1.CaptureState_CAPTURE_STATE_DONE, "every target finished", &livedumpv1.CaptureSpec{}, 3, map[string]int64{"done": 2}),
		}
	case failedCapture:
		why := "provisioning: DTrace is not installed"
		msgs = []*livedumpv1.WatchCaptureResponse{
			watchTarget("ws-0001", "WS-0001", livedumpv1.TargetState_TARGET_STATE_FAILED, why),
			ended(livedumpv1.CaptureState_CAPTURE_STATE_FAILED, "every target failed: "+why, &livedumpv1.CaptureSpec{}, 0, map[string]int64{"failed": 1}),
		}
	case uploadingCapture, stuckCapture:
		msgs = []*livedumpv1.WatchCaptureResponse{
			watchTarget("ws-0001", "WS-0001", armed, ""),
			ended(livedumpv1.CaptureState_CAPTURE_STATE_DONE, "max-dumps 2 reached", &livedumpv1.CaptureSpec{Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP}, 2,
				map[string]int64{"cancelled": 1}),
		}
	default:
		return status.Errorf(codes.NotFound, "capture %s not found", req.GetId())
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// uploadProgress is what ListDumps answers for uploadingCapture, one call
// after the other: the dumps appear, upload, and are stored.
type uploadProgress struct {
	mu    sync.Mutex
	calls int
	stuck bool
}

var uploads = &uploadProgress{}

func (u *uploadProgress) reset(stuck bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls, u.stuck = 0, stuck
}

func (u *uploadProgress) next() []*livedumpv1.Dump {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	d := func(id, agent, host string, st livedumpv1.DumpState) *livedumpv1.Dump {
		return &livedumpv1.Dump{Id: id, AgentId: agent, Hostname: host, CaptureId: uploadingCapture, State: st, Size: 6 << 20}
	}
	const (
		writing   = livedumpv1.DumpState_DUMP_STATE_WRITING
		uploading = livedumpv1.DumpState_DUMP_STATE_UPLOADING
		uploaded  = livedumpv1.DumpState_DUMP_STATE_UPLOADED
	)
	switch {
	case u.stuck || u.calls == 1:
		return []*livedumpv1.Dump{d("d-1", "ws-0001", "WS-0001", writing)}
	case u.calls == 2:
		return []*livedumpv1.Dump{d("d-1", "ws-0001", "WS-0001", uploading), d("d-2", "ws-0002", "WS-0002", writing)}
	}
	return []*livedumpv1.Dump{d("d-1", "ws-0001", "WS-0001", uploaded), d("d-2", "ws-0002", "WS-0002", uploaded)}
}

// fastDumpPolls makes watch read dumps every few milliseconds.
func fastDumpPolls(t *testing.T) {
	poll, settle := dumpPoll, dumpSettle
	dumpPoll, dumpSettle = 5*time.Millisecond, time.Minute
	t.Cleanup(func() { dumpPoll, dumpSettle = poll, settle })
}

// TestCaptureWatchNamesHostsOnEveryLine: target and event lines name the
// machine by hostname; the end line counts the targets by state.
func TestCaptureWatchNamesHostsOnEveryLine(t *testing.T) {
	startController(t)
	out := runOK(t, "capture", "watch", "c-1")
	want := []string{
		"[WS-0001] armed",
		"[WS-0002] armed",
		" WS-0001 app.exe pid=42 tid=7 NtCreateFile:return 0xC000000D STATUS_INVALID_PARAMETER",
		"    app!Open+0x1c",
		" WS-0002 app.exe pid=42 tid=7 NtCreateFile:return 0xC000000D STATUS_INVALID_PARAMETER",
		"[WS-0002] done per-agent cap reached",
		"capture c-1 done: every target finished, 3 events; targets 2: 2 done",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "ws-000") {
		t.Errorf("a line names an agent ID instead of its hostname:\n%s", out)
	}
}

// TestCaptureWatchHostAndNoStacks: --host keeps one machine's lines (the
// name in any case), --no-stacks drops the frames.
func TestCaptureWatchHostAndNoStacks(t *testing.T) {
	startController(t)
	out := runOK(t, "capture", "watch", "c-1", "--host", "ws-0002", "--no-stacks")
	if strings.Contains(out, "WS-0001") {
		t.Errorf("--host ws-0002 shows WS-0001:\n%s", out)
	}
	if n := strings.Count(out, " WS-0002 app.exe "); n != 2 {
		t.Errorf("%d event lines of WS-0002, want 2:\n%s", n, out)
	}
	if strings.Contains(out, "app!Open") {
		t.Errorf("--no-stacks printed frames:\n%s", out)
	}
	// Repeated and comma-separated: both machines.
	out = runOK(t, "capture", "watch", "c-1", "--host", "WS-0001,WS-0003", "--host", "WS-0002", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d JSON lines, want 7:\n%s", len(lines), out)
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
	}
}

// TestCaptureWatchUnknownHost: a --host that is none of the capture's
// machines is a usage error, with the closest hostname when one is close.
func TestCaptureWatchUnknownHost(t *testing.T) {
	startController(t)
	for _, tc := range []struct{ host, want string }{
		{"WS-0O01", `--host: "WS-0O01" is not one of the 3 machines of capture c-1 (did you mean "WS-0001"?)`},
		{"kiosk-7", `--host: "kiosk-7" is not one of the 3 machines of capture c-1 (see 'livedumpctl capture watch --help')`},
		{" ", `--host: an empty hostname`},
	} {
		code, stdout, stderr := runCLI(t, "capture", "watch", "c-1", "--host", tc.host)
		wantOneLineError(t, code, stdout, stderr, tc.want)
		if code != exitUsage {
			t.Errorf("--host %q: exit %d, want %d", tc.host, code, exitUsage)
		}
	}
}

// TestCaptureWatchExitsOneWhenEveryTargetFailed: a failed capture prints
// its end and exits 1 with the reason.
func TestCaptureWatchExitsOneWhenEveryTargetFailed(t *testing.T) {
	startController(t)
	code, stdout, stderr := runCLI(t, "capture", "watch", failedCapture)
	if code != exitError {
		t.Fatalf("exit %d, want 1 (stdout %q, stderr %q)", code, stdout, stderr)
	}
	if want := "livedumpctl: capture c-failed failed: every target failed: provisioning: DTrace is not installed\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	for _, w := range []string{"[WS-0001] failed provisioning: DTrace is not installed", "capture c-failed failed: every target failed", "targets 1: 1 failed"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout)
		}
	}
}

// TestCaptureWatchFollowsDumpsUntilUploaded: a dump capture that ended at
// max-dumps is followed until its dumps are stored, with a line per change.
func TestCaptureWatchFollowsDumpsUntilUploaded(t *testing.T) {
	startController(t)
	fastDumpPolls(t)
	uploads.reset(false)
	out := runOK(t, "capture", "watch", uploadingCapture)
	want := []string{
		"capture c-dumps done: max-dumps 2 reached, 2 events",
		"[WS-0001] dump d-1 writing 6.0 MiB",
		"[WS-0001] dump d-1 uploading 6.0 MiB",
		"[WS-0002] dump d-2 writing 6.0 MiB",
		"[WS-0001] dump d-1 uploaded 6.0 MiB",
		"[WS-0002] dump d-2 uploaded 6.0 MiB",
		"capture c-dumps: 2 dumps: 2 uploaded\n",
	}
	last := -1
	for _, w := range want {
		i := strings.Index(out, w)
		if i < 0 || i < last {
			t.Fatalf("output lacks %q after the line before it:\n%s", w, out)
		}
		last = i
	}
}

// TestCaptureWatchDumpWaitIsBounded: dumps still uploading after
// --wait-dumps end the watch with exit 1 and what is missing.
func TestCaptureWatchDumpWaitIsBounded(t *testing.T) {
	startController(t)
	fastDumpPolls(t)
	uploads.reset(true)
	code, stdout, stderr := runCLI(t, "capture", "watch", uploadingCapture, "--wait-dumps", "50ms")
	if code != exitError {
		t.Fatalf("exit %d, want 1 (stdout %q, stderr %q)", code, stdout, stderr)
	}
	want := "livedumpctl: capture c-dumps: 1 of 1 dumps still not uploaded after --wait-dumps 50ms; follow them with 'livedumpctl dumps list --capture c-dumps'\n"
	if stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	// --wait-dumps 0 does not follow the uploads at all.
	uploads.reset(true)
	out := runOK(t, "capture", "watch", uploadingCapture, "--wait-dumps", "0")
	if strings.Contains(out, "dump d-1") {
		t.Errorf("--wait-dumps 0 followed the dumps:\n%s", out)
	}
	code, stdout, stderr = runCLI(t, "capture", "watch", uploadingCapture, "--wait-dumps", "-1s")
	wantOneLineError(t, code, stdout, stderr, "--wait-dumps: must not be negative, got -1s")
}

// TestCaptureWatchSummary: --summary prints, off a terminal, one bucket
// table at the end (the table of events buckets) instead of event lines.
func TestCaptureWatchSummary(t *testing.T) {
	startController(t)
	out := runOK(t, "capture", "watch", "c-1", "--summary")
	if strings.Contains(out, "pid=") {
		t.Errorf("--summary printed event lines:\n%s", out)
	}
	rows := tableRows(out)
	// header, table header, 2 buckets, end line
	if len(rows) != 5 || rows[0][0] != "c-1:" || rows[1][0] != "COUNT" {
		t.Fatalf("summary:\n%s", out)
	}
	if rows[2][0] != "2" || rows[2][1] != "WS-0001,WS-0002" || !strings.HasSuffix(out, "capture c-1 done: every target finished, 3 events; targets 2: 2 done\n") {
		t.Errorf("summary:\n%s", out)
	}
	if !strings.Contains(out, "c-1: 3 events in 2 buckets; targets 2: 1 armed, 1 done") {
		t.Errorf("summary header:\n%s", out)
	}
	code, stdout, stderr := runCLI(t, "capture", "watch", "c-1", "--summary", "-o", "json")
	wantOneLineError(t, code, stdout, stderr, "--summary: prints a table; it does not go with -o json")
}

// TestBucketSummaryRedrawsInPlace: on a terminal, each change redraws the
// table over the previous one: the cursor goes up as many lines as were
// drawn.
func TestBucketSummaryRedrawsInPlace(t *testing.T) {
	var buf bytes.Buffer
	s := newBucketSummary(&buf, true)
	f := &fakeFleet{now: time.Now()}
	s.add(watchEvent(f, "ev-1", "ws-0001", "WS-0001", "a!b < a!c").GetEvent())
	first := buf.String()
	if strings.Contains(first, "\x1b[") || strings.Count(first, "\n") != 3 {
		t.Fatalf("first drawing %q", first)
	}
	s.add(watchEvent(f, "ev-2", "ws-0001", "WS-0001", "x!y < x!z").GetEvent())
	second := strings.TrimPrefix(buf.String(), first)
	if !strings.HasPrefix(second, "\x1b[3A\x1b[J") || strings.Count(second, "\n") != 4 {
		t.Fatalf("second drawing %q: want the cursor up 3 lines, then 4 lines", second)
	}
	s.finish(nil)
	s.finish(nil) // once only
	third := strings.TrimPrefix(buf.String(), first+second)
	if !strings.HasPrefix(third, "\x1b[4A\x1b[J") || strings.Count(third, "\x1b[") != 2 {
		t.Fatalf("final drawing %q", third)
	}
}

// TestFrameNotationMatchesSignatures: a frame printed by watch or events
// list, without its offset, is the token of the bucket signature the
// controller makes of it.
func TestFrameNotationMatchesSignatures(t *testing.T) {
	frames := []*livedumpv1.Frame{
		{Module: "ntdll", Function: "NtCreateFile", Offset: 0x14},
		{Module: "ms-teams", Address: 0x7ff61234abcd},
		{Module: "KERNEL32", Function: "BaseThreadInitThunk"},
	}
	sig := capture.Signature(&livedumpv1.TriggerEvent{UserFrames: frames}, 5)
	var printed []string
	for _, f := range frames {
		p := frameString(f)
		if i := strings.LastIndex(p, "+0x"); i > 0 && f.GetFunction() != "" {
			p = p[:i]
		}
		printed = append(printed, p)
	}
	if got := strings.Join(printed, " < "); got != sig {
		t.Fatalf("frames print as %q, the signature is %q", got, sig)
	}
	if got := frameString(&livedumpv1.Frame{Address: 0x1234}); got != "0x1234" {
		t.Errorf("bare address: %q", got)
	}
}

// TestTargetCounts: the counts line lists the states in the order a target
// goes through them, and the offline targets; an older controller's
// capture is counted from its listed targets.
func TestTargetCounts(t *testing.T) {
	c := &livedumpv1.Capture{TargetCounts: map[string]int64{"failed": 1, "armed": 2, "pending": 1, "dumping": 1, "triggered": 1}, OfflineTargets: 1}
	n := countTargets(c)
	if got, want := n.String(), "6: 1 pending, 2 armed, 1 triggered, 1 dumping, 1 failed (1 offline)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if n.armed != 2 || n.triggered != 2 || n.failed != 1 || n.offline != 1 || n.total != 6 {
		t.Errorf("counts %+v", n)
	}
	old := &livedumpv1.Capture{Targets: []*livedumpv1.CaptureTarget{{State: livedumpv1.TargetState_TARGET_STATE_ARMED}}, OmittedTargets: 4}
	if n := countTargets(old); n.total != 5 || n.armed != 1 {
		t.Errorf("older controller's capture: %+v", n)
	}
	if got := countTargets(&livedumpv1.Capture{}).String(); got != "0" {
		t.Errorf("no targets: %q", got)
	}
}

// TestCaptureGetAndListShowCountsAndAction: get has a Targets line, list
// the ACTION and count columns.
func TestCaptureGetAndListShowCountsAndAction(t *testing.T) {
	startController(t)
	out := runOK(t, "capture", "get", "c-1")
	if !strings.Contains(out, "Targets:    3: 3 armed\n") || !strings.Contains(out, "Action:     stacks\n") {
		t.Errorf("capture get:\n%s", out)
	}
	rows := tableRows(runOK(t, "capture", "list"))
	want := []string{"ID", "STATE", "ACTION", "CREATED", "EXPIRES", "TARGETS", "ARMED", "TRIGGERED", "FAILED", "OFFLINE", "EVENTS"}
	for i, w := range want {
		if rows[0][i] != w {
			t.Fatalf("header %v, want %v first", rows[0], want)
		}
	}
	if r := rows[1]; r[2] != "stacks" || r[7] != "3" || r[8] != "3" || r[9] != "0" || r[10] != "0" || r[11] != "0" {
		t.Errorf("row %v", r)
	}
}
