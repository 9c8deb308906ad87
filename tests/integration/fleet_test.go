package integration

import (
	"context"
	"crypto"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/testca"
)

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if substr != "" && !strings.Contains(status.Convert(err).Message(), substr) {
		t.Fatalf("error %q does not mention %q", status.Convert(err).Message(), substr)
	}
}

// startLab runs a controller and three agents labelled like dev mode.
func startLab(t *testing.T) (*testController, []*testAgent) {
	c := startController(t, controllerOpts{})
	tok := c.token(t, 3, map[string]string{"site": "lab"})
	var agents []*testAgent
	for i, role := range []string{"vdi", "vdi", "kiosk"} {
		agents = append(agents, startAgent(t, c, agentOpts{token: tok, labels: map[string]string{"role": role}, hostname: "LAB-" + strings.ToUpper(role) + "-0" + string(rune('1'+i))}))
	}
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 15*time.Second, "3 agents online", func() bool { return countOnline(listAgents(t, admin, "")) == 3 })
	return c, agents
}

func TestFleetSelectors(t *testing.T) {
	c, _ := startLab(t)
	viewer := fleetClient(t, c, pki.RoleViewer)
	for _, tc := range []struct {
		sel  string
		want int
	}{
		{"", 3},
		{"role=vdi", 2},
		{"role in (kiosk)", 1},
		{"site=lab,role notin (kiosk)", 2},
		{"!canary", 3},
		{"os.build=22631", 3},
		{"hostname=LAB-KIOSK-03", 1},
		{"role=db", 0},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			got := listAgents(t, viewer, tc.sel)
			if len(got) != tc.want {
				t.Fatalf("selector %q matched %d agents, want %d", tc.sel, len(got), tc.want)
			}
		})
	}
	a := listAgents(t, viewer, "role=kiosk")[0]
	if a.GetInventory().GetOsBuild() != "22631" || a.GetInventory().GetArch() != "amd64" || a.GetLabels()["site"] != "lab" {
		t.Fatalf("agent inventory/labels not reported: %v", a)
	}
	if a.GetCertificateExpires().AsTime().Before(time.Now().Add(29 * 24 * time.Hour)) {
		t.Fatalf("certificate expiry %v, want about 30 days", a.GetCertificateExpires().AsTime())
	}
}

func TestTokenUsesEnforced(t *testing.T) {
	c := startController(t, controllerOpts{})
	tok := c.token(t, 2, nil)
	for i := range 2 {
		if _, _, err := enrollRaw(t, c, tok); err != nil {
			t.Fatalf("enrollment %d: %v", i+1, err)
		}
	}
	_, _, err := enrollRaw(t, c, tok)
	wantCode(t, err, codes.PermissionDenied, "enrollment denied")

	// A wrong secret for a valid ID is denied the same way.
	id, _, _ := strings.Cut(strings.TrimPrefix(c.token(t, 5, nil), "ldt_"), "_")
	_, _, err = enrollRaw(t, c, "ldt_"+id+"_"+strings.Repeat("a", 32))
	wantCode(t, err, codes.PermissionDenied, "enrollment denied")

	_, _, err = enrollRaw(t, c, "not-a-token")
	wantCode(t, err, codes.InvalidArgument, "token")
}

func TestTokenTTLEnforced(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Now())
	c := startController(t, controllerOpts{clock: clock})
	admin := fleetClient(t, c, pki.RoleAdmin)
	resp, err := admin.CreateToken(context.Background(), &livedumpv1.CreateTokenRequest{Uses: 5, Ttl: durationpb.New(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := enrollRaw(t, c, resp.GetSecret()); err != nil {
		t.Fatalf("enroll within TTL: %v", err)
	}
	clock.Advance(11 * time.Minute)
	_, _, err = enrollRaw(t, c, resp.GetSecret())
	wantCode(t, err, codes.PermissionDenied, "enrollment denied")

	// A revoked token is refused too.
	resp, err = admin.CreateToken(context.Background(), &livedumpv1.CreateTokenRequest{Uses: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeToken(context.Background(), &livedumpv1.RevokeTokenRequest{Id: resp.GetToken().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, _, err = enrollRaw(t, c, resp.GetSecret())
	wantCode(t, err, codes.PermissionDenied, "enrollment denied")
}

func TestFleetServiceRequiresOperatorCertificate(t *testing.T) {
	c := startController(t, controllerOpts{})
	ctx := context.Background()

	noCert := livedumpv1.NewFleetServiceClient(dial(t, c, nil))
	_, err := noCert.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	wantCode(t, err, codes.Unauthenticated, "operator client certificate")

	agentID, agentCert, err := enrollRaw(t, c, c.token(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	asAgent := livedumpv1.NewFleetServiceClient(dial(t, c, agentCert))
	_, err = asAgent.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	wantCode(t, err, codes.PermissionDenied, "only be called by operators")

	// An operator cannot use the agent API either.
	asOperator := livedumpv1.NewAgentServiceClient(dial(t, c, issue(t, c, pki.OperatorIdentity(pki.RoleAdmin, "root"))))
	_, err = asOperator.Renew(ctx, &livedumpv1.RenewRequest{})
	wantCode(t, err, codes.PermissionDenied, "only be called by agents")

	// A certificate from another CA does not even complete the handshake.
	other := testca.New(t, testca.Options{Name: "other", TTL: time.Hour})
	forged := other.Operator(t, pki.RoleAdmin, "mallory")
	asForged := livedumpv1.NewFleetServiceClient(dial(t, c, forged))
	_, err = asForged.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	if err == nil || status.Code(err) == codes.OK {
		t.Fatal("a certificate from a foreign CA was accepted")
	}
	_ = agentID
}

func TestRoles(t *testing.T) {
	c := startController(t, controllerOpts{})
	agentID, _, err := enrollRaw(t, c, c.token(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	label := &livedumpv1.LabelAgentRequest{AgentId: agentID, Set: map[string]string{"team": "desktop"}}

	viewer := fleetClient(t, c, pki.RoleViewer)
	if _, err := viewer.ListAgents(ctx, &livedumpv1.ListAgentsRequest{}); err != nil {
		t.Fatalf("viewer ListAgents: %v", err)
	}
	_, err = viewer.LabelAgent(ctx, label)
	wantCode(t, err, codes.PermissionDenied, "role viewer may not call FleetService/LabelAgent")
	_, err = viewer.ListAudit(ctx, &livedumpv1.ListAuditRequest{})
	wantCode(t, err, codes.PermissionDenied, "")

	operator := fleetClient(t, c, pki.RoleOperator)
	if _, err := operator.LabelAgent(ctx, label); err != nil {
		t.Fatalf("operator LabelAgent: %v", err)
	}
	_, err = operator.CreateToken(ctx, &livedumpv1.CreateTokenRequest{})
	wantCode(t, err, codes.PermissionDenied, "needs admin")
	_, err = operator.RevokeAgent(ctx, &livedumpv1.RevokeAgentRequest{AgentId: agentID})
	wantCode(t, err, codes.PermissionDenied, "needs admin")

	// The audit log shows who did what, including the refused attempt.
	admin := fleetClient(t, c, pki.RoleAdmin)
	audit, err := admin.ListAudit(ctx, &livedumpv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var sawDenied, sawLabel, sawEnroll bool
	for _, e := range audit.GetEntries() {
		switch {
		case e.GetAction() == "FleetService/LabelAgent" && e.GetActor() == "operator/viewer/test-viewer" && strings.HasPrefix(e.GetOutcome(), "permissiondenied"):
			sawDenied = true
		case e.GetAction() == "FleetService/LabelAgent" && e.GetActor() == "operator/operator/test-operator" && e.GetOutcome() == "ok" && e.GetTarget() == agentID:
			sawLabel = strings.Contains(e.GetDetails(), "desktop")
		case e.GetAction() == "AgentService/Enroll" && strings.HasPrefix(e.GetActor(), "token/") && e.GetTarget() == agentID:
			sawEnroll = !strings.Contains(e.GetDetails(), "ldt_")
		}
		if e.GetTime() == nil {
			t.Fatalf("audit entry without time: %v", e)
		}
	}
	if !sawDenied || !sawLabel || !sawEnroll {
		t.Fatalf("audit log incomplete (denied=%v label=%v enroll=%v): %v", sawDenied, sawLabel, sawEnroll, audit.GetEntries())
	}
}

func TestAgentCannotSpeakForAnother(t *testing.T) {
	c := startController(t, controllerOpts{})
	tok := c.token(t, 2, nil)
	_, certA, err := enrollRaw(t, c, tok)
	if err != nil {
		t.Fatal(err)
	}
	idB, _, err := enrollRaw(t, c, tok)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := livedumpv1.NewAgentServiceClient(dial(t, c, certA)).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: idB, Inventory: testInventory("EVIL")}}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantCode(t, err, codes.PermissionDenied, "may not speak for agent")
	admin := fleetClient(t, c, pki.RoleAdmin)
	for _, a := range listAgents(t, admin, "") {
		if a.GetHostname() == "EVIL" {
			t.Fatalf("agent %s's inventory was overwritten through another agent's stream", a.GetId())
		}
	}
}

func TestRevokedAgentIsDisconnectedAndRefused(t *testing.T) {
	c := startController(t, controllerOpts{})
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, nil)})
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, admin, "")) == 1 })
	id := a.ID()

	resp, err := admin.RevokeAgent(context.Background(), &livedumpv1.RevokeAgentRequest{AgentId: id})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAgent().GetState() != livedumpv1.AgentState_AGENT_STATE_REVOKED {
		t.Fatalf("state after revoke = %v", resp.GetAgent().GetState())
	}
	eventually(t, 10*time.Second, "revoked agent disconnected", func() bool { return c.Controller.Store() != nil && countOnline(listAgents(t, admin, "")) == 0 })
	// It stays out: its reconnect attempts are refused.
	time.Sleep(700 * time.Millisecond)
	if n := countOnline(listAgents(t, admin, "")); n != 0 {
		t.Fatalf("%d agents online after revocation", n)
	}

	// Its certificate is still cryptographically valid; every RPC is refused.
	ident, err := session.LoadIdentity(a.stateDir)
	if err != nil || ident == nil {
		t.Fatalf("load identity: %v", err)
	}
	ac := livedumpv1.NewAgentServiceClient(dial(t, c, ident.TLSCertificate()))
	_, err = ac.Renew(context.Background(), &livedumpv1.RenewRequest{})
	wantCode(t, err, codes.PermissionDenied, "revoked")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := ac.Connect(ctx)
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.PermissionDenied, "revoked")
}

func TestCertificateRenewsBeforeExpiry(t *testing.T) {
	c := startController(t, controllerOpts{})
	clock := clockwork.NewFakeClockAt(time.Now())
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, nil), clock: clock})
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, admin, "")) == 1 })
	first := a.Session().Identity().Leaf()

	// Just before two thirds of its life: nothing happens.
	life := first.NotAfter.Sub(first.NotBefore)
	clock.Advance(time.Until(first.NotBefore.Add(life*2/3)) - time.Hour)
	time.Sleep(300 * time.Millisecond)
	if got := a.Session().Identity().Leaf(); !got.Equal(first) {
		t.Fatalf("renewed %s early", time.Until(got.NotBefore.Add(life*2/3)))
	}

	// Past two thirds: the agent renews over its live connection.
	clock.Advance(2 * time.Hour)
	eventually(t, 10*time.Second, "certificate renewed", func() bool { return !a.Session().Identity().Leaf().Equal(first) })
	renewed := a.Session().Identity().Leaf()
	// The controller runs on the real clock here, so only the agent's view of
	// time moved: the new certificate is fresh, for a new key, same identity.
	if renewed.NotAfter.Before(first.NotAfter) || pki.SerialHex(renewed) == pki.SerialHex(first) {
		t.Fatalf("renewed certificate (serial %s, expires %v) is not newer than the old one (serial %s, expires %v)",
			pki.SerialHex(renewed), renewed.NotAfter, pki.SerialHex(first), first.NotAfter)
	}
	if renewed.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(first.PublicKey) {
		t.Fatal("renewal reused the old key")
	}
	if id, _ := pki.IdentityFromCert(renewed); id.AgentID != a.ID() {
		t.Fatalf("renewed certificate names %v, want agent %s", id, a.ID())
	}
	onDisk, err := session.LoadIdentity(a.stateDir)
	if err != nil || !onDisk.Leaf().Equal(renewed) {
		t.Fatalf("identity on disk is not the renewed one (err %v)", err)
	}
	stored, err := c.Store().GetAgent(context.Background(), a.ID())
	if err != nil || stored.CertSerial != pki.SerialHex(renewed) {
		t.Fatalf("store has serial %q, want %q (err %v)", stored.CertSerial, pki.SerialHex(renewed), err)
	}
	// The agent moves its stream to a connection with the renewed
	// certificate at once (the controller accepts the replaced one only for
	// a grace window), so it may be between streams for a moment.
	eventually(t, 10*time.Second, "agent online after renewal", func() bool { return countOnline(listAgents(t, admin, "")) == 1 })
	// The renewed identity works on a fresh connection.
	fresh := livedumpv1.NewAgentServiceClient(dial(t, c, a.Session().Identity().TLSCertificate()))
	if _, err := fresh.Renew(context.Background(), &livedumpv1.RenewRequest{Csr: mustCSR(t)}); err != nil {
		t.Fatalf("RPC with renewed certificate: %v", err)
	}
}

func mustCSR(t *testing.T) []byte {
	_, der := testca.KeyCSR(t)
	return der
}

func TestBadInputNamesTheField(t *testing.T) {
	c := startController(t, controllerOpts{})
	agentID, _, err := enrollRaw(t, c, c.token(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	admin := fleetClient(t, c, pki.RoleAdmin)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"malformed selector", func() error {
			_, err := admin.ListAgents(ctx, &livedumpv1.ListAgentsRequest{Selector: "role in (vdi"})
			return err
		}, "selector"},
		{"bad label key", func() error {
			_, err := admin.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: agentID, Set: map[string]string{"-bad key": "x"}})
			return err
		}, "set: label key"},
		{"bad label value", func() error {
			_, err := admin.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: agentID, Set: map[string]string{"team": "has space"}})
			return err
		}, "set: label \"team\" value"},
		{"built-in label", func() error {
			_, err := admin.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: agentID, Set: map[string]string{"hostname": "x"}})
			return err
		}, "built-in"},
		{"bad agent id", func() error {
			_, err := admin.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: "../etc", Set: map[string]string{"a": "b"}})
			return err
		}, "agent_id"},
		{"token ttl too short", func() error {
			_, err := admin.CreateToken(ctx, &livedumpv1.CreateTokenRequest{Ttl: durationpb.New(time.Second)})
			return err
		}, "ttl"},
		{"token ttl negative", func() error {
			_, err := admin.CreateToken(ctx, &livedumpv1.CreateTokenRequest{Ttl: durationpb.New(-time.Hour)})
			return err
		}, "ttl"},
		{"token uses", func() error {
			_, err := admin.CreateToken(ctx, &livedumpv1.CreateTokenRequest{Uses: -1})
			return err
		}, "uses"},
		{"token labels", func() error {
			_, err := admin.CreateToken(ctx, &livedumpv1.CreateTokenRequest{Labels: map[string]string{"os.build": "1"}})
			return err
		}, "labels"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), codes.InvalidArgument, tc.field) })
	}
	// Nothing was lost: the agent's labels are untouched.
	a := listAgents(t, admin, "")[0]
	if _, ok := a.GetLabels()["team"]; ok {
		t.Fatalf("rejected label was stored: %v", a.GetLabels())
	}
}

func TestRestartKeepsIdentitiesAndLabels(t *testing.T) {
	dataDir := t.TempDir()
	c := startController(t, controllerOpts{dataDir: dataDir})
	tok := c.token(t, 2, map[string]string{"site": "lab"})
	var dirs []string
	var agents []*testAgent
	for range 2 {
		a := startAgent(t, c, agentOpts{token: tok})
		agents = append(agents, a)
		dirs = append(dirs, a.stateDir)
	}
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 10*time.Second, "2 agents online", func() bool { return countOnline(listAgents(t, admin, "")) == 2 })
	ids := []string{agents[0].ID(), agents[1].ID()}
	if _, err := admin.LabelAgent(context.Background(), &livedumpv1.LabelAgentRequest{AgentId: ids[0], Set: map[string]string{"ring": "canary"}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		a.stop()
	}
	c.stop()

	// Same data dir, same agent state dirs, and no token: re-enrolling is impossible.
	c2 := startController(t, controllerOpts{dataDir: dataDir})
	c2.caFile = c.caFile
	for _, d := range dirs {
		startAgent(t, c2, agentOpts{stateDir: d})
	}
	admin2 := fleetClient(t, c2, pki.RoleAdmin)
	eventually(t, 15*time.Second, "same 2 agents back online", func() bool { return countOnline(listAgents(t, admin2, "")) == 2 })
	var got []string
	for _, a := range listAgents(t, admin2, "") {
		got = append(got, a.GetId())
	}
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("agents after restart %v, want %v", got, ids)
	}
	if n := len(listAgents(t, admin2, "ring=canary,site=lab")); n != 1 {
		t.Fatalf("label did not persist: %d agents match ring=canary,site=lab", n)
	}
	audit, err := admin2.ListAudit(context.Background(), &livedumpv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	enrolls := 0
	for _, e := range audit.GetEntries() {
		if e.GetAction() == "AgentService/Enroll" {
			enrolls++
		}
	}
	if enrolls != 2 {
		t.Fatalf("%d enrollments in the audit log, want 2 (no re-enrollment)", enrolls)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lint applies the same checks as `promtool check metrics`.
func lint(t *testing.T, side, text string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("%s metrics do not parse: %v", side, err)
	}
	for _, p := range problems {
		t.Errorf("%s metric %s: %s", side, p.Metric, p.Text)
	}
}

func TestMetrics(t *testing.T) {
	c, agents := startLab(t)
	ctl := scrape(t, c.MetricsAddr())
	lint(t, "controller", ctl)
	for _, want := range []string{
		"livedump_controller_agents_connected 3",
		`livedump_controller_enrollments_total{result="ok"} 3`,
		`livedump_controller_enrollments_total{result="denied"} 0`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Enroll",grpc_service="livedump.v1.AgentService",grpc_type="unary"} 3`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(ctl, want) {
			t.Errorf("controller metrics lack %q", want)
		}
	}
	ag := scrape(t, agents[0].MetricsAddr())
	lint(t, "agent", ag)
	for _, want := range []string{
		"livedump_agent_connected 1",
		`livedump_agent_enrollments_total{result="ok"} 1`,
		"livedump_agent_reconnects_total 0",
		"livedump_agent_certificate_expiry_timestamp_seconds",
		`grpc_client_started_total{grpc_method="Connect",grpc_service="livedump.v1.AgentService",grpc_type="bidi_stream"} 1`,
	} {
		if !strings.Contains(ag, want) {
			t.Errorf("agent metrics lack %q", want)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		for _, addr := range []string{c.MetricsAddr(), agents[0].MetricsAddr()} {
			resp, err := http.Get("http://" + addr + p)
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("GET %s%s: %v %v", addr, p, err, resp)
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
	}
}

func TestAgentReconnectsAfterControllerRestart(t *testing.T) {
	dataDir := t.TempDir()
	c := startController(t, controllerOpts{dataDir: dataDir})
	addr := c.Addr()
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, nil)})
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, admin, "")) == 1 })
	c.stop()

	// Restart on the same address; the agent's backoff brings it back.
	c2 := startController(t, controllerOpts{dataDir: dataDir, listen: addr})
	c2.caFile = c.caFile
	admin2 := fleetClient(t, c2, pki.RoleAdmin)
	eventually(t, 15*time.Second, "agent back online", func() bool {
		l := listAgents(t, admin2, "")
		return len(l) == 1 && l[0].GetId() == a.ID() && l[0].GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE
	})
}
