package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/tests/fakes"
	"github.com/livedump/livedump/tests/testca"
)

// The fakes fit the interfaces the handlers declare.
var (
	_ Enroller       = (*fakes.Enroller)(nil)
	_ TokenIssuer    = (*fakes.Enroller)(nil)
	_ CaptureReports = (*fakes.Captures)(nil)
	_ Captures       = (*fakes.Captures)(nil)
	_ CaptureEvents  = (*fakes.Captures)(nil)
	_ DumpReceiver   = (*fakes.Dumps)(nil)
	_ DumpReader     = (*fakes.Dumps)(nil)
	_ Sessions       = (*fakes.Sessions)(nil)
	_ LocalAgents    = (*fakes.Sessions)(nil)
	_ Presence       = (*fakes.Peers)(nil)
	_ Peers          = (*fakes.Peers)(nil)
	_ Revocations    = (*fakes.Peers)(nil)
)

// Identities of the unit tests.
var (
	viewer   = pki.OperatorIdentity(pki.RoleViewer, "vera")
	operator = pki.OperatorIdentity(pki.RoleOperator, "otto")
	admin    = pki.OperatorIdentity(pki.RoleAdmin, "ada")
)

// rig is both services on a fresh SQLite store (the audit sink and the
// rows handlers read) with every other service a fake.
type rig struct {
	st       store.Store
	clock    *clockwork.FakeClock
	ca       *pki.CA
	caps     *fakes.Captures
	dumps    *fakes.Dumps
	enroller *fakes.Enroller
	local    *fakes.Sessions
	peers    *fakes.Peers // nil unless the rig is a replica
	metrics  *Metrics
	authz    *Authorizer
	fleet    *FleetServer
	agent    *AgentServer
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newRig returns a lone controller's services; withPeers makes them a
// replica's, reaching other replicas through a fakes.Peers.
func newRig(t *testing.T, withPeers bool) *rig {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blobstore.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	ca := testca.New(t, testca.Options{Now: t0.Add(-time.Hour)}).CA
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &rig{
		st: st, clock: clockwork.NewFakeClockAt(t0), ca: ca,
		caps: &fakes.Captures{Now: func() time.Time { return t0 }}, dumps: &fakes.Dumps{}, enroller: &fakes.Enroller{},
		local: &fakes.Sessions{}, metrics: NewMetrics(prometheus.NewRegistry()),
	}
	r.authz = &Authorizer{Store: st, Logger: log, Now: r.clock.Now}
	fc := FleetConfig{Store: st, Blobs: blobs, Profile: profile.Default(), Captures: r.caps, Events: r.caps, Dumps: r.dumps,
		Tokens: r.enroller, Local: r.local, Logger: log, Clock: r.clock}
	ac := AgentConfig{Store: st, Blobs: blobs, Captures: r.caps, Dumps: r.dumps, Enroller: r.enroller, Sessions: r.local,
		CA: ca, Metrics: r.metrics, Logger: log, Clock: r.clock, HeartbeatInterval: 15 * time.Second}
	if withPeers {
		r.peers = &fakes.Peers{}
		fc.Peers, fc.Revocations, ac.Presence = r.peers, r.peers, r.peers
	}
	r.fleet, r.agent = NewFleetServer(fc), NewAgentServer(ac)
	return r
}

// as is the context a handler sees once the interceptor has authorized id
// and opened its audit record.
func as(id pki.Identity) (context.Context, *auditRecord) {
	rec := &auditRecord{actor: id.String()}
	ctx := context.WithValue(context.Background(), identityKey{}, id)
	return context.WithValue(ctx, auditKey{}, rec), rec
}

// ctxAs is as without the audit record.
func ctxAs(id pki.Identity) context.Context {
	ctx, _ := as(id)
	return ctx
}

// cert issues a client certificate for id, valid from now for a day.
func (r *rig) cert(t *testing.T, id pki.Identity) *x509.Certificate {
	t.Helper()
	_, der := testca.KeyCSR(t)
	csr, err := pki.ParseCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	// Signed at the rig's (fake) clock, not testca's fixed start, so a
	// test that moves the clock gets a certificate valid from then.
	c, err := r.ca.SignClient(csr, id, r.clock.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// peerCtx is the context of a call arriving over TLS from 192.0.2.7, with
// cert as its verified client certificate (nil: none).
func peerCtx(cert *x509.Certificate) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}}
	if cert != nil {
		p.AuthInfo = credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	}
	return peer.NewContext(context.Background(), p)
}

// addAgent stores an enrolled agent whose current certificate is returned.
func (r *rig) addAgent(t *testing.T, a store.Agent) *x509.Certificate {
	t.Helper()
	c := r.cert(t, pki.AgentIdentity(a.ID))
	if a.Hostname == "" {
		a.Hostname = "WS-" + a.ID[:4]
	}
	a.FirstSeen, a.LastSeen = t0.Add(-time.Hour), t0.Add(-time.Hour)
	a.CertSerial, a.CertExpiry = pki.SerialHex(c), c.NotAfter
	if err := r.st.CreateAgent(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if a.Revoked {
		if _, err := r.st.RevokeAgent(context.Background(), a.ID, t0); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// audit returns the audit log, oldest first.
func (r *rig) audit(t *testing.T) []store.AuditEntry {
	t.Helper()
	es, err := r.st.ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
		es[i], es[j] = es[j], es[i]
	}
	return es
}

// wantCode fails unless err has code and, for InvalidArgument, names field
// first (the form every validation error takes).
func wantCode(t *testing.T, err error, code codes.Code, msgPrefix string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("got %v (%q), want %v", st.Code(), st.Message(), code)
	}
	if !strings.HasPrefix(st.Message(), msgPrefix) {
		t.Fatalf("message %q does not start with %q", st.Message(), msgPrefix)
	}
}

// counter reads a counter's value.
func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// serverStream is a grpc.ServerStream whose context is ctx; every other
// method is the nil embedded interface's and must not be called.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s serverStream) Context() context.Context     { return s.ctx }
func (s serverStream) SetHeader(metadata.MD) error  { return nil }
func (s serverStream) SendHeader(metadata.MD) error { return nil }
func (s serverStream) SetTrailer(metadata.MD)       {}

// sendStream collects what a server-streaming handler sends.
type sendStream[M any] struct {
	serverStream
	mu   sync.Mutex
	sent []*M
	// onSend, if set, runs after each send (under no lock).
	onSend func(n int)
}

// Send keeps a copy, as gRPC encodes the message before Send returns: a
// handler may reuse its buffers.
func (s *sendStream[M]) Send(m *M) error {
	m = proto.Clone(any(m).(proto.Message)).(any).(*M)
	s.mu.Lock()
	s.sent = append(s.sent, m)
	n := len(s.sent)
	s.mu.Unlock()
	if s.onSend != nil {
		s.onSend(n)
	}
	return nil
}

func (s *sendStream[M]) msgs() []*M {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*M(nil), s.sent...)
}

// recvStream feeds a client-streaming handler from msgs, then io.EOF.
type recvStream[Req, Resp any] struct {
	serverStream
	msgs []*Req
	resp *Resp
}

func (s *recvStream[Req, Resp]) Recv() (*Req, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func (s *recvStream[Req, Resp]) SendAndClose(m *Resp) error {
	s.resp = m
	return nil
}
