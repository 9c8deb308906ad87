package api

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// helloTimeout bounds how long a new stream may stay silent before Hello.
const helloTimeout = 30 * time.Second

// AgentConfig wires an AgentServer.
type AgentConfig struct {
	Store             store.Store
	Blobs             blobstore.Blobs
	Captures          CaptureReports
	Dumps             DumpReceiver
	Enroller          Enroller
	Sessions          Sessions
	Presence          Presence // which replica holds each stream; nil for a lone controller
	CA                *pki.CA
	Metrics           *Metrics
	Logger            *slog.Logger
	Clock             clockwork.Clock
	HeartbeatInterval time.Duration
}

// AgentServer implements livedump.v1.AgentService.
type AgentServer struct {
	livedumpv1.UnimplementedAgentServiceServer
	cfg AgentConfig
}

// NewAgentServer returns the agent-facing service.
func NewAgentServer(cfg AgentConfig) *AgentServer { return &AgentServer{cfg: cfg} }

func (s *AgentServer) caChain() [][]byte { return [][]byte{s.cfg.CA.Cert.Raw} }

func resultOf(err error) string {
	var ia *enroll.InvalidArgumentError
	switch {
	case err == nil:
		return resultOK
	case errors.As(err, &ia):
		return resultInvalid
	case errors.Is(err, enroll.ErrDenied):
		return resultDenied
	}
	return resultError
}

// Enroll implements AgentService.Enroll.
func (s *AgentServer) Enroll(ctx context.Context, req *livedumpv1.EnrollRequest) (*livedumpv1.EnrollResponse, error) {
	if len(req.GetToken()) <= maxTokenLen {
		if tid := enroll.TokenID(req.GetToken()); tid != "" {
			setAuditActor(ctx, "token/"+tid)
		}
	}
	if err := validateEnrollSizes(req); err != nil {
		s.cfg.Metrics.Enrollments.WithLabelValues(resultInvalid).Inc()
		return nil, err
	}
	if err := validateInventory(req.GetInventory()); err != nil {
		s.cfg.Metrics.Enrollments.WithLabelValues(resultInvalid).Inc()
		return nil, err
	}
	e, err := s.cfg.Enroller.Enroll(ctx, enroll.EnrollRequest{
		Token:     req.GetToken(),
		CSR:       req.GetCsr(),
		Labels:    req.GetLabels(),
		Inventory: inventoryToStore("", req.GetInventory()),
	})
	s.cfg.Metrics.Enrollments.WithLabelValues(resultOf(err)).Inc()
	if err != nil {
		s.cfg.Logger.Warn("enrollment refused", "err", err, "hostname", req.GetInventory().GetHostname())
		return nil, toStatus(s.cfg.Logger, "enroll", err)
	}
	setAuditTarget(ctx, e.AgentID)
	s.cfg.Logger.Info("agent enrolled", "agent_id", e.AgentID, "token_id", e.TokenID, "hostname", req.GetInventory().GetHostname())
	return &livedumpv1.EnrollResponse{
		AgentId:          e.AgentID,
		CertificateChain: [][]byte{e.Cert.Raw},
		CaCertificates:   s.caChain(),
	}, nil
}

// Size limits of an Enroll request, checked before anything else looks at
// it: anyone may call Enroll, and nothing of a refused request is kept.
const (
	// maxTokenLen is well above a token's 45 characters.
	maxTokenLen = 128
	// maxCSRBytes is well above a DER CSR of an RSA-4096 key (~1.2 KiB).
	maxCSRBytes = 16 << 10
	// maxEnrollLabels is how many labels an installer may ask for.
	maxEnrollLabels = 64
	// maxLabelKeyLen and maxLabelValueLen are the Kubernetes limits that
	// selector.ValidateUserLabels enforces: a 253-byte prefix, '/', a
	// 63-byte name; a 63-byte value.
	maxLabelKeyLen   = 253 + 1 + 63
	maxLabelValueLen = 63
)

// validateEnrollSizes refuses an Enroll request with an oversized field,
// naming the field and its size but never echoing its content.
func validateEnrollSizes(req *livedumpv1.EnrollRequest) error {
	if n := len(req.GetToken()); n > maxTokenLen {
		return invalid("token", "%d bytes, longer than %d", n, maxTokenLen)
	}
	if n := len(req.GetCsr()); n > maxCSRBytes {
		return invalid("csr", "%d bytes, longer than %d", n, maxCSRBytes)
	}
	if n := len(req.GetLabels()); n > maxEnrollLabels {
		return invalid("labels", "%d labels, more than %d", n, maxEnrollLabels)
	}
	for k, v := range req.GetLabels() {
		if len(k) > maxLabelKeyLen {
			return invalid("labels", "a key of %d bytes, longer than %d", len(k), maxLabelKeyLen)
		}
		if len(v) > maxLabelValueLen {
			return invalid("labels", "the value of a key of %d bytes is %d bytes, longer than %d", len(k), len(v), maxLabelValueLen)
		}
	}
	return nil
}

// Renew implements AgentService.Renew.
func (s *AgentServer) Renew(ctx context.Context, req *livedumpv1.RenewRequest) (*livedumpv1.RenewResponse, error) {
	id, _ := IdentityFromContext(ctx)
	setAuditTarget(ctx, id.AgentID)
	cert, err := s.cfg.Enroller.Renew(ctx, id.AgentID, req.GetCsr())
	s.cfg.Metrics.Renewals.WithLabelValues(resultOf(err)).Inc()
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "renew", err)
	}
	s.cfg.Logger.Info("certificate renewed", "agent_id", id.AgentID, "expires", cert.NotAfter)
	return &livedumpv1.RenewResponse{CertificateChain: [][]byte{cert.Raw}, CaCertificates: s.caChain()}, nil
}

// errCertExpired ends a stream whose client certificate has expired: TLS
// checked it only at the handshake, so the session enforces it afterwards.
var errCertExpired = errors.New("client certificate expired")

func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// errHelloTimeout ends a stream whose Hello did not arrive in time.
var errHelloTimeout = errors.New("hello: not received in time")

// sendFailed ends a session whose writer could not send on its stream.
type sendFailed struct{ err error }

func (e sendFailed) Error() string { return "send: " + e.err.Error() }

// agentLog is the logger of one agent's session, made when something is
// logged: a logger kept for every idle session would cost memory.
func (s *AgentServer) agentLog(agentID string) *slog.Logger {
	return s.cfg.Logger.With("agent_id", agentID)
}

// Connect implements AgentService.Connect: Hello, then heartbeats until the
// agent goes away, is revoked, replaced, or falls silent.
//
// An idle agent costs the handler goroutine only, blocked in Recv: whatever
// ends the session cancels its context with the cause, and the end of that
// context ends the stream (StreamEnder), which ends the Recv. Sends run on
// a writer goroutine that exists only while the session's outbox holds
// something.
func (s *AgentServer) Connect(stream grpc.BidiStreamingServer[livedumpv1.ConnectRequest, livedumpv1.ConnectResponse]) error {
	ctx := stream.Context()
	id, _ := IdentityFromContext(ctx)
	ender, ok := streamEnderFrom(ctx)
	if !ok {
		s.cfg.Logger.Error("Connect stream without a StreamEnder: the server's tap handle must add one (api.WithStreamEnder)")
		return status.Error(codes.Internal, "the controller cannot serve Connect")
	}
	// sctx is the session: cancelled with the cause of its end, and its
	// end ends the stream. A handler that returns on its own ends nothing
	// (stopEnding runs before end).
	sctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	stopEnding := context.AfterFunc(sctx, ender.EndStream)
	defer stopEnding()

	hello, err := recvHello(sctx, stream, end)
	if err != nil {
		return err
	}
	if hello.GetAgentId() != id.AgentID {
		s.agentLog(id.AgentID).Warn("hello for another agent refused", "claimed", hello.GetAgentId())
		return status.Errorf(codes.PermissionDenied, "agent %s may not speak for agent %q", id.AgentID, hello.GetAgentId())
	}
	if err := validateInventory(hello.GetInventory()); err != nil {
		return err
	}
	now := s.cfg.Clock.Now().UTC()
	inv := inventoryToStore(id.AgentID, hello.GetInventory())
	inv.LastSeen = now
	if err := s.cfg.Store.UpdateInventory(ctx, inv); err != nil {
		return toStatus(s.agentLog(id.AgentID), "update inventory", err)
	}
	if err := s.cfg.Dumps.SetMemory(ctx, id.AgentID, hello.GetInventory().GetMemoryBytes()); err != nil {
		return toStatus(s.agentLog(id.AgentID), "record memory", err)
	}
	agent, err := s.cfg.Store.GetAgent(ctx, id.AgentID)
	if err != nil {
		return toStatus(s.agentLog(id.AgentID), "get agent", err)
	}

	if cert := peerCert(ctx); cert != nil {
		stop := s.cfg.Clock.AfterFunc(cert.NotAfter.Sub(now), func() { end(errCertExpired) })
		defer stop.Stop()
	}
	sess := s.cfg.Sessions.Attach(id.AgentID, now, end)
	sessionID := newDirectiveID()
	if s.cfg.Presence != nil {
		if err := s.cfg.Presence.Attached(ctx, id.AgentID, sessionID); err != nil {
			s.cfg.Sessions.Detach(sess)
			return toStatus(s.agentLog(id.AgentID), "record presence", err)
		}
	}
	w := &sessionWriter{stream: stream, sess: sess, end: end}
	defer func() {
		w.close()
		s.cfg.Sessions.Detach(sess)
		if s.cfg.Presence != nil {
			pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := s.cfg.Presence.Detached(pctx, id.AgentID, sessionID); err != nil {
				s.agentLog(id.AgentID).Warn("clear presence", "err", err)
			}
			pcancel()
		}
		tctx, tcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer tcancel()
		if err := s.cfg.Store.TouchAgent(tctx, id.AgentID, s.cfg.Clock.Now().UTC()); err != nil {
			s.agentLog(id.AgentID).Warn("record last seen", "err", err)
		}
	}()
	s.agentLog(id.AgentID).Info("agent connected", "hostname", inv.Hostname, "os_build", inv.OSBuild)
	// Captures waiting for this agent go out now, not at the next tick.
	s.cfg.Captures.Kick()

	if err := stream.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Welcome{Welcome: &livedumpv1.Welcome{
		HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval),
		Labels:            allLabels(agent),
		MaxEventBatch:     MaxEventBatch,
	}}}); err != nil {
		return err
	}
	// From here on the session's messages go out on the writer: what was
	// queued before the welcome first.
	sess.OnSend(w.kick)
	w.kick()

	reason, err := s.serveSession(ctx, sctx, stream, sess, id)
	if sctx.Err() != nil {
		// The session was ended (or the agent went away: Canceled is
		// "closed"); the cause says why, whatever Recv returned.
		reason, err = disconnectStatus(context.Cause(sctx), id.AgentID)
	}
	s.cfg.Metrics.Disconnects.WithLabelValues(reason).Inc()
	s.agentLog(id.AgentID).Info("agent disconnected", "reason", reason)
	return err
}

// serveSession receives the agent's messages until the stream ends or a
// message ends it, and returns the disconnect reason and status.
func (s *AgentServer) serveSession(ctx, sctx context.Context, stream grpc.BidiStreamingServer[livedumpv1.ConnectRequest, livedumpv1.ConnectResponse],
	sess *fleet.Session, id pki.Identity) (string, error) {
	var reportAudits auditBudget
	for {
		m, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) || isEOF(err) {
				return "closed", nil
			}
			return "error", err
		}
		switch msg := m.Msg.(type) {
		case *livedumpv1.ConnectRequest_Heartbeat:
			sess.Heartbeat(s.cfg.Clock.Now())
			s.cfg.Metrics.Heartbeats.Inc()
		case *livedumpv1.ConnectRequest_Ack:
			sess.Heartbeat(s.cfg.Clock.Now())
			s.cfg.Logger.Debug("directive acked", "agent_id", id.AgentID, "directive_id", msg.Ack.GetDirectiveId(), "error", msg.Ack.GetError())
			s.cfg.Captures.Acked(ctx, id.AgentID, msg.Ack)
		case *livedumpv1.ConnectRequest_ProvisionReport:
			sess.Heartbeat(s.cfg.Clock.Now())
			s.recordProvision(ctx, id.AgentID, msg.ProvisionReport)
			sess.Deliver(msg.ProvisionReport)
		case *livedumpv1.ConnectRequest_Event:
			sess.Heartbeat(s.cfg.Clock.Now())
			if err := s.cfg.Captures.Ingest(sctx, sess, id.AgentID, msg.Event); err != nil {
				return "error", err
			}
		case *livedumpv1.ConnectRequest_EventBatch:
			sess.Heartbeat(s.cfg.Clock.Now())
			if err := s.ingestBatch(sctx, sess, id.AgentID, msg.EventBatch); err != nil {
				return "error", err
			}
		case *livedumpv1.ConnectRequest_CaptureStatus:
			sess.Heartbeat(s.cfg.Clock.Now())
			s.cfg.Captures.Status(ctx, id.AgentID, msg.CaptureStatus)
		case *livedumpv1.ConnectRequest_DumpReport:
			sess.Heartbeat(s.cfg.Clock.Now())
			if err := s.cfg.Dumps.Report(ctx, id.AgentID, msg.DumpReport.GetDump()); err != nil {
				s.agentLog(id.AgentID).Warn("dump report refused", "err", err)
				if reportAudits.allow(s.cfg.Clock.Now()) {
					s.auditReport(ctx, id.String(), msg.DumpReport.GetDump().GetId(), err)
				}
			}
		case *livedumpv1.ConnectRequest_SelfTestReport:
			sess.Heartbeat(s.cfg.Clock.Now())
			s.selfTestReport(ctx, id.String(), sess, msg.SelfTestReport, &reportAudits)
		case *livedumpv1.ConnectRequest_AgentLogReport:
			sess.Heartbeat(s.cfg.Clock.Now())
			s.agentLogReport(ctx, id.String(), sess, msg.AgentLogReport, &reportAudits)
		case *livedumpv1.ConnectRequest_Hello:
			return "error", status.Error(codes.InvalidArgument, "hello: sent twice on one stream")
		default:
			return "error", status.Error(codes.InvalidArgument, "msg: empty or unknown message")
		}
	}
}

// sessionWriter sends a session's outbox on its stream from a goroutine
// that runs only while the outbox holds something: the session starts it
// (kick) when it queues a message. A failed send ends the session. The
// handler never blocks in Send, so it can always return, which ends the
// stream and unblocks a Send stuck on an agent that stopped reading.
type sessionWriter struct {
	stream  grpc.BidiStreamingServer[livedumpv1.ConnectRequest, livedumpv1.ConnectResponse]
	sess    *fleet.Session
	end     context.CancelCauseFunc
	mu      sync.Mutex
	running bool // a writer goroutine is draining the outbox
	closed  bool // the handler returned or a send failed: send nothing more
}

func (w *sessionWriter) kick() {
	w.mu.Lock()
	start := !w.running && !w.closed
	if start {
		w.running = true
	}
	w.mu.Unlock()
	if start {
		go w.run()
	}
}

func (w *sessionWriter) run() {
	for {
		// Taking a message and giving up when there is none happen under
		// the lock that kick takes after queueing: no message is left
		// behind without a writer.
		var m *livedumpv1.ConnectResponse
		w.mu.Lock()
		if !w.closed {
			select {
			case m = <-w.sess.Outbox():
			default:
			}
		}
		if m == nil {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		if err := w.stream.Send(m); err != nil {
			w.end(sendFailed{err})
			w.close()
			return
		}
	}
}

// close stops the writer after the message it is sending, if any.
func (w *sessionWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// recvHello receives the stream's first message, which must be Hello,
// within helloTimeout: past it the session ctx is ended (end), which ends
// the stream and so the Recv.
func recvHello(ctx context.Context, stream grpc.BidiStreamingServer[livedumpv1.ConnectRequest, livedumpv1.ConnectResponse],
	end context.CancelCauseFunc) (*livedumpv1.Hello, error) {
	t := time.AfterFunc(helloTimeout, func() { end(errHelloTimeout) })
	m, err := stream.Recv()
	t.Stop()
	if errors.Is(context.Cause(ctx), errHelloTimeout) {
		return nil, status.Error(codes.DeadlineExceeded, "hello: not received in time")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	h := m.GetHello()
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, "hello: the first message on a stream must be hello")
	}
	return h, nil
}

// disconnectStatus maps why a session ended to the metric reason and the
// status the agent receives.
func disconnectStatus(cause error, agentID string) (string, error) {
	switch {
	case errors.Is(cause, fleet.ErrRevoked):
		return "revoked", status.Errorf(codes.PermissionDenied, "agent %s is revoked", agentID)
	case errors.Is(cause, fleet.ErrReplaced):
		return "replaced", status.Error(codes.Aborted, "replaced by a newer connection of the same agent")
	case errors.Is(cause, fleet.ErrHeartbeatTimeout):
		return "heartbeat_timeout", status.Error(codes.Unavailable, "no heartbeat in time")
	case errors.Is(cause, errCertExpired):
		return "certificate_expired", status.Error(codes.Unauthenticated, "client certificate expired; reconnect with the renewed one")
	case errors.Is(cause, fleet.ErrOutboxFull):
		return "slow_consumer", status.Error(codes.ResourceExhausted, "the agent is not reading its stream; reconnect")
	case errors.Is(cause, fleet.ErrStoreUnavailable):
		return "store_unavailable", status.Error(codes.Unavailable, "the controller could not store events; reconnect and send them again")
	case errors.As(cause, new(sendFailed)):
		var sf sendFailed
		errors.As(cause, &sf)
		return "error", sf.err
	case errors.Is(cause, fleet.ErrShutdown):
		return "shutdown", status.Error(codes.Unavailable, "controller shutting down")
	}
	return "closed", nil
}

// recordProvision stores the state an agent reported. A failure is logged:
// the next report will carry the state again.
func (s *AgentServer) recordProvision(ctx context.Context, agentID string, r *livedumpv1.ProvisionReport) {
	if err := s.cfg.Store.SetProvisionState(ctx, agentID, ProvisionStateName(r.GetState()), truncate(r.GetDetail(), 1024), s.cfg.Clock.Now().UTC()); err != nil {
		s.cfg.Logger.Warn("record provisioning state", "agent_id", agentID, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ProvisionStateName is the stored and displayed name of a state, derived
// from the enum ("PROVISION_STATE_REBOOT_REQUIRED" is "reboot-required").
func ProvisionStateName(st livedumpv1.ProvisionState) string {
	if st == livedumpv1.ProvisionState_PROVISION_STATE_UNSPECIFIED {
		return ""
	}
	return enumname.Name(st, "-")
}

// provisionStateValue is the inverse of ProvisionStateName.
func provisionStateValue(name string) livedumpv1.ProvisionState {
	st, _ := enumname.Parse[livedumpv1.ProvisionState](name, "-")
	return st
}

// auditBudget bounds how many refused reports of one Connect stream reach
// the audit log: a few a minute; the rest are logged and counted only.
type auditBudget struct {
	window time.Time
	used   int
}

const auditsPerMinute = 10

func (b *auditBudget) allow(now time.Time) bool {
	if now.Sub(b.window) >= time.Minute {
		b.window, b.used = now, 0
	}
	b.used++
	return b.used <= auditsPerMinute
}

// auditReport records a refused DumpReport, which arrives on the Connect
// stream and so passes no interceptor. Everything in it is bounded: the
// dump ID only if valid, the outcome cut to 512 bytes.
func (s *AgentServer) auditReport(ctx context.Context, actor, dumpID string, err error) {
	if validDumpID(dumpID) != nil {
		dumpID = "" // the outcome says what was wrong with it
	}
	st := status.Convert(err)
	outcome := strings.ToLower(st.Code().String()) + ": " + st.Message()
	if len(outcome) > 512 {
		outcome = strings.ToValidUTF8(outcome[:512], "")
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, aerr := s.cfg.Store.AppendAudit(actx, store.AuditEntry{Time: s.cfg.Clock.Now().UTC(), Actor: actor,
		Action: "AgentService/DumpReport", Target: dumpID, Outcome: outcome}); aerr != nil {
		s.cfg.Logger.Error("audit write failed", "action", "AgentService/DumpReport", "actor", actor, "err", aerr)
	}
}
