package fleet

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/livedump/livedump/internal/pki"
)

// Causes that end every stream of an identity or a certificate. The API
// layer answers them with PermissionDenied.
var (
	// ErrCertRevoked ends the streams of a revoked operator certificate.
	ErrCertRevoked = errors.New("certificate revoked")
	// ErrCertSuperseded ends the streams of an agent certificate that a
	// renewal replaced, once its grace window has passed.
	ErrCertSuperseded = errors.New("certificate superseded by a renewal")
)

// recentEnds is how long an End is remembered, so that a stream authorized
// just before a revocation but registered just after it is ended too.
const recentEnds = time.Minute

// StreamOwner is who opened a stream: the identity and the certificate.
type StreamOwner struct {
	Identity pki.Identity
	Serial   string    // hex, as pki.SerialHex renders it
	Issued   time.Time // pki.IssuedAt of the certificate
}

type streamEntry struct {
	owner  StreamOwner
	cancel context.CancelCauseFunc
}

type ended struct {
	match func(StreamOwner) bool
	cause error
	at    time.Time
}

// Streams holds the cancel function of every open RPC stream by the
// identity and certificate that opened it, so that revoking an identity or
// a certificate ends all of its streams at once (Connect, uploads,
// downloads, watches), not only the agent's session.
type Streams struct {
	mu     sync.Mutex
	open   map[*streamEntry]struct{}
	recent []ended
	now    func() time.Time
}

// NewStreams returns an empty registry.
func NewStreams() *Streams {
	return &Streams{open: map[*streamEntry]struct{}{}, now: time.Now}
}

// Register records an open stream; release removes it when the stream ends.
// A stream whose owner an End matched in the last minute is cancelled at
// once: it was authorized just before that revocation.
func (s *Streams) Register(o StreamOwner, cancel context.CancelCauseFunc) (release func()) {
	e := &streamEntry{owner: o, cancel: cancel}
	s.mu.Lock()
	s.open[e] = struct{}{}
	var cause error
	for _, r := range s.recent {
		if r.match(o) {
			cause = r.cause
		}
	}
	s.mu.Unlock()
	if cause != nil {
		cancel(cause)
	}
	return func() {
		s.mu.Lock()
		delete(s.open, e)
		s.mu.Unlock()
	}
}

// Len is the number of open streams.
func (s *Streams) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// Owners returns the owners of the open streams.
func (s *Streams) Owners() []StreamOwner {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]StreamOwner, 0, len(s.open))
	for e := range s.open {
		out = append(out, e.owner)
	}
	return out
}

// End cancels, with cause, every open stream whose owner matches, and
// streams registered within the next minute that match too. It returns how
// many open streams it ended.
func (s *Streams) End(match func(StreamOwner) bool, cause error) int {
	now := s.now()
	var victims []*streamEntry
	s.mu.Lock()
	keep := s.recent[:0]
	for _, r := range s.recent {
		if now.Sub(r.at) < recentEnds {
			keep = append(keep, r)
		}
	}
	s.recent = append(keep, ended{match: match, cause: cause, at: now})
	for e := range s.open {
		if match(e.owner) {
			victims = append(victims, e)
		}
	}
	s.mu.Unlock()
	for _, e := range victims {
		e.cancel(cause)
	}
	return len(victims)
}

// EndAgent ends every stream of an agent.
func (s *Streams) EndAgent(agentID string, cause error) int {
	return s.End(func(o StreamOwner) bool {
		return o.Identity.Kind == pki.KindAgent && o.Identity.AgentID == agentID
	}, cause)
}

// EndAgentSerial ends the streams an agent opened with one certificate.
func (s *Streams) EndAgentSerial(agentID, serial string, cause error) int {
	return s.End(func(o StreamOwner) bool {
		return o.Identity.Kind == pki.KindAgent && o.Identity.AgentID == agentID && o.Serial == serial
	}, cause)
}

// EndSerial ends the streams opened with a certificate, whoever holds it.
func (s *Streams) EndSerial(serial string, cause error) int {
	return s.End(func(o StreamOwner) bool { return o.Serial == serial }, cause)
}

// EndOperatorName ends the streams of every certificate of an operator
// name, in any role, issued before the given time.
func (s *Streams) EndOperatorName(name string, before time.Time, cause error) int {
	return s.End(func(o StreamOwner) bool {
		return o.Identity.Kind == pki.KindOperator && o.Identity.Name == name && o.Issued.Before(before)
	}, cause)
}
