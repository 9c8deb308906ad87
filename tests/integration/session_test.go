package integration

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/tests/testca"
)

func TestSilentAgentGoesOffline(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Now())
	c := startController(t, controllerOpts{clock: clock})
	_, cert, err := enrollRaw(t, c, c.token(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := pki.IdentityFromCert(cert.Leaf)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := livedumpv1.NewAgentServiceClient(dial(t, c, cert)).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: id.AgentID, Inventory: testInventory("QUIET")}}}); err != nil {
		t.Fatal(err)
	}
	welcome, err := st.Recv()
	if err != nil || welcome.GetWelcome() == nil {
		t.Fatalf("no welcome: %v %v", welcome, err)
	}
	interval := controller.DefaultHeartbeatInterval
	if got := welcome.GetWelcome().GetHeartbeatInterval().AsDuration(); got != interval {
		t.Fatalf("heartbeat interval %s, want %s", got, interval)
	}
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 5*time.Second, "agent online", func() bool { return countOnline(listAgents(t, admin, "")) == 1 })

	// The stream stays open but no heartbeat comes: after three missed
	// intervals the controller ends it and the agent shows offline.
	errc := make(chan error, 1)
	go func() {
		_, err := st.Recv()
		errc <- err
	}()
	for i := 0; ; i++ {
		select {
		case err := <-errc:
			wantCode(t, err, codes.Unavailable, "heartbeat")
			if silent := time.Duration(i*31) * time.Second; silent < 3*interval {
				t.Fatalf("expired after only %s of silence, want at least 3 heartbeat intervals (%s)", silent, 3*interval)
			}
			eventually(t, 5*time.Second, "agent offline", func() bool { return countOnline(listAgents(t, admin, "")) == 0 })
			return
		case <-time.After(50 * time.Millisecond):
		}
		if i > 40 {
			t.Fatal("silent agent was never expired")
		}
		clock.Advance(31 * time.Second)
	}
}

func TestAgentFailsOverToNextController(t *testing.T) {
	c := startController(t, controllerOpts{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	dir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(dir, "host")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Controllers:   []string{dead, c.Addr()},
		CAFile:        c.caFile,
		Token:         c.token(t, 1, nil),
		StateDir:      dir,
		MetricsListen: "-",
		Host:          h,
		Logger:        testLogger(t),
		BackoffMin:    20 * time.Millisecond,
		BackoffMax:    200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	admin := fleetClient(t, c, pki.RoleAdmin)
	eventually(t, 10*time.Second, "agent online through the second address", func() bool { return countOnline(listAgents(t, admin, "")) == 1 })
}

func TestWrongTokenStopsTheAgent(t *testing.T) {
	c := startController(t, controllerOpts{})
	tok := c.token(t, 1, nil)
	dir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(dir, "host")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Controllers: []string{c.Addr()}, CAFile: c.caFile, Token: tok[:len(tok)-4] + "aaaa",
		StateDir: dir, MetricsListen: "-", Host: h, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// The refusal is final: Run returns it rather than retrying forever.
	select {
	case err := <-done:
		if !errors.Is(err, session.ErrEnrollmentRefused) {
			t.Fatalf("agent.Run = %v, want ErrEnrollmentRefused", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent with a bad token kept running")
	}
}

func TestExternalCA(t *testing.T) {
	ca := testca.New(t, testca.Options{Name: "corp issuing CA", TTL: 24 * time.Hour})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "corp.crt"), filepath.Join(dir, "corp.key")
	if err := pki.WriteCerts(certFile, ca.Cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(keyFile, ca.Key); err != nil {
		t.Fatal(err)
	}
	c := startController(t, controllerOpts{caCertFile: certFile, caKeyFile: keyFile})
	if !c.CA().Cert.Equal(ca.Cert) {
		t.Fatal("controller did not use the external CA")
	}
	_, cert, err := enrollRaw(t, c, c.token(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("agent certificate not signed by the external CA: %v", err)
	}
	// The agent certificate never outlives its CA.
	if cert.Leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("agent certificate expires %v, after its CA (%v)", cert.Leaf.NotAfter, ca.Cert.NotAfter)
	}
}
