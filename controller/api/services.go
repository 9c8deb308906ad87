package api

import (
	"context"
	"crypto/x509"
	"time"

	"google.golang.org/grpc"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// The services the handlers call, each declared here with only the methods
// api uses, so that a handler is tested with a small fake (tests/fakes)
// instead of a controller. The controller passes its capture.Manager,
// dumps.Receiver, enroll.Enroller, fleet.Registry and cluster.Cluster; the
// api_test package checks at compile time that they still fit.

// Services of the agent-facing AgentServer.

// Enroller turns a token and a CSR into an agent's first certificate, and
// renews it (enroll.Enroller).
type Enroller interface {
	Enroll(ctx context.Context, req enroll.EnrollRequest) (enroll.Enrollment, error)
	Renew(ctx context.Context, agentID string, csrDER []byte) (*x509.Certificate, error)
}

// CaptureReports takes what an agent's stream says about captures: acks of
// capture directives, trigger events, capture status; Kick asks for the
// captures waiting for a newly connected agent to go out now
// (capture.Manager).
type CaptureReports interface {
	Kick()
	Acked(ctx context.Context, agentID string, ack *livedumpv1.Ack)
	Ingest(ctx context.Context, s *fleet.Session, agentID string, ev *livedumpv1.TriggerEvent) error
	// IngestBatch takes the events of one EventBatch, each as Ingest would.
	IngestBatch(ctx context.Context, s *fleet.Session, agentID string, evs []*livedumpv1.TriggerEvent) error
	Status(ctx context.Context, agentID string, st *livedumpv1.CaptureStatus)
}

// DumpReceiver takes the dumps an agent reports and uploads, and the memory
// size that bounds them (dumps.Receiver).
type DumpReceiver interface {
	SetMemory(ctx context.Context, agentID string, bytes uint64) error
	Report(ctx context.Context, agentID string, d *livedumpv1.Dump) error
	Offset(ctx context.Context, agentID, id string) (*livedumpv1.DumpOffsetResponse, error)
	Upload(agentID string, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]) error
}

// Sessions holds the Connect streams attached to this controller
// (fleet.Registry).
type Sessions interface {
	Attach(agentID string, now time.Time, cancel context.CancelCauseFunc) *fleet.Session
	Detach(s *fleet.Session)
}

// Presence records, for every replica to read, which replica holds an
// agent's stream (cluster.Cluster).
type Presence interface {
	Attached(ctx context.Context, agentID, session string) error
	Detached(ctx context.Context, agentID, session string) error
}

// Services of the operator-facing FleetServer.

// TokenIssuer creates enrollment tokens (enroll.Enroller).
type TokenIssuer interface {
	CreateToken(ctx context.Context, req enroll.TokenRequest) (store.Token, string, error)
}

// Captures creates, reads and cancels captures (capture.Manager).
type Captures interface {
	Create(ctx context.Context, r capture.Request) (*livedumpv1.Capture, *livedumpv1.CapturePreview, error)
	Cancel(ctx context.Context, id, actor string) (*livedumpv1.Capture, error)
	Get(ctx context.Context, id string) (*livedumpv1.Capture, error)
	GetPage(ctx context.Context, id, after string, budget int) (*livedumpv1.Capture, string, error)
	ListPage(ctx context.Context, afterCreated time.Time, afterID string, budget int) ([]*livedumpv1.Capture, bool, error)
}

// CaptureEvents reads a capture's stored events and follows its live ones
// (capture.Manager).
type CaptureEvents interface {
	// Watch subscribes to a capture's live messages; stop ends the
	// subscription. The channel is closed when the watcher is dropped.
	Watch(id string) (msgs <-chan *livedumpv1.WatchCaptureResponse, stop func())
	Events(ctx context.Context, captureID, after string, limit int) ([]*livedumpv1.TriggerEvent, error)
	EventsPage(ctx context.Context, captureID, after string, limit, budget int) ([]*livedumpv1.TriggerEvent, string, error)
}

// DumpReader opens a stored dump with its content (dumps.Receiver).
type DumpReader interface {
	Open(ctx context.Context, id string) (store.Dump, blobstore.Reader, error)
}

// Directives sends a directive to an agent and waits for the report that
// answers it (fleet.Registry for this replica, cluster.Cluster for any).
type Directives interface {
	Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (fleet.Report, error)
}

// LocalAgents are the agents whose streams are attached to this replica
// (fleet.Registry).
type LocalAgents interface {
	Directives
	Online(agentID string) bool
	LastHeartbeat(agentID string) (time.Time, bool)
	Session(agentID string) *fleet.Session
	Disconnect(agentID string, cause error) bool
}

// Peers reaches agents wherever their stream is, on this replica or another
// (cluster.Cluster).
type Peers interface {
	Directives
	Online(ctx context.Context, agentID string) bool
	Send(ctx context.Context, agentID string, d *livedumpv1.Directive) error
}

// Revocations ends, on every replica, the streams of a revoked agent or
// operator certificate (cluster.Cluster).
type Revocations interface {
	Revoked(ctx context.Context, agentID string)
	OperatorCertRevoked(ctx context.Context, serial string)
	OperatorNameRevoked(ctx context.Context, name string, before time.Time)
}
