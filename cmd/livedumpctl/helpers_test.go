package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/testca"
)

// isolateEnv keeps the developer's own configuration out of a test: no
// LIVEDUMP_* variables, and a user config dir that is an empty temp dir.
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{keyController, keyCA, keyCert, keyKey, keyOutput, keyTimeout} {
		t.Setenv("LIVEDUMP_"+strings.ToUpper(k), "")
	}
	t.Setenv(envConfigFile, "")
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("AppData", filepath.Join(home, "AppData"))
}

// runCLI runs livedumpctl in-process and returns its exit status, stdout
// and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// wantOneLineError checks the error contract: a non-zero status, nothing on
// stdout, and exactly one line on stderr containing every wanted string.
func wantOneLineError(t *testing.T, code int, stdout, stderr string, want ...string) {
	t.Helper()
	if code == 0 {
		t.Errorf("exit status 0, want non-zero")
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want empty", stdout)
	}
	if !strings.HasPrefix(stderr, "livedumpctl: ") || !strings.HasSuffix(stderr, "\n") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr is not one 'livedumpctl: ...' line: %q", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q does not mention %q", stderr, w)
		}
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pkiFiles are the PEM files of one test PKI.
type pkiFiles struct {
	dir              string
	ca               *testca.CA
	caFile           string
	certFile         string
	keyFile          string
	serverCert       tls.Certificate
	operatorIdentity pki.Identity
}

// newPKI creates a CA, a server certificate for 127.0.0.1 and an admin
// operator certificate, and writes the operator's files into a temp dir.
func newPKI(t *testing.T) *pkiFiles {
	t.Helper()
	ca := testca.New(t, testca.Options{TTL: time.Hour})
	srvCert := ca.Server(t, "127.0.0.1")
	id := pki.OperatorIdentity(pki.RoleAdmin, "test")
	opCert := ca.Client(t, id)
	dir := t.TempDir()
	p := &pkiFiles{
		dir:              dir,
		ca:               ca,
		caFile:           filepath.Join(dir, "ca.crt"),
		certFile:         filepath.Join(dir, "operator.crt"),
		keyFile:          filepath.Join(dir, "operator.key"),
		serverCert:       *srvCert,
		operatorIdentity: id,
	}
	if err := pki.WriteCerts(p.caFile, ca.Cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCerts(p.certFile, opCert.Leaf); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(p.keyFile, testca.Key(opCert)); err != nil {
		t.Fatal(err)
	}
	return p
}

// received is one request the fake received.
type received struct {
	method string
	req    proto.Message
	caller string // identity from the client certificate
}

// fakeFleet is a FleetService that records requests and answers with
// canned data. It insists on TLS 1.3 and a livedump client certificate, so
// the tests prove the CLI really speaks mTLS.
type fakeFleet struct {
	livedumpv1.UnimplementedFleetServiceServer

	now time.Time

	mu    sync.Mutex
	calls []received
	err   error         // returned by every method when set
	delay time.Duration // slows every method down
	paged bool          // lists answer one item per page
	// moreAgents are listed after the two canned agents.
	moreAgents []*livedumpv1.Agent
	denyLog    bool // DescribeAgent refuses log_lines as it does a viewer
}

func (f *fakeFleet) record(ctx context.Context, method string, req proto.Message) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return status.Error(codes.Unauthenticated, "no client certificate")
	}
	if ti.State.Version != tls.VersionTLS13 {
		return status.Errorf(codes.Unauthenticated, "TLS version %x, want 1.3", ti.State.Version)
	}
	id, err := pki.IdentityFromCert(ti.State.PeerCertificates[0])
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	f.calls = append(f.calls, received{method: method, req: proto.Clone(req), caller: id.String()})
	ferr, delay := f.err, f.delay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ferr
}

func (f *fakeFleet) received() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.calls...)
}

func (f *fakeFleet) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *fakeFleet) setDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

func (f *fakeFleet) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func (f *fakeFleet) agents() []*livedumpv1.Agent {
	f.mu.Lock()
	more := f.moreAgents
	f.mu.Unlock()
	return append([]*livedumpv1.Agent{
		{
			Id:       "ws-0001",
			Hostname: "WS-0001",
			Labels:   map[string]string{"hostname": "WS-0001", "os.build": "22631", "site": "lab", "role": "vdi"},
			Inventory: &livedumpv1.Inventory{
				Hostname: "WS-0001", OsBuild: "22631", OsUbr: 4037, OsEdition: "Enterprise",
				AgentVersion: "1.2.3",
			},
			State:          livedumpv1.AgentState_AGENT_STATE_ONLINE,
			LastSeen:       ts(f.now.Add(-3 * time.Minute)),
			ProvisionState: livedumpv1.ProvisionState_PROVISION_STATE_READY,
		},
		{
			Id:        "ws-0002",
			Hostname:  "WS-0002",
			Labels:    map[string]string{"hostname": "WS-0002", "os.build": "19045"},
			Inventory: &livedumpv1.Inventory{Hostname: "WS-0002", OsBuild: "19045", OsEdition: "Professional", AgentVersion: "1.2.2"},
			State:     livedumpv1.AgentState_AGENT_STATE_OFFLINE,
			LastSeen:  ts(f.now.Add(-50 * time.Hour)),
		},
	}, more...)
}

func (f *fakeFleet) ListAgents(ctx context.Context, req *livedumpv1.ListAgentsRequest) (*livedumpv1.ListAgentsResponse, error) {
	if err := f.record(ctx, "ListAgents", req); err != nil {
		return nil, err
	}
	agents, next := pageOf(f, f.agents(), req.GetAfter())
	return &livedumpv1.ListAgentsResponse{Agents: agents, Next: next}, nil
}

func (f *fakeFleet) LabelAgent(ctx context.Context, req *livedumpv1.LabelAgentRequest) (*livedumpv1.LabelAgentResponse, error) {
	if err := f.record(ctx, "LabelAgent", req); err != nil {
		return nil, err
	}
	ag := f.agents()[0]
	ag.Id = req.GetAgentId()
	for k, v := range req.GetSet() {
		ag.Labels[k] = v
	}
	for _, k := range req.GetRemove() {
		delete(ag.Labels, k)
	}
	return &livedumpv1.LabelAgentResponse{Agent: ag}, nil
}

func (f *fakeFleet) RevokeAgent(ctx context.Context, req *livedumpv1.RevokeAgentRequest) (*livedumpv1.RevokeAgentResponse, error) {
	if err := f.record(ctx, "RevokeAgent", req); err != nil {
		return nil, err
	}
	ag := f.agents()[1]
	ag.Id = req.GetAgentId()
	ag.State = livedumpv1.AgentState_AGENT_STATE_REVOKED
	return &livedumpv1.RevokeAgentResponse{Agent: ag}, nil
}

func (f *fakeFleet) CreateToken(ctx context.Context, req *livedumpv1.CreateTokenRequest) (*livedumpv1.CreateTokenResponse, error) {
	if err := f.record(ctx, "CreateToken", req); err != nil {
		return nil, err
	}
	return &livedumpv1.CreateTokenResponse{
		Token: &livedumpv1.Token{
			Id: "tok-0001", Uses: req.GetUses(), UsesLeft: req.GetUses(),
			Created: ts(f.now), Expires: ts(f.now.Add(req.GetTtl().AsDuration())),
			Labels: req.GetLabels(), CreatedBy: "operator/admin/test",
		},
		Secret: "ldt_tok-0001_s3cr3t",
	}, nil
}

func (f *fakeFleet) tokens() []*livedumpv1.Token {
	return []*livedumpv1.Token{
		{Id: "tok-0001", Uses: 5, UsesLeft: 3, Created: ts(f.now.Add(-time.Hour)), Expires: ts(f.now.Add(23 * time.Hour)), Labels: map[string]string{"site": "lab"}, CreatedBy: "operator/admin/test"},
		{Id: "tok-0002", Uses: 1, UsesLeft: 1, Created: ts(f.now.Add(-72 * time.Hour)), Expires: ts(f.now.Add(-48 * time.Hour)), CreatedBy: "operator/admin/test"},
	}
}

func (f *fakeFleet) ListTokens(ctx context.Context, req *livedumpv1.ListTokensRequest) (*livedumpv1.ListTokensResponse, error) {
	if err := f.record(ctx, "ListTokens", req); err != nil {
		return nil, err
	}
	tokens, next := pageOf(f, f.tokens(), req.GetAfter())
	return &livedumpv1.ListTokensResponse{Tokens: tokens, Next: next}, nil
}

func (f *fakeFleet) RevokeToken(ctx context.Context, req *livedumpv1.RevokeTokenRequest) (*livedumpv1.RevokeTokenResponse, error) {
	if err := f.record(ctx, "RevokeToken", req); err != nil {
		return nil, err
	}
	tok := f.tokens()[0]
	tok.Id = req.GetId()
	tok.Revoked = true
	return &livedumpv1.RevokeTokenResponse{Token: tok}, nil
}

func (f *fakeFleet) audit() []*livedumpv1.AuditEntry {
	return []*livedumpv1.AuditEntry{
		{Id: 42, Time: ts(f.now.Add(-time.Minute)), Actor: "operator/admin/test", Action: "FleetService/LabelAgent", Target: "ws-0001", Outcome: "ok", Details: `{"set":{"role":"vdi"}}`, CertSerial: "5eed42"},
		{Id: 41, Time: ts(f.now.Add(-time.Hour)), Actor: "operator/viewer/bob", Action: "FleetService/RevokeAgent", Target: "ws-0002", Outcome: "PermissionDenied: role viewer may not call RevokeAgent"},
	}
}

func (f *fakeFleet) operatorCerts() []*livedumpv1.OperatorCertificate {
	return []*livedumpv1.OperatorCertificate{
		{Serial: "a11ce", Role: "admin", Name: "alice", Issued: ts(f.now.Add(-48 * time.Hour)), NotAfter: ts(f.now.Add(28 * 24 * time.Hour)), FirstSeen: ts(f.now.Add(-47 * time.Hour)), LastSeen: ts(f.now.Add(-5 * time.Minute))},
		{Serial: "b0b", Role: "viewer", Name: "bob", Issued: ts(f.now.Add(-72 * time.Hour)), NotAfter: ts(f.now.Add(27 * 24 * time.Hour)), RevokedAt: ts(f.now.Add(-time.Hour)), RevokedBy: "operator/admin/alice"},
		{Serial: "c0ffee", RevokedAt: ts(f.now.Add(-2 * time.Hour)), RevokedBy: "operator/admin/alice"},
	}
}

func (f *fakeFleet) ListOperatorCertificates(ctx context.Context, req *livedumpv1.ListOperatorCertificatesRequest) (*livedumpv1.ListOperatorCertificatesResponse, error) {
	if err := f.record(ctx, "ListOperatorCertificates", req); err != nil {
		return nil, err
	}
	return &livedumpv1.ListOperatorCertificatesResponse{Certificates: f.operatorCerts()}, nil
}

func (f *fakeFleet) RevokeOperatorCertificate(ctx context.Context, req *livedumpv1.RevokeOperatorCertificateRequest) (*livedumpv1.RevokeOperatorCertificateResponse, error) {
	if err := f.record(ctx, "RevokeOperatorCertificate", req); err != nil {
		return nil, err
	}
	return &livedumpv1.RevokeOperatorCertificateResponse{Certificates: f.operatorCerts()[1:2], RevokedAt: ts(f.now)}, nil
}

func (f *fakeFleet) ListAudit(ctx context.Context, req *livedumpv1.ListAuditRequest) (*livedumpv1.ListAuditResponse, error) {
	if err := f.record(ctx, "ListAudit", req); err != nil {
		return nil, err
	}
	entries, next := pageOf(f, f.audit(), req.GetAfter())
	if len(entries) > int(req.GetLimit()) {
		entries = entries[:req.GetLimit()]
	}
	return &livedumpv1.ListAuditResponse{Entries: entries, Next: next}, nil
}

// testController is a fake controller on 127.0.0.1 with real mTLS, and
// a livedumpctl config file that points at it.
type testController struct {
	*pkiFiles
	addr       string
	fake       *fakeFleet
	configFile string
}

// startController starts the fake FleetService and writes a config file
// with paths relative to the config file's directory, which it exports
// through LIVEDUMPCTL_CONFIG.
func startController(t *testing.T) *testController {
	t.Helper()
	isolateEnv(t)
	p := newPKI(t)
	fake := &fakeFleet{now: time.Now()}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(p.ca.ServerTLS(&p.serverCert, tls.RequireAndVerifyClientCert))))
	livedumpv1.RegisterFleetServiceServer(srv, fake)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	tc := &testController{pkiFiles: p, addr: lis.Addr().String(), fake: fake}
	tc.configFile = writeFile(t, filepath.Join(p.dir, "livedumpctl.yaml"), fmt.Sprintf(
		"controller: %s\nca: ca.crt\ncert: operator.crt\nkey: operator.key\ntimeout: 10s\n", tc.addr))
	t.Setenv(envConfigFile, tc.configFile)
	return tc
}
