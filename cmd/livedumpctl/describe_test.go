package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (f *fakeFleet) DescribeAgent(ctx context.Context, req *livedumpv1.DescribeAgentRequest) (*livedumpv1.DescribeAgentResponse, error) {
	if err := f.record(ctx, "DescribeAgent", req); err != nil {
		return nil, err
	}
	var ag *livedumpv1.Agent
	for _, a := range f.agents() {
		if a.GetId() == req.GetAgentId() {
			ag = a
		}
	}
	if ag == nil {
		return nil, status.Errorf(codes.NotFound, "agent %s: not found", req.GetAgentId())
	}
	resp := &livedumpv1.DescribeAgentResponse{
		Agent:       ag,
		Certificate: &livedumpv1.AgentCertificate{Serial: "5eed01", NotAfter: ts(f.now.Add(20 * time.Hour))},
		Captures: []*livedumpv1.AgentCapture{{CaptureId: "cap-1", State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE, Created: ts(f.now.Add(-time.Hour)),
			Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP,
			Target: &livedumpv1.CaptureTarget{AgentId: ag.GetId(), State: livedumpv1.TargetState_TARGET_STATE_ARMED, Events: 3}}},
		Dumps:     []*livedumpv1.Dump{{Id: "dump-1", CaptureId: "cap-1", FileName: "DTRACE.dmp", Size: 2 << 20, State: livedumpv1.DumpState_DUMP_STATE_UPLOADED}},
		DumpBytes: 2 << 20,
	}
	if req.GetLogLines() > 0 && f.denyLog {
		return nil, status.Error(codes.PermissionDenied, "log_lines: reading an agent's log needs role operator, not viewer (logs hold hostnames, paths and errors); describe it without the log")
	}
	if req.GetLogLines() > 0 {
		resp.Log = &livedumpv1.AgentLog{Report: &livedumpv1.AgentLogReport{FileName: "livedump-agent.log", FileSize: 1234, Modified: ts(f.now),
			Lines: []string{"level=INFO msg=connected", "evil \x1b[31mescape"}}}
	}
	return resp, nil
}

func TestAgentsDescribeByHostname(t *testing.T) {
	for _, ref := range []string{"WS-0002", "ws-0002", "Ws-0002"} {
		t.Run(ref, func(t *testing.T) {
			tc := startController(t)
			out := runOK(t, "agents", "describe", ref)
			wantCall(t, tc, "DescribeAgent", &livedumpv1.DescribeAgentRequest{AgentId: "ws-0002", LogLines: 50, Limit: 10, LogWait: durationOf(10 * time.Second)})
			for _, want := range []string{"Agent:", "WS-0002 (ws-0002)", "Certificate:", "serial 5eed01", "Provisioning:", "cap-1", "armed", "dump-1",
				"Log (livedump-agent.log", "level=INFO msg=connected", "evil ?[31mescape"} {
				if !strings.Contains(out, want) {
					t.Errorf("describe output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "\x1b") {
				t.Errorf("an escape sequence from the agent's log reached the terminal")
			}
		})
	}
}

func TestAgentsDescribeJSONAndNoLog(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "-o", "json", "agents", "describe", "ws-0001", "--no-log", "--limit", "3")
	wantCall(t, tc, "DescribeAgent", &livedumpv1.DescribeAgentRequest{AgentId: "ws-0001", Limit: 3, LogWait: durationOf(10 * time.Second)})
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("-o json is not JSON: %v\n%s", err, out)
	}
	if m["agent"] == nil || m["captures"] == nil || m["log"] != nil {
		t.Errorf("json = %s", out)
	}
}

func TestAgentsDescribeRefusals(t *testing.T) {
	tc := startController(t)
	tc.fake.moreAgents = []*livedumpv1.Agent{
		{Id: "ab12", Hostname: "ws-0001", State: livedumpv1.AgentState_AGENT_STATE_OFFLINE},
		{Id: "cd34", Hostname: "KIOSK-7", State: livedumpv1.AgentState_AGENT_STATE_ONLINE},
		{Id: "ef56", Hostname: "kiosk-7", State: livedumpv1.AgentState_AGENT_STATE_OFFLINE},
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		// ws-0001 is one agent's ID and hostname, and another's hostname.
		{[]string{"agents", "describe", "ws-0001"}, []string{`AGENT "ws-0001" is ambiguous: 2 agents match:`, "WS-0001 (id ws-0001, online)", "ws-0001 (id ab12, offline)", "give the agent ID"}},
		{[]string{"agents", "describe", "Kiosk-7"}, []string{`"Kiosk-7" is ambiguous`, "KIOSK-7 (id cd34, online)", "kiosk-7 (id ef56, offline)"}},
		{[]string{"agents", "describe", "WS-0003"}, []string{`AGENT "WS-0003": no agent has this ID or hostname; did you mean WS-0001 or WS-0002?`}},
		{[]string{"agents", "describe", "KIOSK"}, []string{"did you mean KIOSK-7?"}},
		{[]string{"agents", "describe", "zzzzzzzz"}, []string{"no agent has this ID or hostname; see 'livedumpctl agents list'"}},
		{[]string{"agents", "revoke", "kiosk-7"}, []string{"is ambiguous"}},
		{[]string{"agents", "label", "WS-0009", "a=b"}, []string{"did you mean"}},
		{[]string{"dumps", "list", "--agent", "kiosk-7"}, []string{`--agent "kiosk-7" is ambiguous`}},
		{[]string{"events", "list", "--capture", "c1", "--agent", "nobody"}, []string{`--agent "nobody": no agent`}},
		{[]string{"agents", "describe", "WS 1"}, []string{"neither an agent id"}},
		{[]string{"agents", "describe", "ws-0002", "--log-lines", "5000"}, []string{"--log-lines: must be between 1 and 200, got 5000"}},
		{[]string{"agents", "describe", "ws-0002", "--limit", "0"}, []string{"--limit"}},
		{[]string{"agents", "describe", "ws-0002", "--log-wait", "5m"}, []string{"--log-wait"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			tc.fake.reset()
			code, stdout, stderr := runCLI(t, tt.args...)
			wantOneLineError(t, code, stdout, stderr, tt.want...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			for _, r := range tc.fake.received() {
				if r.method != "ListAgents" {
					t.Errorf("a refused reference reached %s", r.method)
				}
			}
		})
	}
}

// TestAgentsDescribeViewerGetsHint: the controller refuses the log to a
// viewer; the CLI points at --no-log, and --no-log works.
func TestAgentsDescribeViewerGetsHint(t *testing.T) {
	tc := startController(t)
	tc.fake.denyLog = true
	code, stdout, stderr := runCLI(t, "agents", "describe", "WS-0001")
	wantOneLineError(t, code, stdout, stderr, "permission denied: log_lines: reading an agent's log needs role operator, not viewer", "(use --no-log)")
	if out := runOK(t, "agents", "describe", "WS-0001", "--no-log"); !strings.Contains(out, "WS-0001 (ws-0001)") {
		t.Errorf("--no-log output:\n%s", out)
	}
}

func TestAgentFlagsResolveHostnames(t *testing.T) {
	tc := startController(t)
	runOK(t, "dumps", "list", "--agent", "ws-0002")
	wantCall(t, tc, "ListDumps", &livedumpv1.ListDumpsRequest{AgentId: "ws-0002"})
	tc.fake.reset()
	runOK(t, "agents", "revoke", "WS-0002")
	wantCall(t, tc, "RevokeAgent", &livedumpv1.RevokeAgentRequest{AgentId: "ws-0002"})
	tc.fake.reset()
	// events list --agent filters on the client: the fake's even events
	// are ws-0001's, the odd ones ws-0002's.
	out := runOK(t, "-o", "json", "events", "list", "--capture", "c1", "--agent", "WS-0002")
	if strings.Contains(out, `"ws-0001"`) || !strings.Contains(out, `"ws-0002"`) {
		t.Errorf("events list --agent WS-0002 lists another agent's events, or none of its own:\n%s", out)
	}
}

func TestCompletion(t *testing.T) {
	tc := startController(t)
	tc.fake.moreAgents = []*livedumpv1.Agent{{Id: "9f00", Hostname: "LAB-VDI-01"}, {Id: "9f01", Hostname: "LAB-KIOSK-03"}}
	complete := func(args ...string) []string {
		t.Helper()
		code, out, _ := runCLI(t, append([]string{"__complete"}, args...)...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d", args, code)
		}
		var values []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, ":") {
				continue // the directive
			}
			values = append(values, strings.SplitN(l, "\t", 2)[0])
		}
		return values
	}
	has := func(got []string, want ...string) {
		t.Helper()
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Errorf("completion %v lacks %q", got, w)
			}
		}
	}
	has(complete("agents", "describe", ""), "WS-0001", "ws-0001", "WS-0002", "LAB-VDI-01", "9f00")
	if got := complete("agents", "describe", "lab"); len(got) != 2 {
		t.Errorf("agents describe lab -> %v, want the two LAB- hostnames", got)
	} else {
		has(got, "LAB-VDI-01", "LAB-KIOSK-03")
	}
	if got := complete("agents", "describe", "WS-0001", ""); len(got) != 0 {
		t.Errorf("second argument completed: %v", got)
	}
	has(complete("agents", "label", "LAB"), "LAB-VDI-01")
	has(complete("dumps", "list", "--agent", "LAB-V"), "LAB-VDI-01")
	has(complete("capture", "get", ""), "c-2")
	has(complete("dumps", "get", ""), "0123456789abcdef")
	has(complete("events", "list", "--capture", ""), "c-2")
	has(complete("capture", "create", "--status", "STATUS_ACCESS_DEN"), "STATUS_ACCESS_DENIED")
	has(complete("capture", "create", "--status", "E_INVALIDARG,status_access_den"), "E_INVALIDARG,STATUS_ACCESS_DENIED")
	if got := complete("capture", "create", "--status", ""); len(got) > maxCompletions {
		t.Errorf("%d status names offered, want at most %d", len(got), maxCompletions)
	}
	has(complete("capture", "create", "--action", ""), "stacks", "dump")
	has(complete("capture", "create", "--upload", ""), "full", "hash-only")
	has(complete("agents", "list", "-o", ""), "table", "json", "prometheus-sd")
	has(complete("capture", "list", "-o", ""), "table", "json")
}

// TestCompletionNeverHangs: a controller that does not answer, or no
// configuration at all, completes nothing, quickly.
func TestCompletionNeverHangs(t *testing.T) {
	tc := startController(t)
	tc.fake.setDelay(time.Minute)
	start := time.Now()
	code, out, _ := runCLI(t, "__complete", "agents", "describe", "")
	if code != 0 || strings.Contains(out, "WS-0001") {
		t.Errorf("exit %d, out %q", code, out)
	}
	if d := time.Since(start); d > completionTimeout+3*time.Second {
		t.Errorf("completion took %s", d)
	}
	t.Setenv(envConfigFile, "")
	code, out, _ = runCLI(t, "--config", "/nonexistent.yaml", "__complete", "capture", "get", "")
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("without a controller: exit %d, out %q", code, out)
	}
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
