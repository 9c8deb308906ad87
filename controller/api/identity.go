package api

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Only the current certificate of an identity is accepted: an agent's
// newest (and, for a short grace window after a renewal, the one it
// replaced), an operator's unless revoked. Every stream is registered under
// its owner so that a revocation ends all of them at once.

type graceKey struct{}

// callerSerial is the hex serial of the caller's verified client
// certificate, or "" without one.
func callerSerial(ctx context.Context) string {
	if c := peerCert(ctx); c != nil {
		return pki.SerialHex(c)
	}
	return ""
}

// checkAgentCert accepts the agent's current certificate, and the one a
// renewal replaced until its grace window ends, except for Renew: a stolen
// replaced key must not be able to renew itself back to life. The returned
// context carries the end of the grace window, so a stream opened with the
// replaced certificate is ended when it passes.
func (a *Authorizer) checkAgentCert(ctx context.Context, method string, ag store.Agent) (context.Context, error) {
	cert := peerCert(ctx)
	if cert == nil {
		return ctx, status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	serial := pki.SerialHex(cert)
	now := a.Now()
	switch {
	case serial == ag.CertSerial:
		return ctx, nil
	case serial == ag.PrevSerial && now.Before(ag.PrevUntil):
		if method == livedumpv1.AgentService_Renew_FullMethodName {
			return ctx, status.Errorf(codes.PermissionDenied,
				"certificate %s of agent %s was replaced by a renewal; only the current certificate may renew", serial, ag.ID)
		}
		return context.WithValue(ctx, graceKey{}, ag.PrevUntil), nil
	case serial == ag.PrevSerial:
		return ctx, status.Errorf(codes.PermissionDenied,
			"certificate %s of agent %s was superseded by a renewal and its grace window ended at %s; use the current certificate",
			serial, ag.ID, ag.PrevUntil.UTC().Format(time.RFC3339))
	}
	return ctx, status.Errorf(codes.PermissionDenied,
		"certificate %s is not agent %s's current certificate (superseded by a renewal, or never issued to it); use the current certificate", serial, ag.ID)
}

// seenEvery bounds how often an operator certificate's LastSeen is written:
// once a minute per certificate, not once per call.
const seenEvery = time.Minute

// maxSeen bounds the memory of when certificates were last recorded.
const maxSeen = 4096

// operatorSeen remembers when each operator certificate was last recorded.
type operatorSeen struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether serial should be recorded now, and notes that it is.
func (o *operatorSeen) due(serial string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t, ok := o.last[serial]; ok && now.Sub(t) < seenEvery {
		return false
	}
	if o.last == nil || len(o.last) >= maxSeen {
		o.last = map[string]time.Time{}
	}
	o.last[serial] = now
	return true
}

// checkOperatorCert refuses a revoked operator certificate (by its serial,
// or every certificate of its name issued before a revocation) and records
// the certificates in use, so an admin can list and revoke them.
func (a *Authorizer) checkOperatorCert(ctx context.Context, id pki.Identity) error {
	cert := peerCert(ctx)
	if cert == nil {
		return status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	serial := pki.SerialHex(cert)
	rev, revoked, err := a.Store.OperatorCertRevocation(ctx, serial, id.Name, pki.IssuedAt(cert))
	if err != nil {
		return status.Errorf(codes.Unavailable, "check operator certificate: %v", err)
	}
	if revoked {
		if rev.Name != "" {
			return status.Errorf(codes.PermissionDenied,
				"certificate %s of %s is revoked: every certificate of operator %q issued before %s was revoked",
				serial, id, rev.Name, rev.At.UTC().Format(time.RFC3339))
		}
		return status.Errorf(codes.PermissionDenied, "certificate %s of %s is revoked (since %s)",
			serial, id, rev.At.UTC().Format(time.RFC3339))
	}
	now := a.Now().UTC()
	if a.seen.due(serial, now) {
		if err := a.Store.RecordOperatorCert(ctx, operatorCertRecord(id, cert, now)); err != nil {
			a.Logger.Warn("record operator certificate", "serial", serial, "actor", id.String(), "err", err)
		}
	}
	return nil
}

// operatorCertRecord is what the store keeps of an operator certificate
// seen at now (zero: issued, not yet seen).
func operatorCertRecord(id pki.Identity, cert *x509.Certificate, now time.Time) store.OperatorCert {
	return store.OperatorCert{
		Serial: pki.SerialHex(cert), Role: string(id.Role), Name: id.Name,
		Issued: pki.IssuedAt(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		FirstSeen: now, LastSeen: now,
	}
}

// serveStream runs an authorized stream registered under its owner, so a
// revocation (or the end of a replaced certificate's grace window) ends it
// at once with PermissionDenied, whatever the handler is waiting for.
func (a *Authorizer) serveStream(ctx context.Context, srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id, ok := IdentityFromContext(ctx)
	cert := peerCert(ctx)
	if a.Streams == nil || !ok || cert == nil {
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
	owner := fleet.StreamOwner{Identity: id, Serial: pki.SerialHex(cert), Issued: pki.IssuedAt(cert)}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	release := a.Streams.Register(owner, cancel)
	defer release()
	if until, ok := ctx.Value(graceKey{}).(time.Time); ok {
		t := time.AfterFunc(until.Sub(a.Now()), func() { cancel(fleet.ErrCertSuperseded) })
		defer t.Stop()
	}
	// A client-streaming handler (an upload) sits in Recv on its own
	// goroutine: Recv must return when the stream is ended. Bidirectional
	// handlers (Connect) already watch their context, and making their
	// idle Recv a second goroutine would double the cost of an idle agent.
	ts := &trackedStream{ServerStream: ss, ctx: sctx, owner: owner, selectRecv: info.IsClientStream && !info.IsServerStream}
	err := handler(srv, ts)
	if ended := endedStatus(context.Cause(sctx), owner); ended != nil {
		return ended
	}
	return err
}

// endedStatus is the status of a stream ended by a revocation or a
// superseded certificate, or nil if cause is neither.
func endedStatus(cause error, o fleet.StreamOwner) error {
	switch {
	case errors.Is(cause, fleet.ErrRevoked):
		return status.Errorf(codes.PermissionDenied, "%s is revoked", o.Identity)
	case errors.Is(cause, fleet.ErrCertRevoked):
		return status.Errorf(codes.PermissionDenied, "certificate %s of %s is revoked", o.Serial, o.Identity)
	case errors.Is(cause, fleet.ErrCertSuperseded):
		return status.Errorf(codes.PermissionDenied,
			"certificate %s of %s was superseded by a renewal and its grace window ended; reconnect with the current certificate", o.Serial, o.Identity)
	}
	return nil
}

// trackedStream is a server stream whose context a revocation cancels.
type trackedStream struct {
	grpc.ServerStream
	ctx        context.Context
	owner      fleet.StreamOwner
	selectRecv bool
}

func (s *trackedStream) Context() context.Context { return s.ctx }

// stopped is the error for a call on a stream that has been ended.
func (s *trackedStream) stopped() error {
	if err := endedStatus(context.Cause(s.ctx), s.owner); err != nil {
		return err
	}
	return status.FromContextError(s.ctx.Err()).Err()
}

// SendMsg refuses to send on an ended stream.
func (s *trackedStream) SendMsg(m any) error {
	if s.ctx.Err() != nil {
		return s.stopped()
	}
	return s.ServerStream.SendMsg(m)
}

// RecvMsg returns as soon as the stream is ended. For uploads the receive
// runs on its own goroutine, so a caller that sends slowly (or not at all)
// cannot hold an ended stream open; gRPC ends that receive when the
// handler returns.
func (s *trackedStream) RecvMsg(m any) error {
	if s.ctx.Err() != nil {
		return s.stopped()
	}
	if !s.selectRecv {
		return s.ServerStream.RecvMsg(m)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.ctx.Done():
		return s.stopped()
	}
}
