package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// CreateCapture answers like the controller: the capture, with the
// warnings internal/probe gives for its processes, and a preview over the
// fake's agents; a dry run answers with the preview alone, and a capture
// whose selector matches no agent, or no ready one, is refused with
// FailedPrecondition unless forced.
func (f *fakeFleet) CreateCapture(ctx context.Context, req *livedumpv1.CreateCaptureRequest) (*livedumpv1.CreateCaptureResponse, error) {
	if err := f.record(ctx, "CreateCapture", req); err != nil {
		return nil, err
	}
	var values []uint32
	pv := &livedumpv1.CapturePreview{Selector: req.GetSpec().GetSelector(), ProvisionStates: map[string]int64{}}
	for _, s := range req.GetSpec().GetStatuses() {
		r, _ := ntstatus.Resolve(s)
		values = append(values, r.NTStatus...)
		pv.Statuses = append(pv.Statuses, &livedumpv1.ResolvedStatus{Input: r.Input, Name: r.Name, Ntstatus: r.NTStatus})
	}
	id := "c-new"
	if req.GetDryRun() {
		id = "dry-run"
	}
	ps := probe.FromCaptureSpec(id, req.GetSpec(), values)
	if err := ps.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	pv.RenderedScript, _ = probe.Render(ps, 0)
	pv.Warnings = ps.Warnings()
	for _, p := range ps.Processes {
		name, cut := probe.ExecName(p)
		pv.Processes = append(pv.Processes, &livedumpv1.PreviewProcess{Input: p, Execname: name, Truncated: cut})
	}
	sel, err := selector.Parse(req.GetSpec().GetSelector())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, a := range f.agents() {
		if !sel.Matches(a.GetLabels()) {
			continue
		}
		pv.Matched++
		state := provisionName(a.GetProvisionState())
		pv.ProvisionStates[state]++
		if a.GetProvisionState() == livedumpv1.ProvisionState_PROVISION_STATE_READY {
			pv.Ready++
		}
		pv.Targets = append(pv.Targets, &livedumpv1.PreviewTarget{AgentId: a.GetId(), Hostname: a.GetHostname(), ProvisionState: a.GetProvisionState()})
	}
	switch {
	case pv.Matched == 0:
		pv.Refused = fmt.Sprintf("selector %q matches no machine: the capture would catch nothing; check with `livedumpctl agents list -l %s`, or give --force to create it anyway", pv.Selector, pv.Selector)
	case pv.Ready == 0:
		pv.Refused = fmt.Sprintf("selector %q matches %d machines and none is provisioned", pv.Selector, pv.Matched)
	}
	if req.GetDryRun() {
		return &livedumpv1.CreateCaptureResponse{Preview: pv}, nil
	}
	if pv.Refused != "" && !req.GetForce() {
		return nil, status.Error(codes.FailedPrecondition, pv.Refused)
	}
	return &livedumpv1.CreateCaptureResponse{Capture: &livedumpv1.Capture{
		Id: "c-new", Spec: req.GetSpec(), State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE, Warnings: ps.Warnings(), RenderedScript: pv.RenderedScript,
	}, Preview: pv}, nil
}

// createOK runs a capture create that must succeed: stdout is returned;
// stderr holds the preview and no error.
func createOK(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 || !strings.HasPrefix(stderr, "Selector:") || strings.Contains(stderr, "livedumpctl: ") {
		t.Fatalf("exit %d, stderr %q (stdout %q)", code, stderr, stdout)
	}
	return stdout
}

// TestCaptureCreateSyscalls: a syscall without a probe is a usage error
// (exit 2) found before any call, naming the flag and the name meant.
func TestCaptureCreateSyscalls(t *testing.T) {
	tc := startController(t)
	base := []string{"capture", "create", "-l", "role=vdi", "--process", "ms-teams.exe", "--status", "STATUS_INVALID_PARAMETER"}
	for _, tt := range []struct {
		syscall string
		want    []string
	}{
		{"NtUserFindWindowEx", []string{"--syscall", "win32k", "DTrace-on-Windows/issues/23"}},
		{"NtGdiBitBlt", []string{"--syscall", "win32k"}},
		{"NtCreatFile", []string{"--syscall", "did you mean NtCreateFile?"}},
		{"ntopenfile", []string{"--syscall", "did you mean NtOpenFile?"}},
	} {
		code, stdout, stderr := runCLI(t, append(base, "--syscall", "NtCreateFile,"+tt.syscall)...)
		wantOneLineError(t, code, stdout, stderr, tt.want...)
		if code != exitUsage {
			t.Errorf("--syscall %s: exit %d, want %d (usage)", tt.syscall, code, exitUsage)
		}
	}
	if n := len(tc.fake.received()); n != 0 {
		t.Fatalf("%d calls reached the controller", n)
	}
	out := createOK(t, append(base, "--syscall", "NtCreateFile,NtAlpcSendWaitReceivePort")...)
	if strings.TrimSpace(out) != "c-new" {
		t.Errorf("stdout %q", out)
	}
}

// TestCaptureCreateWarnings: the controller's warnings are printed on
// stderr, in table and JSON output alike; stdout stays the capture.
func TestCaptureCreateWarnings(t *testing.T) {
	startController(t)
	for _, extra := range [][]string{nil, {"-o", "json"}} {
		args := append([]string{"capture", "create", "-l", "role=vdi", "--process", "ms-teams,SearchIndexer.exe", "--status", "STATUS_INVALID_PARAMETER"}, extra...)
		code, stdout, stderr := runCLI(t, args...)
		if code != exitOK {
			t.Fatalf("%q: exit %d, stderr %q", args, code, stderr)
		}
		for _, w := range []string{
			"livedumpctl: warning: ms-teams has no extension; the kernel records ms-teams.exe",
			`livedumpctl: warning: process "SearchIndexer.exe" matches as "SearchIndexer."`,
		} {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: stderr %q, want %q", args, stderr, w)
			}
		}
		if strings.Contains(stdout, "livedumpctl: warning") || !strings.Contains(stdout, "c-new") {
			t.Errorf("%q: stdout %q", args, stdout)
		}
	}
}

// TestCaptureCreateActionAndUpload: --action and --upload become the wire
// enums by their names; other names are usage errors before any call.
func TestCaptureCreateActionAndUpload(t *testing.T) {
	tc := startController(t)
	base := []string{"capture", "create", "-l", "role=vdi", "--process", "ms-teams.exe", "--status", "STATUS_INVALID_PARAMETER"}
	for _, tt := range []struct {
		args   []string
		action livedumpv1.CaptureAction
		upload livedumpv1.UploadMode
	}{
		{nil, livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, livedumpv1.UploadMode_UPLOAD_MODE_FULL},
		{[]string{"--action", "dump", "--upload", "hash-only"}, livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY},
		{[]string{"--action", "stacks", "--upload", "full"}, livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, livedumpv1.UploadMode_UPLOAD_MODE_FULL},
	} {
		tc.fake.reset()
		createOK(t, append(slices.Clone(base), tt.args...)...)
		calls := tc.fake.received()
		if len(calls) != 1 {
			t.Fatalf("%q: %d calls", tt.args, len(calls))
		}
		spec := calls[0].req.(*livedumpv1.CreateCaptureRequest).GetSpec()
		if spec.GetAction() != tt.action || spec.GetUpload() != tt.upload {
			t.Errorf("%q: action %v, upload %v; want %v, %v", tt.args, spec.GetAction(), spec.GetUpload(), tt.action, tt.upload)
		}
	}
	tc.fake.reset()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--action", "dumps"}, `--action: "dumps": want stacks or dump`},
		{[]string{"--action", "unspecified"}, `--action: "unspecified": want stacks or dump`},
		{[]string{"--upload", "hash_only"}, `--upload: "hash_only": want full or hash-only`},
	} {
		code, stdout, stderr := runCLI(t, append(slices.Clone(base), tt.args...)...)
		wantOneLineError(t, code, stdout, stderr, tt.want)
	}
	if n := len(tc.fake.received()); n != 0 {
		t.Fatalf("%d calls reached the controller", n)
	}
}

// TestCaptureCreateMistakes runs the mistakes of issue 16 through the CLI:
// each is a usage error (exit status 2) with one line naming the flag or
// the selector and what to do; the capture-can-catch-nothing refusals come
// from the controller (FailedPrecondition), the others never reach it.
func TestCaptureCreateMistakes(t *testing.T) {
	base := []string{"capture", "create", "--process", "ms-teams.exe", "--status", "STATUS_INVALID_PARAMETER"}
	for _, tt := range []struct {
		name    string
		args    []string
		code    int
		reaches bool     // the call reaches the controller
		want    []string // in stderr
	}{
		{"selector matching nothing", []string{"-l", "role=vid"}, exitUsage, true,
			[]string{`failed precondition: selector "role=vid" matches no machine`, "agents list -l role=vid", "--force"}},
		{"only unprovisioned machines", []string{"-l", "os.build=19045"}, exitUsage, true,
			[]string{`selector "os.build=19045" matches 1 machines and none is provisioned`}},
		{"forced", []string{"-l", "role=vid", "--force"}, exitOK, true, []string{"Selector:   role=vid: no machine matches"}},
		{"second line in --process", []string{"-l", "role=vdi", "--process", "ms-teams.exe\nBEGIN"}, exitUsage, false,
			[]string{`--process`, `control character U+000A`}},
		{"second line in --syscall", []string{"-l", "role=vdi", "--syscall", "NtCreateFile\nBEGIN"}, exitUsage, false, []string{`--syscall`, `U+000A`}},
		{"carriage return in --status", []string{"-l", "role=vdi", "--status", "STATUS_ACCESS_DENIED\r"}, exitUsage, false, []string{`--status`, `U+000D`}},
		{"newline in the selector", []string{"-l", "role=vdi\n"}, exitUsage, false, []string{`--selector`, `U+000A`}},
		{"ustack 0", []string{"-l", "role=vdi", "--ustack", "0"}, exitUsage, false, []string{"--ustack: 0 frames: must be between 1 and 100"}},
		{"ustack 101", []string{"-l", "role=vdi", "--ustack", "101"}, exitUsage, false, []string{"--ustack: 101 frames: must be between 1 and 100"}},
		{"per-agent 0", []string{"-l", "role=vdi", "--per-agent", "0"}, exitUsage, false, []string{"--per-agent: 0: must be between 1 and 1000"}},
		{"no selector", nil, exitUsage, false, []string{"-l/--selector: required"}},
		{"bad selector", []string{"-l", "role in (vdi"}, exitUsage, false, []string{"-l/--selector"}},
		{"missing script", []string{"-l", "role=vdi", "--script", "/nonexistent/x.d"}, exitUsage, false, []string{"--script"}},
		{"process without extension", []string{"-l", "role=vdi", "--process", "ms-teams"}, exitOK, true,
			[]string{"livedumpctl: warning: ms-teams has no extension; the kernel records ms-teams.exe; did you mean ms-teams.exe?"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := startController(t)
			args := append(slices.Clone(base), tt.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if tt.code != exitOK {
				wantOneLineError(t, code, stdout, stderr, tt.want...)
			} else {
				for _, w := range tt.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr %q, want %q", stderr, w)
					}
				}
				if strings.TrimSpace(stdout) != "c-new" {
					t.Errorf("stdout %q, want the capture ID", stdout)
				}
			}
			if n := len(tc.fake.received()); (n > 0) != tt.reaches {
				t.Errorf("%d calls reached the controller, want reached=%v", n, tt.reaches)
			}
		})
	}
}

// TestCaptureCreateControllerErrors: the controller's refusal of the spec
// (InvalidArgument) is a usage error too; a failure is not.
func TestCaptureCreateControllerErrors(t *testing.T) {
	tc := startController(t)
	args := []string{"capture", "create", "-l", "role=vdi", "--process", "ms-teams.exe", "--status", "STATUS_INVALID_PARAMETER"}
	for _, tt := range []struct {
		err  error
		code int
		want string
	}{
		{status.Error(codes.InvalidArgument, "capture.process: bad"), exitUsage, "invalid argument: capture.process: bad"},
		{status.Error(codes.FailedPrecondition, "selector matches no machine"), exitUsage, "failed precondition: selector matches no machine"},
		{status.Error(codes.Internal, "create capture failed"), exitError, "internal: create capture failed"},
		{status.Error(codes.PermissionDenied, "role viewer may not call CreateCapture"), exitError, "permission denied"},
	} {
		tc.fake.setErr(tt.err)
		code, stdout, stderr := runCLI(t, args...)
		wantOneLineError(t, code, stdout, stderr, tt.want)
		if code != tt.code {
			t.Errorf("%v: exit %d, want %d", tt.err, code, tt.code)
		}
	}
}

// TestCaptureCreateDryRun: --dry-run sends dry_run, prints the
// controller's preview on stdout and stores nothing; refused, it still
// prints the preview and exits 2 with the refusal; -o json prints the
// preview, and a real create's JSON is the capture with it under
// "preview".
func TestCaptureCreateDryRun(t *testing.T) {
	tc := startController(t)
	base := []string{"capture", "create", "--process", "ms-teams.exe,SearchIndexer.exe", "--status", "STATUS_INVALID_PARAMETER", "--dry-run"}
	code, stdout, stderr := runCLI(t, append(slices.Clone(base), "-l", "role=vdi")...)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	calls := tc.fake.received()
	if len(calls) != 1 || !calls[0].req.(*livedumpv1.CreateCaptureRequest).GetDryRun() {
		t.Fatalf("calls %v", calls)
	}
	for _, w := range []string{
		"Dry run: nothing was stored or armed.",
		"Selector:   role=vdi: 1 machine, 1 provisioned (1 ready)",
		"WS-0001", "ws-0001", "ready",
		`Processes:  ms-teams.exe -> execname "ms-teams.exe" (in any case)`,
		`SearchIndexer.exe -> execname "SearchIndexer." (cut to the kernel's 14 characters, in any case)`,
		"Status:     STATUS_INVALID_PARAMETER -> 0xC000000D STATUS_INVALID_PARAMETER",
		"Script:", "livedump capture dry-run", `tolower(execname) == "ms-teams.exe"`,
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout)
		}
	}
	if !strings.Contains(stderr, `livedumpctl: warning: process "SearchIndexer.exe" matches as "SearchIndexer."`) {
		t.Errorf("stderr %q", stderr)
	}

	code, stdout, stderr = runCLI(t, append(slices.Clone(base), "-l", "role=vid")...)
	if code != exitUsage || !strings.Contains(stdout, "Selector:   role=vid: no machine matches") ||
		!strings.HasPrefix(lastLine(stderr), `livedumpctl: selector "role=vid" matches no machine`) {
		t.Errorf("refused dry run: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, append(slices.Clone(base), "-l", "role=vid", "--force")...); code != exitOK {
		t.Errorf("forced dry run: exit %d, stderr %q", code, stderr)
	}

	code, stdout, _ = runCLI(t, append(slices.Clone(base), "-l", "role=vdi", "-o", "json")...)
	var pv livedumpv1.CapturePreview
	if err := protojson.Unmarshal([]byte(stdout), &pv); code != exitOK || err != nil || pv.GetMatched() != 1 || pv.GetRenderedScript() == "" {
		t.Fatalf("dry run -o json: exit %d, %v:\n%s", code, err, stdout)
	}

	code, stdout, stderr = runCLI(t, "capture", "create", "-l", "role=vdi", "--process", "ms-teams.exe", "--status", "STATUS_INVALID_PARAMETER", "-o", "json")
	var got struct {
		ID      string `json:"id"`
		Preview struct {
			Matched string `json:"matched"`
		} `json:"preview"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); code != exitOK || err != nil || got.ID != "c-new" || got.Preview.Matched != "1" {
		t.Fatalf("create -o json: exit %d, %v, %+v:\n%s", code, err, got, stdout)
	}
	if strings.Contains(stderr, "Selector:") {
		t.Errorf("create -o json printed the table preview on stderr: %q", stderr)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
