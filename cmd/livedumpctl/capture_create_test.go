package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// CreateCapture answers like the controller: the capture, with the
// warnings internal/probe gives for its processes.
func (f *fakeFleet) CreateCapture(ctx context.Context, req *livedumpv1.CreateCaptureRequest) (*livedumpv1.CreateCaptureResponse, error) {
	if err := f.record(ctx, "CreateCapture", req); err != nil {
		return nil, err
	}
	var values []uint32
	for _, s := range req.GetSpec().GetStatuses() {
		r, _ := ntstatus.Resolve(s)
		values = append(values, r.NTStatus...)
	}
	ps := probe.FromCaptureSpec("c-new", req.GetSpec(), values)
	return &livedumpv1.CreateCaptureResponse{Capture: &livedumpv1.Capture{
		Id: "c-new", Spec: req.GetSpec(), State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE, Warnings: ps.Warnings(),
	}}, nil
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
	out := runOK(t, append(base, "--syscall", "NtCreateFile,NtAlpcSendWaitReceivePort")...)
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
		runOK(t, append(slices.Clone(base), tt.args...)...)
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
