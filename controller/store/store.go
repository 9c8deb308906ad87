// Package store persists the controller's fleet state: agents, enrollment
// tokens, captures, dumps, the audit log, and the coordination state that
// lets several controller replicas share one database. The Store interface is
// SQL-portable: the SQLite implementation is the embedded default for a
// single controller; PostgreSQL implements the same interface, runs the same
// conformance tests, and is what several replicas share.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when the requested row does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when an insert collides with an existing row.
var ErrConflict = errors.New("already exists")

// ErrInUse is returned when a row is not deleted because something still
// uses it: a dump being downloaded, a capture that is active or still has
// dumps.
var ErrInUse = errors.New("in use")

// Token errors returned by ConsumeToken; callers map them to PermissionDenied
// without telling the caller which one applied.
var (
	ErrTokenExpired   = errors.New("token expired")
	ErrTokenExhausted = errors.New("token has no uses left")
	ErrTokenRevoked   = errors.New("token revoked")
)

// Agent is one enrolled machine as stored.
type Agent struct {
	ID     string
	Labels map[string]string // user labels only; built-in labels are derived

	Hostname           string
	OSBuild            string
	OSUBR              uint32
	OSEdition          string
	OSProductName      string
	OSInstallationType string
	Arch               string
	AgentVersion       string

	FirstSeen  time.Time
	LastSeen   time.Time
	CertSerial string    // hex serial of the newest certificate issued
	CertExpiry time.Time // expiry of that certificate
	// PrevSerial is the certificate CertSerial replaced, still accepted
	// (for everything but renewal) until PrevUntil, the renewal's grace
	// window; after that only CertSerial is.
	PrevSerial string
	PrevUntil  time.Time
	Revoked    bool
	RevokedAt  time.Time // zero unless Revoked

	// ProvisionState is the agent's last reported provisioning state
	// ("ready", "blocked", ...; empty before the first report), and
	// ProvisionDetail why, for blocked and failed.
	ProvisionState   string
	ProvisionDetail  string
	ProvisionUpdated time.Time
}

// Artifact is a file in the controller's content-addressed store.
type Artifact struct {
	SHA256  string // hex
	Kind    string // e.g. ArtifactDTraceMSI
	Name    string
	Size    int64
	Created time.Time
}

// Capture is a stored capture. Spec and Statuses are JSON documents owned by
// the API layer; the store keeps them opaque.
type Capture struct {
	ID        string
	Spec      string // CaptureSpec as protojson
	State     string // "active", "done", "failed", "expired", "cancelled"
	Detail    string
	Created   time.Time
	Expires   time.Time
	CreatedBy string
	Rendered  string
	Statuses  string // JSON
	Warnings  []string
}

// CaptureTarget is a capture's progress on one agent.
type CaptureTarget struct {
	CaptureID string
	AgentID   string
	State     string
	Detail    string
	Events    int64
	Updated   time.Time
}

// Event is one trigger event. Frames are JSON documents.
type Event struct {
	Seq       int64 // assigned by the store, increasing
	ID        string
	CaptureID string
	AgentID   string
	Time      time.Time
	PID, TID  int
	Process   string
	Probe     string
	Status    uint32
	User      string // JSON frames
	Kernel    string // JSON frames
	Signature string
}

// DumpUploaded is the state of a dump whose content the controller received
// and verified. Only SetDumpProgress sets it: PutDump, which records what
// an agent says, refuses it and never leaves it.
const DumpUploaded = "uploaded"

// Dump is a live kernel dump as the controller knows it.
type Dump struct {
	ID         string
	AgentID    string
	CaptureID  string
	EventID    string
	FileName   string
	Size       int64
	SHA256     string
	State      string
	Detail     string
	Written    time.Time
	Updated    time.Time
	Committed  int64 // raw bytes durably received
	Compressed int64 // bytes received on the wire
	Signature  string
	Pulled     bool // an operator asked for it: the quota does not apply
	Admitted   bool // AdmitDump let it upload; set only by AdmitDump
	// Facts from the dump's own header, as the agent reported them: the
	// dump type ("full", "triage", ...), bug check code, OS build and the
	// size the header declares. A report without them keeps earlier ones.
	DumpType     string
	BugCheckCode uint32
	OSBuild      uint32
	DeclaredSize int64
}

// Replica is one controller process sharing the store.
type Replica struct {
	ID        string
	Addr      string // where other replicas and operators reach it
	Started   time.Time
	Heartbeat time.Time // the presence lease: stale once older than the lease
}

// Directive states. A directive is pending until the replica holding the
// agent's stream sends it, then done or failed once the agent answers.
const (
	DirectivePending = "pending"
	DirectiveSent    = "sent"
	DirectiveDone    = "done"
	DirectiveFailed  = "failed"
)

// Directive is a message for one agent, routed through whichever replica
// holds its stream. Body and Result are opaque to the store.
type Directive struct {
	Seq     int64 // assigned by the store, increasing
	AgentID string
	ID      string
	Body    []byte
	State   string // DirectivePending, DirectiveSent, DirectiveDone or DirectiveFailed
	Result  []byte
	Origin  string // the replica or operator that enqueued it
	Created time.Time
	Updated time.Time
}

// ArtifactDTraceMSI is the kind of the DTrace installer artifact.
const ArtifactDTraceMSI = "dtrace-msi"

// Token is an enrollment token. Only the SHA-256 hash of its secret is stored.
type Token struct {
	ID         string
	SecretHash []byte // sha256 of the secret part
	Uses       int
	UsesLeft   int
	Labels     map[string]string
	Created    time.Time
	Expires    time.Time
	CreatedBy  string
	Revoked    bool
}

// AuditEntry is one record of a mutating call.
type AuditEntry struct {
	ID      int64
	Time    time.Time
	Actor   string
	Action  string
	Target  string
	Outcome string
	Details string // JSON
	// CertSerial is the hex serial of the caller's client certificate;
	// empty for callers without one.
	CertSerial string
}

// OperatorCert is an operator certificate the controller issued or saw in
// use, or a serial an admin revoked before it was ever seen (then only
// Serial and the revocation are set).
type OperatorCert struct {
	Serial    string // hex, as pki.SerialHex renders it
	Role      string
	Name      string
	Issued    time.Time // when it was signed (pki.IssuedAt)
	NotBefore time.Time
	NotAfter  time.Time
	FirstSeen time.Time // zero until first used
	LastSeen  time.Time
	RevokedAt time.Time // zero unless revoked
	RevokedBy string
}

// OperatorRevocation is why an operator certificate is refused: its serial
// was revoked, or every certificate of its name issued before At was.
type OperatorRevocation struct {
	Serial string // set for a revocation by serial
	Name   string // set for a revocation by name
	At     time.Time
	By     string
}

// AuditFilter selects audit entries. Zero values mean no limit on that field.
type AuditFilter struct {
	Since time.Time
	Limit int // default 100
	// Paging: when BeforeID is set, only entries after the entry
	// (BeforeTime, BeforeID) in the newest-first order, that is older, or
	// as old with a smaller ID.
	BeforeTime time.Time
	BeforeID   int64
}

// DumpAgeQuery selects dumps for retention in the order of their last
// update, oldest first, then by ID.
type DumpAgeQuery struct {
	// UpdatedBefore keeps dumps last updated before it; zero: any.
	UpdatedBefore time.Time
	// UploadedOnly keeps only dumps in state DumpUploaded.
	UploadedOnly bool
	// Paging: only dumps after the position (AfterUpdated, AfterID); an
	// empty AfterID starts at the oldest.
	AfterUpdated time.Time
	AfterID      string
	Limit        int // at most 1000; <= 0 means 100
}

// EventPrune selects events to delete, oldest (lowest Seq) first. Exactly
// one of CaptureID, Before and UpToSeq is set.
type EventPrune struct {
	CaptureID string    // the events of one capture
	Before    time.Time // events whose Time is before it
	UpToSeq   int64     // events with Seq <= UpToSeq
	Limit     int       // rows deleted per call: 1-100000
}

// Store is the controller's persistence. Implementations must be safe for
// concurrent use. Times are stored in UTC with at least millisecond precision.
type Store interface {
	// CreateAgent inserts a new agent; ErrConflict if the ID exists.
	CreateAgent(ctx context.Context, a Agent) error
	// GetAgent returns one agent or ErrNotFound.
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns every agent ordered by hostname, then ID.
	ListAgents(ctx context.Context) ([]Agent, error)
	// ListAgentsPage returns at most limit agents in ListAgents' order that
	// come after the position (afterHostname, afterID); an empty afterID
	// starts at the first agent. Paging through a large fleet this way
	// never holds more than a page in memory.
	ListAgentsPage(ctx context.Context, afterHostname, afterID string, limit int) ([]Agent, error)
	// ListAgentSelectors returns every agent not revoked, in ListAgents'
	// order, with only what a capture's selector and preview read: ID,
	// Labels, Hostname, OSBuild, ProvisionState and ProvisionDetail.
	ListAgentSelectors(ctx context.Context) ([]Agent, error)
	// UpdateInventory stores the inventory fields of a (from Hello) and sets LastSeen.
	UpdateInventory(ctx context.Context, a Agent) error
	// TouchAgent sets LastSeen.
	TouchAgent(ctx context.Context, id string, seen time.Time) error
	// SetLabels replaces the agent's user labels and returns the updated agent.
	SetLabels(ctx context.Context, id string, labels map[string]string) (Agent, error)
	// SetCertificate records the newest certificate issued to the agent.
	// The certificate it replaces becomes PrevSerial, accepted until
	// graceUntil (zero: not at all); one replaced before is forgotten.
	SetCertificate(ctx context.Context, id, serial string, expiry, graceUntil time.Time) error
	// RevokeAgent marks the agent revoked (idempotent) and returns it.
	RevokeAgent(ctx context.Context, id string, at time.Time) (Agent, error)
	// SetProvisionState records the agent's reported provisioning state.
	SetProvisionState(ctx context.Context, id, state, detail string, at time.Time) error

	// PutArtifact records an artifact; recording the same SHA-256 again
	// updates its kind, name and creation time (the newest upload wins).
	PutArtifact(ctx context.Context, a Artifact) error
	// GetArtifact returns an artifact by hex SHA-256, or ErrNotFound.
	GetArtifact(ctx context.Context, sha256 string) (Artifact, error)
	// LatestArtifact returns the newest artifact of kind, or ErrNotFound.
	LatestArtifact(ctx context.Context, kind string) (Artifact, error)

	// CreateToken inserts a token; ErrConflict if the ID exists.
	CreateToken(ctx context.Context, t Token) error
	// ListTokens returns all tokens, newest first.
	ListTokens(ctx context.Context) ([]Token, error)
	// RevokeToken marks a token revoked and returns it; ErrNotFound if absent.
	RevokeToken(ctx context.Context, id string) (Token, error)
	// ConsumeToken atomically checks the token (not revoked, not expired at
	// now, a use left, secret hash matching in constant time) and decrements
	// UsesLeft. It returns the token as it was before the decrement, or
	// ErrNotFound / ErrTokenRevoked / ErrTokenExpired / ErrTokenExhausted.
	// A hash mismatch is reported as ErrNotFound.
	ConsumeToken(ctx context.Context, id string, secretHash []byte, now time.Time) (Token, error)

	// CreateCapture stores a capture and its targets in one transaction.
	CreateCapture(ctx context.Context, c Capture, targets []CaptureTarget) error
	// GetCapture returns a capture or ErrNotFound.
	GetCapture(ctx context.Context, id string) (Capture, error)
	// ListCaptures returns captures newest first; state filters when set.
	ListCaptures(ctx context.Context, state string) ([]Capture, error)
	// SetCaptureState records a capture's state and why.
	SetCaptureState(ctx context.Context, id, state, detail string) error
	// ListTargets returns a capture's targets ordered by agent ID.
	ListTargets(ctx context.Context, captureID string) ([]CaptureTarget, error)
	// SetTargetState records a target's state; ErrNotFound if absent.
	SetTargetState(ctx context.Context, captureID, agentID, state, detail string, at time.Time) error
	// SetTargetStates records many targets' states in one transaction, in
	// order (a later update of the same target wins). Updates of targets
	// that do not exist are skipped; it returns how many rows it changed.
	SetTargetStates(ctx context.Context, updates []CaptureTarget) (int, error)
	// InsertEvents stores events, skipping IDs already stored, counts the
	// new ones on their targets, and returns how many were new.
	InsertEvents(ctx context.Context, events []Event) (int, error)
	// ListEvents returns a capture's events with Seq > afterSeq, in order.
	ListEvents(ctx context.Context, captureID string, afterSeq int64, limit int) ([]Event, error)
	// EventSeq returns the Seq of an event ID, or ErrNotFound.
	EventSeq(ctx context.Context, id string) (int64, error)
	// EventSignature returns the stack signature of an event, or ErrNotFound.
	EventSignature(ctx context.Context, id string) (string, error)

	// PutDump inserts a dump or updates what the agent reports about it
	// (everything but Committed and Compressed, which the upload owns).
	// Once a dump has a SHA256, its SHA256 and Size never change; a dump in
	// state DumpUploaded keeps its state and detail; and d.State may not be
	// DumpUploaded (an error): only a verified upload makes a dump uploaded.
	PutDump(ctx context.Context, d Dump) error
	// GetDump returns a dump or ErrNotFound.
	GetDump(ctx context.Context, id string) (Dump, error)
	// ListDumps returns dumps newest first, only a capture's when captureID is set.
	ListDumps(ctx context.Context, captureID string) ([]Dump, error)
	// SetDumpProgress records the durable upload progress.
	SetDumpProgress(ctx context.Context, id string, committed, compressed int64, state, detail string, at time.Time) error
	// MarkDumpPulled records that an operator asked for the dump's upload.
	MarkDumpPulled(ctx context.Context, id string) error
	// CountDumps counts a capture's dumps with a signature in a state.
	CountDumps(ctx context.Context, captureID, signature, state string) (int, error)
	// DumpBytes is how many bytes dumps hold: the Size of uploaded dumps
	// plus the Committed bytes of the others, over one agent's dumps or,
	// when agentID is empty, over all.
	DumpBytes(ctx context.Context, agentID string) (int64, error)
	// StaleDumpUploads returns up to limit dumps that hold a partial upload
	// (not uploaded, Committed > 0) and were last updated before t, oldest
	// first.
	StaleDumpUploads(ctx context.Context, t time.Time, limit int) ([]Dump, error)
	// ExpireDumpUpload forgets a stale partial upload: Committed and
	// Compressed 0, state "failed" with detail, Updated at; only if the
	// dump is still not uploaded and was last updated before t. It reports
	// whether it changed the dump.
	ExpireDumpUpload(ctx context.Context, id string, t time.Time, detail string, at time.Time) (bool, error)
	// SetAgentMemory records the physical memory an agent reported, in
	// bytes (0: unknown); ErrNotFound for an unknown agent.
	SetAgentMemory(ctx context.Context, agentID string, bytes int64) error
	// AgentMemory returns the memory SetAgentMemory recorded, 0 if none;
	// ErrNotFound for an unknown agent.
	AgentMemory(ctx context.Context, agentID string) (int64, error)
	// ListAgentTargets returns one agent's capture targets, newest capture
	// first, at most limit (all when limit <= 0).
	ListAgentTargets(ctx context.Context, agentID string, limit int) ([]CaptureTarget, error)
	// ListAgentDumps returns one agent's dumps newest written first
	// (unwritten last), at most limit (all when limit <= 0).
	ListAgentDumps(ctx context.Context, agentID string, limit int) ([]Dump, error)
	// GetTarget returns one target of a capture, or ErrNotFound.
	GetTarget(ctx context.Context, captureID, agentID string) (CaptureTarget, error)

	// AdmitDump atomically admits a dump for upload: true if already
	// admitted or if, among the dumps of its capture, fewer than maxDumps
	// are admitted (0 = no limit) and fewer than perSignature admitted dumps
	// share its signature (0 = no limit; only when the dump has a
	// signature). A dump with Pulled set is always admitted. Two
	// controllers admitting at once must never exceed the limits.
	// ErrNotFound for an unknown dump.
	AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error)

	// ClaimTarget atomically moves a capture target from pending to
	// delivered, but only while fewer than allowed targets of that capture
	// have left pending (the rollout limit; allowed < 0 means no limit). It
	// reports whether this call made the move. Two controllers claiming at
	// once must never exceed allowed. ErrNotFound if there is no such target.
	ClaimTarget(ctx context.Context, captureID, agentID string, allowed int, at time.Time) (bool, error)
	// ClaimTargets is ClaimTarget for many agents in one transaction, in
	// the order given: it returns the agents this call moved to delivered.
	// Agents that are not targets, or no longer pending, are skipped.
	ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error)
	// FinishCapture sets a capture's state and detail only if it is still
	// "active", and reports whether it changed it (so only one replica ends
	// a capture). ErrNotFound if there is no such capture.
	FinishCapture(ctx context.Context, id, state, detail string) (bool, error)

	// HeartbeatReplica upserts the replica row and sets Heartbeat (its
	// presence lease); a zero r.Heartbeat means now.
	HeartbeatReplica(ctx context.Context, r Replica) error
	// ListReplicas returns every replica row ordered by ID.
	ListReplicas(ctx context.Context) ([]Replica, error)
	// SetPresence records that the agent's stream is attached to replicaID
	// (session is an opaque id of that stream); upsert by agent.
	SetPresence(ctx context.Context, agentID, replicaID, session string, at time.Time) error
	// ClearPresence removes the agent's presence only if it still names
	// this replica and session (a newer stream elsewhere is kept).
	ClearPresence(ctx context.Context, agentID, replicaID, session string) error
	// ClearReplicaPresence removes every presence naming replicaID: a
	// replica starting under a fixed ID holds no stream yet, and must not
	// revive what its previous life left behind when it renews its lease.
	ClearReplicaPresence(ctx context.Context, replicaID string) error
	// Presence returns agentID -> replicaID for every presence whose
	// replica's Heartbeat is at or after liveSince (the lease).
	Presence(ctx context.Context, liveSince time.Time) (map[string]string, error)

	// EnqueueDirective stores a pending directive and returns its Seq
	// (increasing). d.Seq, d.State and d.Result are ignored; a zero d.Created is the
	// current time, and Updated starts equal to Created.
	EnqueueDirective(ctx context.Context, d Directive) (int64, error)
	// PendingDirectives returns pending directives, oldest first, for agents
	// whose presence names replicaID, at most limit (100 when limit <= 0).
	PendingDirectives(ctx context.Context, replicaID string, limit int) ([]Directive, error)
	// SetDirectiveState sets state, result and Updated; ErrNotFound if absent.
	SetDirectiveState(ctx context.Context, seq int64, state string, result []byte, at time.Time) error
	// GetDirective returns one directive or ErrNotFound.
	GetDirective(ctx context.Context, seq int64) (Directive, error)
	// DeleteDirectivesBefore deletes finished (done/failed) directives
	// updated before t, and any directive created before t; returns how many.
	DeleteDirectivesBefore(ctx context.Context, t time.Time) (int, error)

	// RecordOperatorCert records an operator certificate: inserted when the
	// serial is new, else LastSeen moves forward, FirstSeen is set if it was
	// zero, and identity fields left empty (a serial revoked before it was
	// seen) are filled. Revocation fields are never changed here.
	RecordOperatorCert(ctx context.Context, c OperatorCert) error
	// ListOperatorCerts returns every recorded operator certificate, newest
	// issued first (serials never seen last), at most limit (1000 when
	// limit <= 0).
	ListOperatorCerts(ctx context.Context, limit int) ([]OperatorCert, error)
	// RevokeOperatorCert revokes one serial, recording it if it was never
	// seen, and returns the row. Revoking again keeps the first RevokedAt.
	RevokeOperatorCert(ctx context.Context, serial string, at time.Time, by string) (OperatorCert, error)
	// RevokeOperatorName revokes every certificate of an operator name
	// issued before at, seen or not: later checks refuse them, and the
	// recorded ones are marked revoked. A later revocation of the same name
	// moves the cut-off forward, never back. It returns how many recorded
	// certificates it newly marked.
	RevokeOperatorName(ctx context.Context, name string, at time.Time, by string) (int, error)
	// OperatorCertRevocation reports whether the certificate with serial,
	// of operator name, issued at issued, is revoked, and by what.
	OperatorCertRevocation(ctx context.Context, serial, name string, issued time.Time) (OperatorRevocation, bool, error)

	// OldestDumps returns dumps by q, oldest updated first (retention).
	OldestDumps(ctx context.Context, q DumpAgeQuery) ([]Dump, error)
	// MarkDumpRead records that a download of the dump is under way until
	// until; an earlier mark is only ever moved later. ErrNotFound if
	// there is no such dump.
	MarkDumpRead(ctx context.Context, id string, until time.Time) error
	// DeleteDump deletes the dump's row and returns it as it was, unless a
	// download marked by MarkDumpRead is under way after now (ErrInUse);
	// ErrNotFound if there is no such dump. The check and the delete are
	// atomic: a download marked before the delete keeps the dump, one
	// marked after finds it gone. It does not touch the dump's blob.
	DeleteDump(ctx context.Context, id string, now time.Time) (Dump, error)
	// BlobReferenced reports whether any dump or artifact still names the
	// content with hash sha256.
	BlobReferenced(ctx context.Context, sha256 string) (bool, error)
	// DeleteEvents deletes at most p.Limit events selected by p, lowest
	// Seq first, and returns how many it deleted. Callers loop until it
	// deletes fewer than the limit, so no statement deletes more than a
	// batch.
	DeleteEvents(ctx context.Context, p EventPrune) (int, error)
	// EventSeqBeyond returns the Seq of the newest event beyond the keep
	// newest ones (events up to it are the surplus), or 0 if there are at
	// most keep events.
	EventSeqBeyond(ctx context.Context, keep int) (int64, error)
	// EndedCaptures returns the IDs of at most limit captures that are not
	// active, expired before t, and have neither dumps nor events left,
	// earliest expiry first.
	EndedCaptures(ctx context.Context, t time.Time, limit int) ([]string, error)
	// DeleteCapture deletes a capture with its targets and any events left
	// in one transaction: ErrInUse if it is active or still has dumps,
	// ErrNotFound if there is none. Callers delete a large capture's
	// events first with DeleteEvents, in batches.
	DeleteCapture(ctx context.Context, id string) error
	// AcquireLease takes or renews the named lease for holder until
	// now+ttl, if it is free, expired at now, or already holder's; it
	// reports whether holder has it. One row, one statement: two replicas
	// asking at once never both get it.
	AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)

	// AppendAudit writes one audit entry and returns its ID.
	AppendAudit(ctx context.Context, e AuditEntry) (int64, error)
	// ListAudit returns entries newest first.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)

	// Close releases the store.
	Close() error
}
