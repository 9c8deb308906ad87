package security

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
	"github.com/livedump/livedump/tests/testca"
)

// hostileController is attacker 5 of docs/security.md: a controller the
// agent trusts (its server certificate is signed by the real controller's
// CA, as an impersonator holding that CA's key would have it) that sends
// whatever directives the test hands it. It enrolls any agent and records
// every acknowledgement and provisioning report the agent sends back.
type hostileController struct {
	livedumpv1.UnimplementedAgentServiceServer
	ca   *pki.CA
	addr string

	send chan *livedumpv1.Directive

	mu       sync.Mutex
	acks     map[string]*livedumpv1.Ack
	reports  []*livedumpv1.ProvisionReport
	statuses map[string]*livedumpv1.CaptureStatus // the last one per capture
	streams  int                                  // Connect streams open now
}

// hostileAgentID is the ID the hostile controller gives the agent.
const hostileAgentID = "victim-01"

// startHostileController serves AgentService on 127.0.0.1:0 with a server
// certificate from the CA of c, the controller whose CA file the agent
// trusts.
func startHostileController(t *testing.T, c *harness.Controller) *hostileController {
	t.Helper()
	ca := testca.Wrap(c.CA())
	cert := ca.Server(t, "127.0.0.1")
	// The chain carries the CA too, as a controller's might.
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	tlsCfg := ca.ServerTLS(cert, tls.VerifyClientCertIfGiven)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileController{ca: c.CA(), addr: lis.Addr().String(), send: make(chan *livedumpv1.Directive, 16), acks: map[string]*livedumpv1.Ack{}, statuses: map[string]*livedumpv1.CaptureStatus{}}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	livedumpv1.RegisterAgentServiceServer(srv, h)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return h
}

// Enroll signs whatever key the agent presents.
func (h *hostileController) Enroll(_ context.Context, req *livedumpv1.EnrollRequest) (*livedumpv1.EnrollResponse, error) {
	csr, err := pki.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	cert, err := h.ca.SignClient(csr, pki.AgentIdentity(hostileAgentID), time.Now(), time.Hour)
	if err != nil {
		return nil, err
	}
	return &livedumpv1.EnrollResponse{AgentId: hostileAgentID, CertificateChain: [][]byte{cert.Raw}, CaCertificates: [][]byte{h.ca.Cert.Raw}}, nil
}

// FetchArtifact sends far more than any artifact the controller announced:
// 4 MiB of zeros, whatever was asked for.
func (h *hostileController) FetchArtifact(_ *livedumpv1.FetchArtifactRequest, st grpc.ServerStreamingServer[livedumpv1.FetchArtifactResponse]) error {
	chunk := make([]byte, 64<<10)
	for range 64 {
		if err := st.Send(&livedumpv1.FetchArtifactResponse{Chunk: chunk}); err != nil {
			return nil
		}
	}
	return nil
}

// Connect welcomes the agent, then sends the test's directives and records
// what comes back.
func (h *hostileController) Connect(st grpc.BidiStreamingServer[livedumpv1.ConnectRequest, livedumpv1.ConnectResponse]) error {
	if _, err := st.Recv(); err != nil { // hello
		return err
	}
	if err := st.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Welcome{Welcome: &livedumpv1.Welcome{HeartbeatInterval: durationpb.New(time.Second)}}}); err != nil {
		return err
	}
	h.mu.Lock()
	h.streams++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.streams--
		h.mu.Unlock()
	}()
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			h.mu.Lock()
			if a := m.GetAck(); a != nil {
				h.acks[a.GetDirectiveId()] = a
			}
			if r := m.GetProvisionReport(); r != nil && r.GetDirectiveId() != "" {
				h.reports = append(h.reports, r)
			}
			if s := m.GetCaptureStatus(); s != nil {
				h.statuses[s.GetCaptureId()] = s
			}
			h.mu.Unlock()
		}
	}()
	for {
		select {
		case err := <-errc:
			return err
		case d := <-h.send:
			if err := st.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: d}}); err != nil {
				return err
			}
		}
	}
}

// ack waits for the agent's acknowledgement of directive id.
func (h *hostileController) ack(t *testing.T, id string) *livedumpv1.Ack {
	t.Helper()
	var a *livedumpv1.Ack
	harness.Eventually(t, 10*time.Second, "the ack of directive "+id, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		a = h.acks[id]
		return a != nil
	})
	return a
}

// report returns the provisioning report for directive id, if one came.
func (h *hostileController) report(id string) *livedumpv1.ProvisionReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.reports {
		if r.GetDirectiveId() == id {
			return r
		}
	}
	return nil
}

// status returns the last status the agent reported for a capture, if any.
func (h *hostileController) status(captureID string) *livedumpv1.CaptureStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.statuses[captureID]
}

// connected reports whether an agent's Connect stream is open.
func (h *hostileController) connected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams > 0
}
