package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// runOK runs livedumpctl, requires success and returns stdout.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q (stdout %q)", code, stderr, stdout)
	}
	return stdout
}

// wantCall checks that the fake got exactly one request, the wanted one,
// from the operator certificate.
func wantCall(t *testing.T, tc *testController, method string, want proto.Message) {
	t.Helper()
	var got []received
	for _, r := range tc.fake.received() {
		// A command naming an agent first looks it up (resolveAgent).
		if r.method != "ListAgents" || method == "ListAgents" {
			got = append(got, r)
		}
	}
	if len(got) != 1 {
		t.Fatalf("fake received %d calls, want 1: %v", len(got), got)
	}
	if got[0].method != method {
		t.Errorf("method = %s, want %s", got[0].method, method)
	}
	if !proto.Equal(got[0].req, want) {
		t.Errorf("request = %v, want %v", got[0].req, want)
	}
	if got[0].caller != tc.operatorIdentity.String() {
		t.Errorf("caller = %q, want %q", got[0].caller, tc.operatorIdentity)
	}
}

// tableRows splits table output into rows of whitespace-separated fields.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func TestAgentsListTable(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "agents", "list", "-l", "site=lab,role in (vdi,kiosk)")
	wantCall(t, tc, "ListAgents", &livedumpv1.ListAgentsRequest{Selector: "site=lab,role in (vdi,kiosk)"})

	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header and 2 rows, got:\n%s", out)
	}
	header := []string{"ID", "HOSTNAME", "STATE", "BUILD", "EDITION", "VERSION", "LAST", "SEEN", "PROVISIONING", "LABELS"}
	rows := tableRows(out)
	if !slices.Equal(rows[0], header) {
		t.Errorf("header = %q", lines[0])
	}
	want1 := []string{"ws-0001", "WS-0001", "online", "22631.4037", "Enterprise", "1.2.3", "3m", "ago", "ready", "role=vdi,site=lab"}
	if !slices.Equal(rows[1], want1) {
		t.Errorf("row 1 = %q, want fields %q", lines[1], want1)
	}
	want2 := []string{"ws-0002", "WS-0002", "offline", "19045", "Professional", "1.2.2", "2d", "ago", "-", "-"}
	if !slices.Equal(rows[2], want2) {
		t.Errorf("row 2 = %q, want fields %q", lines[2], want2)
	}
	// Columns line up: every row's LABELS starts where the header's does.
	col := strings.Index(lines[0], "LABELS")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("LABELS column misaligned in %q", l)
		}
	}
}

func TestAgentsListJSON(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "-o", "json", "agents", "list")
	wantCall(t, tc, "ListAgents", &livedumpv1.ListAgentsRequest{})

	if !strings.HasPrefix(out, "{\n  \"agents\": [\n    {\n      \"id\": \"ws-0001\",\n") || !strings.HasSuffix(out, "}\n") {
		t.Errorf("json output is not the indented response message:\n%s", out)
	}
	for _, name := range []string{`"last_seen"`, `"os_build"`, `"agent_version"`, `"AGENT_STATE_ONLINE"`} {
		if !strings.Contains(out, name) {
			t.Errorf("json output lacks %s (proto field names):\n%s", name, out)
		}
	}
	if strings.Contains(out, `"first_seen"`) || strings.Contains(out, `"os_product_name"`) {
		t.Errorf("json output shows unpopulated fields:\n%s", out)
	}
	var got livedumpv1.ListAgentsResponse
	if err := protojson.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output does not parse as ListAgentsResponse: %v", err)
	}
	want := &livedumpv1.ListAgentsResponse{Agents: tc.fake.agents()}
	if diff := cmpProto(want, &got); diff != "" {
		t.Errorf("json round trip differs: %s", diff)
	}
}

// cmpProto compares messages exactly, timestamps included.
func cmpProto(want, got proto.Message) string {
	if proto.Equal(want, got) {
		return ""
	}
	return fmt.Sprintf("want %s\ngot  %s", protojson.Format(want), protojson.Format(got))
}

func TestAgentsLabel(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "agents", "label", "ws-0001", "role=kiosk", "ring=canary", "site-")
	wantCall(t, tc, "LabelAgent", &livedumpv1.LabelAgentRequest{
		AgentId: "ws-0001",
		Set:     map[string]string{"role": "kiosk", "ring": "canary"},
		Remove:  []string{"site"},
	})
	rows := tableRows(out)
	if len(rows) != 2 || rows[1][0] != "ws-0001" || rows[1][len(rows[1])-1] != "ring=canary,role=kiosk" {
		t.Errorf("label output:\n%s", out)
	}
}

func TestAgentsRevoke(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "agents", "revoke", "ws-0002")
	wantCall(t, tc, "RevokeAgent", &livedumpv1.RevokeAgentRequest{AgentId: "ws-0002"})
	rows := tableRows(out)
	if len(rows) != 2 || rows[1][0] != "ws-0002" || rows[1][2] != "revoked" {
		t.Errorf("revoke output:\n%s", out)
	}
}

func TestTokensCreate(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "tokens", "create", "--uses", "50", "--ttl", "7d", "--labels", "site=ams,role=vdi")
	wantCall(t, tc, "CreateToken", &livedumpv1.CreateTokenRequest{
		Uses:   50,
		Ttl:    durationpb.New(7 * 24 * time.Hour),
		Labels: map[string]string{"site": "ams", "role": "vdi"},
	})
	for _, want := range []string{"tok-0001", "ldt_tok-0001_s3cr3t", "role=vdi,site=ams", "shown only once", "in 7d"} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}
}

func TestTokensCreateDefaultsAndJSON(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "tokens", "create", "-o", "json")
	wantCall(t, tc, "CreateToken", &livedumpv1.CreateTokenRequest{Uses: 1, Ttl: durationpb.New(24 * time.Hour), Labels: map[string]string{}})
	var got livedumpv1.CreateTokenResponse
	if err := protojson.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output does not parse as CreateTokenResponse: %v\n%s", err, out)
	}
	if got.GetSecret() != "ldt_tok-0001_s3cr3t" || got.GetToken().GetId() != "tok-0001" {
		t.Errorf("json response = %v", &got)
	}
	if strings.Contains(out, "shown only once") {
		t.Errorf("json output carries the table note:\n%s", out)
	}
}

func TestTokensList(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "tokens", "list")
	wantCall(t, tc, "ListTokens", &livedumpv1.ListTokensRequest{})
	rows := tableRows(out)
	if len(rows) != 3 {
		t.Fatalf("tokens list:\n%s", out)
	}
	if rows[1][0] != "tok-0001" || rows[1][1] != "active" || rows[1][2] != "3/5" || rows[1][len(rows[1])-1] != "site=lab" {
		t.Errorf("row 1: %q", rows[1])
	}
	if rows[2][0] != "tok-0002" || rows[2][1] != "expired" {
		t.Errorf("row 2: %q", rows[2])
	}
	if strings.Contains(out, "s3cr3t") {
		t.Errorf("list shows a secret")
	}
}

func TestTokensRevoke(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "tokens", "revoke", "tok-0009")
	wantCall(t, tc, "RevokeToken", &livedumpv1.RevokeTokenRequest{Id: "tok-0009"})
	rows := tableRows(out)
	if len(rows) != 2 || rows[1][0] != "tok-0009" || rows[1][1] != "revoked" {
		t.Errorf("revoke output:\n%s", out)
	}
}

func TestAuditList(t *testing.T) {
	tc := startController(t)
	before := time.Now()
	out := runOK(t, "audit", "list", "--limit", "10", "--since", "2h")
	got := tc.fake.received()
	if len(got) != 1 || got[0].method != "ListAudit" {
		t.Fatalf("calls: %v", got)
	}
	req := got[0].req.(*livedumpv1.ListAuditRequest)
	since := req.GetSince().AsTime()
	if req.GetLimit() != 10 || since.Before(before.Add(-2*time.Hour-time.Second)) || since.After(time.Now().Add(-2*time.Hour)) {
		t.Errorf("request = %v, want limit 10 and since about 2h ago", req)
	}
	rows := tableRows(out)
	if len(rows) != 3 || !slices.Equal(rows[0], []string{"ID", "TIME", "ACTOR", "ACTION", "TARGET", "SERIAL", "OUTCOME"}) {
		t.Fatalf("audit output:\n%s", out)
	}
	if !slices.Equal(rows[1][2:], []string{"operator/admin/test", "FleetService/LabelAgent", "ws-0001", "5eed42", "ok"}) || rows[1][0] != "42" {
		t.Errorf("row 1: %q", rows[1])
	}

	tc.fake.reset()
	runOK(t, "audit", "list", "--since", "2026-03-01T12:00:00Z")
	req = tc.fake.received()[0].req.(*livedumpv1.ListAuditRequest)
	if want := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC); !req.GetSince().AsTime().Equal(want) || req.GetLimit() != 100 {
		t.Errorf("request = %v, want since %v and the default limit 100", req, want)
	}

	tc.fake.reset()
	out = runOK(t, "audit", "list", "-o", "json")
	var resp livedumpv1.ListAuditResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&resp, &livedumpv1.ListAuditResponse{Entries: tc.fake.audit()}) || !strings.Contains(out, `"details"`) {
		t.Errorf("json audit:\n%s", out)
	}
}

func TestServerErrors(t *testing.T) {
	tests := []struct {
		err  error
		args []string
		want string
	}{
		{status.Error(codes.InvalidArgument, "selector: label key \"Bad\" is invalid"), []string{"agents", "list"},
			`livedumpctl: invalid argument: selector: label key "Bad" is invalid` + "\n"},
		{status.Error(codes.PermissionDenied, "role viewer may not call LabelAgent"), []string{"agents", "label", "ws-0001", "a=b"},
			"livedumpctl: permission denied: role viewer may not call LabelAgent\n"},
		{status.Error(codes.NotFound, "agent \"ws-0404\" not found"), []string{"agents", "revoke", "ws-0404"},
			"livedumpctl: not found: agent \"ws-0404\" not found\n"},
		{status.Error(codes.FailedPrecondition, "token tok-1 is\nalready revoked"), []string{"tokens", "revoke", "tok-1"},
			"livedumpctl: failed precondition: token tok-1 is already revoked\n"},
	}
	for _, tt := range tests {
		t.Run(status.Code(tt.err).String(), func(t *testing.T) {
			tc := startController(t)
			tc.fake.setErr(tt.err)
			code, stdout, stderr := runCLI(t, tt.args...)
			wantOneLineError(t, code, stdout, stderr)
			if code != exitError {
				t.Errorf("exit %d, want %d", code, exitError)
			}
			if stderr != tt.want {
				t.Errorf("stderr = %q, want %q", stderr, tt.want)
			}
		})
	}
}

func TestConnectionFailures(t *testing.T) {
	t.Run("untrusted server certificate", func(t *testing.T) {
		tc := startController(t)
		other := newPKI(t) // a different CA: pinning must refuse the server
		code, stdout, stderr := runCLI(t, "--ca", other.caFile, "agents", "list")
		wantOneLineError(t, code, stdout, stderr, "unavailable", "certificate")
		if n := len(tc.fake.received()); n != 0 {
			t.Errorf("server got %d calls over an untrusted connection", n)
		}
	})
	t.Run("server name is the controller host", func(t *testing.T) {
		tc := startController(t)
		// The server certificate is for 127.0.0.1 only.
		_, port, _ := strings.Cut(tc.addr, ":")
		code, stdout, stderr := runCLI(t, "--controller", "localhost:"+port, "agents", "list")
		wantOneLineError(t, code, stdout, stderr, "localhost", "certificate")
	})
	t.Run("timeout", func(t *testing.T) {
		tc := startController(t)
		tc.fake.setDelay(5 * time.Second)
		code, stdout, stderr := runCLI(t, "--timeout", "300ms", "agents", "list")
		wantOneLineError(t, code, stdout, stderr, "no answer from controller", "300ms")
	})
	t.Run("nobody listening", func(t *testing.T) {
		startController(t)
		code, stdout, stderr := runCLI(t, "--controller", "127.0.0.1:1", "agents", "list")
		wantOneLineError(t, code, stdout, stderr, "controller 127.0.0.1:1 unavailable")
	})
	t.Run("missing cert file", func(t *testing.T) {
		startController(t)
		code, stdout, stderr := runCLI(t, "--cert", filepath.Join(t.TempDir(), "nope.crt"), "agents", "list")
		wantOneLineError(t, code, stdout, stderr, "cert:", "nope.crt")
	})
	t.Run("key does not match certificate", func(t *testing.T) {
		startController(t)
		other := newPKI(t)
		code, stdout, stderr := runCLI(t, "--key", other.keyFile, "agents", "list")
		wantOneLineError(t, code, stdout, stderr, "does not match")
	})
}

func TestVersionAndCompletion(t *testing.T) {
	isolateEnv(t)
	out := runOK(t, "version")
	if !strings.HasPrefix(out, "livedumpctl ") {
		t.Errorf("version = %q", out)
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		out := runOK(t, "completion", shell)
		if !strings.Contains(out, "livedumpctl") || len(out) < 500 {
			t.Errorf("completion %s looks wrong: %.200q", shell, out)
		}
	}
	help := runOK(t, "--help")
	for _, want := range []string{"completion", "LIVEDUMPCTL_CONFIG", "LIVEDUMP_CONTROLLER", "agents", "tokens", "audit"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	// Dynamic completion of -o values.
	// (cobra reports the completion directive on stderr.)
	_, out, _ = runCLI(t, "__complete", "agents", "list", "-o", "")
	if !strings.Contains(out, "table") || !strings.Contains(out, "json") {
		t.Errorf("-o completion = %q", out)
	}
	code, stdout, stderr := runCLI(t, "completion", "tcsh")
	wantOneLineError(t, code, stdout, stderr, `"tcsh"`)
}

func TestProvisioningColumn(t *testing.T) {
	for _, tc := range []struct {
		st     livedumpv1.ProvisionState
		detail string
		want   string
	}{
		{livedumpv1.ProvisionState_PROVISION_STATE_UNSPECIFIED, "", "-"},
		{livedumpv1.ProvisionState_PROVISION_STATE_READY, "", "ready"},
		{livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED, "why", "reboot-required"},
		{livedumpv1.ProvisionState_PROVISION_STATE_BLOCKED, "BitLocker is on for C:", "blocked: BitLocker is on for C:"},
		{livedumpv1.ProvisionState_PROVISION_STATE_FAILED, "bcd.dtrace: denied", "failed: bcd.dtrace: denied"},
	} {
		got := provisioning(&livedumpv1.Agent{ProvisionState: tc.st, ProvisionDetail: tc.detail})
		if got != tc.want {
			t.Errorf("provisioning(%v, %q) = %q, want %q", tc.st, tc.detail, got, tc.want)
		}
	}
}

func TestOperatorsList(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "operators", "list")
	wantCall(t, tc, "ListOperatorCertificates", &livedumpv1.ListOperatorCertificatesRequest{Limit: 1000})
	rows := tableRows(out)
	if len(rows) != 4 || !slices.Equal(rows[0], []string{"SERIAL", "OPERATOR", "STATE", "ISSUED", "EXPIRES", "LAST", "SEEN"}) {
		t.Fatalf("operators list:\n%s", out)
	}
	if rows[1][0] != "a11ce" || rows[1][1] != "operator/admin/alice" || rows[1][2] != "active" {
		t.Errorf("row 1: %q", rows[1])
	}
	if rows[2][0] != "b0b" || rows[2][2] != "revoked" {
		t.Errorf("row 2: %q", rows[2])
	}
	if rows[3][0] != "c0ffee" || rows[3][1] != "-" {
		t.Errorf("row 3 (a serial revoked before it was seen): %q", rows[3])
	}
	tc.fake.reset()
	out = runOK(t, "operators", "list", "-o", "json", "--limit", "5")
	wantCall(t, tc, "ListOperatorCertificates", &livedumpv1.ListOperatorCertificatesRequest{Limit: 5})
	var resp livedumpv1.ListOperatorCertificatesResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil || len(resp.GetCertificates()) != 3 {
		t.Fatalf("json: %v\n%s", err, out)
	}
}

func TestOperatorsRevoke(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "operators", "revoke", "0B:0B")
	wantCall(t, tc, "RevokeOperatorCertificate", &livedumpv1.RevokeOperatorCertificateRequest{
		Target: &livedumpv1.RevokeOperatorCertificateRequest_Serial{Serial: "b0b"},
	})
	if rows := tableRows(out); len(rows) != 2 || rows[1][0] != "b0b" || rows[1][2] != "revoked" {
		t.Errorf("revoke output:\n%s", out)
	}
	tc.fake.reset()
	out = runOK(t, "operators", "revoke", "--name", "bob")
	wantCall(t, tc, "RevokeOperatorCertificate", &livedumpv1.RevokeOperatorCertificateRequest{
		Target: &livedumpv1.RevokeOperatorCertificateRequest_Name{Name: "bob"},
	})
	if !strings.Contains(out, "Every certificate of operator bob issued before") {
		t.Errorf("revoke by name output:\n%s", out)
	}
	for _, args := range [][]string{
		{"operators", "revoke"},
		{"operators", "revoke", "b0b", "--name", "bob"},
		{"operators", "revoke", "not-hex"},
		{"operators", "revoke", "--name", "bad name"},
	} {
		if code, _, stderr := runCLI(t, args...); code != 2 || stderr == "" {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, code, stderr)
		}
	}
}
