// Package dumps receives live kernel dumps from agents: resumable uploads
// of zstd chunks, committed durably at known offsets, verified against the
// SHA-256 of the raw content before they enter the content-addressed store.
package dumps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ids"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of an upload.
const (
	MaxDumpSize = 1 << 40 // 1 TiB
	MaxChunkRaw = 8 << 20 // raw bytes one zstd chunk may expand to
	// An upload is synced and its offset recorded every commitEvery bytes,
	// or every commitInterval once commitMin bytes came: a fast upload
	// fsyncs in large batches (each fsync of a few MiB stalled the disk),
	// and a cut costs at most a second or 64 MiB of progress.
	commitEvery    = 64 << 20
	commitMin      = 4 << 20
	commitInterval = time.Second
	defaultSlots   = 4
	// finishTimeout bounds publishing a complete upload, which goes on
	// if the agent disconnects after its last chunk.
	finishTimeout = 15 * time.Minute

	DefaultHeaderTimeout = 30 * time.Second
	DefaultChunkTimeout  = 60 * time.Second
	DefaultQuotaPerAgent = 64 << 30 // 64 GiB
	DefaultQuotaTotal    = 1 << 40  // 1 TiB
	DefaultPartialTTL    = 24 * time.Hour
	// memorySlack is how much larger than the machine's physical memory
	// a live kernel dump may be announced (headers, metadata): an eighth
	// of the memory plus this.
	memorySlack = 64 << 20
	// sweepBatch bounds the partial uploads expired per sweep.
	sweepBatch = 100
	// ReadLease is how long a download marks its dump in the store as
	// being read (store.MarkDumpRead); the replica serving it renews the
	// mark every quarter of it while the download lasts, so that no
	// replica's retention sweep deletes the dump. A dump stays protected
	// up to ReadLease after its last download ended or its replica died.
	ReadLease = 2 * time.Minute
)

// Stored states.
const (
	StateWriting   = "writing"
	StateHashed    = "hashed"
	StateHashOnly  = "hash_only"
	StateUploading = "uploading"
	StateUploaded  = store.DumpUploaded
	StateFailed    = "failed"
	StateAborted   = "aborted"
	// StateTruncated: complete by size but shorter than its own header
	// declares (or without a valid header); kept on the agent.
	StateTruncated = "truncated"
)

// Reasons a report or upload is refused, the label values of
// livedump_controller_dump_refusals_total.
var refusalReasons = []string{"invalid", "not_owner", "not_target", "forged_state", "immutable", "too_large",
	"quota_agent", "quota_total", "busy", "header_timeout", "chunk_timeout", "past_size"}

// StateName is the stored name of a wire state, its short name
// ("hash_only"); "" for UNSPECIFIED and numbers the enum does not name.
func StateName(s livedumpv1.DumpState) string {
	if !enumname.Valid(s) {
		return ""
	}
	return enumname.Name(s, "_")
}

// StateValue maps a stored state to the wire enum: UNSPECIFIED for a name
// it does not know.
func StateValue(s string) livedumpv1.DumpState {
	v, _ := enumname.Parse[livedumpv1.DumpState](s, "_")
	return v
}

// Windows names live dumps <Component>-YYYYMMDD-HHMM[-N].dmp. Dump IDs
// and hashes follow internal/ids.
var fileRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}\.(?i:dmp)$`)

// Bounds limit what agents may make the controller store and hold. Zero
// values take the defaults; a negative quota means none.
type Bounds struct {
	// HeaderTimeout bounds the wait for an upload's header, ChunkTimeout
	// the wait for each following message (defaults 30s and 60s).
	HeaderTimeout, ChunkTimeout time.Duration
	// MaxSize caps the announced size of a dump (default 1 TiB); a dump
	// is also refused when larger than its agent's reported physical
	// memory plus slack.
	MaxSize int64
	// QuotaPerAgent and QuotaTotal cap the bytes of dumps stored and
	// being uploaded, per agent and in all (defaults 64 GiB and 1 TiB).
	QuotaPerAgent, QuotaTotal int64
	// PartialTTL is how long a partial upload may make no progress
	// before it is removed (default 24h).
	PartialTTL time.Duration
}

// Config configures a Receiver.
type Config struct {
	Store  store.Store
	Blobs  blobstore.Blobs // dumps, and the partial uploads that become them
	Slots  int             // concurrent uploads; more wait (backpressure, not errors)
	Bounds Bounds
	// Limits returns a capture's upload limits; nil: none.
	Limits  func(ctx context.Context, captureID string) (Limits, error)
	Logger  *slog.Logger
	Clock   clockwork.Clock
	Metrics prometheus.Registerer
}

// Limits bound how many of a capture's dumps are uploaded; the rest are
// kept on their agents (hash only) until an operator pulls them.
type Limits struct {
	MaxDumps     int // fleet-wide (--max-dumps); 0: no limit
	PerSignature int // per stack signature (--dumps-per-signature); 0: no limit
}

// Receiver takes dump uploads.
type Receiver struct {
	cfg   Config
	slots chan struct{}
	dec   *zstd.Decoder

	mu      sync.Mutex
	agents  map[string]bool    // agents with an upload stream open here: one each
	active  map[string]*active // dump ID -> upload in progress here
	readers map[string]int     // dump ID -> downloads open here

	results    *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	bytes      prometheus.Counter
	compressed prometheus.Counter
	duration   prometheus.Histogram
	resumes    prometheus.Counter
	stored     prometheus.Gauge
	expired    prometheus.Counter
}

// active is an upload in progress: it reserves the bytes it has yet to
// commit against the quotas.
type active struct {
	agentID   string
	size      int64
	committed int64 // what the store records as committed (under mu)
}

// New returns a Receiver.
func New(cfg Config) (*Receiver, error) {
	if cfg.Slots <= 0 {
		cfg.Slots = defaultSlots
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &cfg.Bounds
	if b.HeaderTimeout <= 0 {
		b.HeaderTimeout = DefaultHeaderTimeout
	}
	if b.ChunkTimeout <= 0 {
		b.ChunkTimeout = DefaultChunkTimeout
	}
	if b.MaxSize <= 0 || b.MaxSize > MaxDumpSize {
		b.MaxSize = MaxDumpSize
	}
	if b.QuotaPerAgent == 0 {
		b.QuotaPerAgent = DefaultQuotaPerAgent
	}
	if b.QuotaTotal == 0 {
		b.QuotaTotal = DefaultQuotaTotal
	}
	if b.PartialTTL <= 0 {
		b.PartialTTL = DefaultPartialTTL
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxChunkRaw), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, slots: make(chan struct{}, cfg.Slots), dec: dec, agents: map[string]bool{}, active: map[string]*active{}, readers: map[string]int{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_dumps_total", Help: "Dump uploads finished, by result (uploaded, duplicate: already uploaded and verified, hash_only, corrupt, failed)."}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_dump_refusals_total",
			Help: "Dump reports and uploads refused, by reason (invalid, not_owner, not_target, forged_state, immutable, too_large, quota_agent, quota_total, busy, header_timeout, chunk_timeout, past_size)."}, []string{"reason"}),
		bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_bytes_received_total", Help: "Raw dump bytes received and written."}),
		compressed: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_compressed_bytes_received_total", Help: "Compressed dump bytes received on the wire."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "livedump_controller_dump_upload_seconds", Help: "Duration of one upload stream.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 18)}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_upload_resumes_total", Help: "Uploads that resumed from a committed offset above 0."}),
		stored: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livedump_controller_dump_stored_bytes",
			Help: "Bytes dumps hold against the total quota (uploaded dumps and committed partial uploads), as last counted."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_partial_uploads_expired_total",
			Help: "Partial dump uploads removed after making no progress for dumps.partial_ttl."}),
	}
	for _, res := range []string{"uploaded", "duplicate", "hash_only", "corrupt", "failed"} {
		r.results.WithLabelValues(res)
	}
	for _, res := range refusalReasons {
		r.refusals.WithLabelValues(res)
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(r.results, r.refusals, r.bytes, r.compressed, r.duration, r.resumes, r.stored, r.expired)
	}
	return r, nil
}

// refuse counts and logs a refusal and returns err, the status the agent
// gets (and the audit log records).
func (r *Receiver) refuse(reason, agentID, dumpID string, err error) error {
	r.refusals.WithLabelValues(reason).Inc()
	r.cfg.Logger.Warn("dump refused", "agent_id", agentID, "dump_id", clip(dumpID), "reason", reason, "err", err)
	return err
}

// clip bounds a string from an agent before it goes into an error, a log
// line or the audit log.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, field+": "+format, args...)
}

func checkDump(d *livedumpv1.Dump) error {
	switch {
	case d == nil:
		return invalid("dump", "missing")
	case ids.DumpID(d.GetId()) != nil:
		return invalid("dump.id", "%q: want 8-64 lower-case hex digits", clip(d.GetId()))
	case d.GetFileName() != "" && !fileRe.MatchString(d.GetFileName()):
		return invalid("dump.file_name", "%q is not a dump file name", clip(d.GetFileName()))
	case d.GetSha256() != "" && ids.SHA256(d.GetSha256()) != nil:
		return invalid("dump.sha256", "%q: want 64 lower-case hex digits", clip(d.GetSha256()))
	case d.GetSize() < 0 || d.GetSize() > MaxDumpSize:
		return invalid("dump.size", "%d out of range", d.GetSize())
	case len(d.GetCaptureId()) > 64 || len(d.GetEventId()) > 64 || len(d.GetDetail()) > 4096:
		return invalid("dump", "oversized field")
	case !dumpTypeRe.MatchString(d.GetDumpType()):
		return invalid("dump.dump_type", "%q: want lower-case letters, digits and dashes, at most 32", clip(d.GetDumpType()))
	case d.GetDeclaredSize() < 0 || d.GetDeclaredSize() > MaxDumpSize:
		return invalid("dump.declared_size", "%d out of range", d.GetDeclaredSize())
	}
	return nil
}

// dumpTypeRe is a dump type as the agent names it from the header
// ("full", "triage", "bitmap-kernel", "type-9", ...).
var dumpTypeRe = regexp.MustCompile(`^[a-z0-9-]{0,32}$`)

// Report records what an agent says about a dump. Progress the upload owns
// (and an uploaded dump's state) is never rolled back by a late report. An
// agent may only speak of its own dumps, may link them only to captures
// that target it, may never call a dump uploaded (only a verified upload
// makes it so), and may never change a dump's hash and size, or its
// capture, once reported.
func (r *Receiver) Report(ctx context.Context, agentID string, d *livedumpv1.Dump) error {
	_, err := r.report(ctx, agentID, d)
	return err
}

// report is Report; it also returns the dump as stored before.
func (r *Receiver) report(ctx context.Context, agentID string, d *livedumpv1.Dump) (*store.Dump, error) {
	if err := checkDump(d); err != nil {
		return nil, r.refuse("invalid", agentID, d.GetId(), err)
	}
	var old *store.Dump
	o, err := r.cfg.Store.GetDump(ctx, d.GetId())
	switch {
	case err == nil:
		old = &o
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	switch {
	case old != nil && old.AgentID != agentID:
		return nil, r.refuse("not_owner", agentID, d.GetId(), status.Errorf(codes.PermissionDenied, "dump %s belongs to another agent", d.GetId()))
	case old != nil && old.State == StateUploaded:
		return old, nil
	case d.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED:
		return nil, r.refuse("forged_state", agentID, d.GetId(), invalid("dump.state",
			"an agent cannot report a dump uploaded; the controller marks it uploaded once it has received and verified the content"))
	case old != nil && old.SHA256 != "" && d.GetSha256() != "" && d.GetSha256() != old.SHA256:
		return nil, r.refuse("immutable", agentID, d.GetId(), invalid("dump.sha256",
			"%s differs from the %s reported before; a dump's hash never changes", d.GetSha256(), old.SHA256))
	case old != nil && old.SHA256 != "" && d.GetSha256() != "" && d.GetSize() != old.Size:
		return nil, r.refuse("immutable", agentID, d.GetId(), invalid("dump.size",
			"%d differs from the %d bytes reported with its hash; a dump's size never changes", d.GetSize(), old.Size))
	case old != nil && old.CaptureID != "" && d.GetCaptureId() != old.CaptureID:
		return nil, r.refuse("immutable", agentID, d.GetId(), invalid("dump.capture_id",
			"%q: the dump belongs to capture %s", clip(d.GetCaptureId()), old.CaptureID))
	}
	if c := d.GetCaptureId(); c != "" && (old == nil || old.CaptureID != c) {
		// Only a capture's targets may spend its dump quota.
		_, err := r.cfg.Store.GetTarget(ctx, c, agentID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, r.refuse("not_target", agentID, d.GetId(), status.Errorf(codes.PermissionDenied,
				"dump.capture_id: agent %s is not a target of capture %q", agentID, clip(c)))
		}
		if err != nil {
			return nil, err
		}
	}
	sig := ""
	if d.GetEventId() != "" {
		sig, _ = r.cfg.Store.EventSignature(ctx, d.GetEventId())
	}
	state := StateName(d.GetState())
	if state == "" {
		state = StateWriting
	}
	return old, r.cfg.Store.PutDump(ctx, store.Dump{
		ID: d.GetId(), AgentID: agentID, CaptureID: d.GetCaptureId(), EventID: d.GetEventId(), FileName: d.GetFileName(),
		Size: d.GetSize(), SHA256: d.GetSha256(), State: state, Detail: d.GetDetail(), Written: d.GetWritten().AsTime(),
		Updated: r.cfg.Clock.Now().UTC(), Signature: sig,
		DumpType: d.GetDumpType(), BugCheckCode: d.GetBugCheckCode(), OSBuild: d.GetOsBuild(), DeclaredSize: d.GetDeclaredSize(),
	})
}

// SetMemory records the physical memory an agent reports: the largest
// live kernel dump its machine can write.
func (r *Receiver) SetMemory(ctx context.Context, agentID string, bytes uint64) error {
	return r.cfg.Store.SetAgentMemory(ctx, agentID, int64(min(bytes, 1<<62)))
}

// checkSize refuses an announced size no live kernel dump of the agent's
// machine can have.
func (r *Receiver) checkSize(ctx context.Context, agentID string, d *livedumpv1.Dump) error {
	mem, err := r.cfg.Store.AgentMemory(ctx, agentID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	size := d.GetSize()
	if mem > 0 {
		if limit := min(r.cfg.Bounds.MaxSize, mem+mem/8+memorySlack); size > limit {
			return r.refuse("too_large", agentID, d.GetId(), invalid("dump.size",
				"%d bytes is more than a live kernel dump of this machine can be: it reported %d bytes of physical memory (at most %d bytes)",
				size, mem, limit))
		}
	}
	if size > r.cfg.Bounds.MaxSize {
		return r.refuse("too_large", agentID, d.GetId(), invalid("dump.size",
			"%d bytes is more than the %d-byte maximum (dumps.max_size)", size, r.cfg.Bounds.MaxSize))
	}
	return nil
}

// Offset returns where an upload resumes.
func (r *Receiver) Offset(ctx context.Context, agentID, id string) (*livedumpv1.DumpOffsetResponse, error) {
	if ids.DumpID(id) != nil {
		return nil, invalid("dump_id", "%q: want 8-64 lower-case hex digits", id)
	}
	d, err := r.cfg.Store.GetDump(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return &livedumpv1.DumpOffsetResponse{Committed: 0}, nil
	}
	if err != nil {
		return nil, err
	}
	if d.AgentID != agentID {
		return nil, status.Errorf(codes.PermissionDenied, "dump %s belongs to another agent", id)
	}
	return &livedumpv1.DumpOffsetResponse{Committed: d.Committed, State: StateValue(d.State)}, nil
}

// msg is one message read from an upload stream, or why none came.
type msg struct {
	m   *livedumpv1.UploadDumpRequest
	err error
}

// reader reads the stream on its own goroutine, so that each wait for a
// message can have a deadline; it stops when ctx ends (the handler
// returning ends the stream, which ends its Recv).
func reader(ctx context.Context, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]) <-chan msg {
	ch := make(chan msg)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case ch <- msg{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// next waits at most d for the next message of an upload.
func (r *Receiver) next(ctx context.Context, in <-chan msg, d time.Duration, what string) (*livedumpv1.UploadDumpRequest, error) {
	t := r.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case m := <-in:
		return m.m, m.err
	case <-t.Chan():
		return nil, status.Errorf(codes.DeadlineExceeded, "%s: nothing received within %s; the upload is cut, resume it from the committed offset", what, d)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// Upload receives one upload stream. An agent has at most one upload
// stream open; its header must come within the header timeout and every
// later message within the chunk timeout. Only an upload with a valid
// header that fits the size ceiling and the quotas waits for one of the
// bounded upload slots.
func (r *Receiver) Upload(agentID string, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	r.mu.Lock()
	if r.agents[agentID] {
		r.mu.Unlock()
		return r.refuse("busy", agentID, "", status.Errorf(codes.ResourceExhausted,
			"agent %s already has a dump upload in progress; one at a time", agentID))
	}
	r.agents[agentID] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.agents, agentID)
		r.mu.Unlock()
	}()
	start := time.Now()
	defer func() { r.duration.Observe(time.Since(start).Seconds()) }()

	in := reader(ctx, stream)
	first, err := r.next(ctx, in, r.cfg.Bounds.HeaderTimeout, "header")
	if status.Code(err) == codes.DeadlineExceeded {
		return r.refuse("header_timeout", agentID, "", err)
	}
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return r.refuse("invalid", agentID, "", invalid("header", "the first message must be the header"))
	}
	d := h.GetDump()
	if err := checkDump(d); err != nil {
		return r.refuse("invalid", agentID, d.GetId(), err)
	}
	if ids.SHA256(d.GetSha256()) != nil || d.GetSize() <= 0 {
		return r.refuse("invalid", agentID, d.GetId(), invalid("dump", "an upload needs the dump's size and sha256"))
	}
	if h.GetCompression() != "zstd" {
		return r.refuse("invalid", agentID, d.GetId(), invalid("header.compression", "%q: want zstd", clip(h.GetCompression())))
	}
	// A dump verified before is confirmed whatever its size; any other
	// must fit its machine, checked before anything of it is recorded.
	if old, err := r.cfg.Store.GetDump(ctx, d.GetId()); err != nil || old.State != StateUploaded {
		if err := r.checkSize(ctx, agentID, d); err != nil {
			return err
		}
	}
	if _, err := r.report(ctx, agentID, d); err != nil {
		return err
	}
	rec, err := r.cfg.Store.GetDump(ctx, d.GetId())
	if err != nil {
		return err
	}
	now := func() time.Time { return r.cfg.Clock.Now().UTC() }
	if rec.State == StateUploaded {
		// Received and verified before (the agent missed the answer).
		r.results.WithLabelValues("duplicate").Inc()
		return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Committed: rec.Size, Detail: "already uploaded and verified"})
	}
	if ok, why, err := r.admit(ctx, rec); err != nil {
		return err
	} else if !ok {
		if err := r.cfg.Store.SetDumpProgress(ctx, rec.ID, 0, 0, StateHashOnly, why, now()); err != nil {
			return err
		}
		r.results.WithLabelValues("hash_only").Inc()
		return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, Detail: why + "; kept on the agent"})
	}
	if h.GetOffset() != rec.Committed {
		return status.Errorf(codes.FailedPrecondition, "offset %d: the controller has %d bytes committed; resume from there", h.GetOffset(), rec.Committed)
	}
	release, err := r.reserve(ctx, rec)
	if err != nil {
		return err
	}
	defer release()
	// A bounded number of uploads write at once; the others wait here, which
	// the agent sees as a slow stream, not an error.
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	up, err := r.cfg.Blobs.Upload(ctx, rec.ID, rec.SHA256, rec.Size, rec.Committed)
	if err != nil {
		r.results.WithLabelValues("failed").Inc()
		return blobErr("resume the upload", err)
	}
	defer up.Close()
	if up.Offset() != rec.Committed {
		// The partial upload is out of this controller's reach (on
		// another replica's disk, or lost): the agent starts again.
		if err := r.cfg.Store.SetDumpProgress(ctx, rec.ID, up.Offset(), 0, StateUploading, "partial upload not available on this controller", now()); err != nil {
			return err
		}
		r.cfg.Logger.Warn("partial dump upload not available, restarting it", "dump_id", rec.ID, "committed", rec.Committed)
		return status.Errorf(codes.FailedPrecondition, "offset %d: the partial upload is not available on this controller; resume from %d", rec.Committed, up.Offset())
	}
	if rec.Committed > 0 {
		r.resumes.Inc()
	}
	err = r.receive(ctx, agentID, in, stream, rec, up)
	switch status.Code(err) {
	case codes.OK, codes.Canceled, codes.DataLoss: // DataLoss is counted as corrupt
	default:
		r.results.WithLabelValues("failed").Inc()
	}
	return err
}

// reserve checks that the rest of the dump fits the agent's and the total
// byte quotas, counting what the store holds and the uploads in progress
// here, and reserves it until release. (Replicas reserve each on their
// own: together they may pass a quota by what their uploads in progress
// still have to send.)
func (r *Receiver) reserve(ctx context.Context, rec store.Dump) (release func(), err error) {
	agentHeld, err := r.cfg.Store.DumpBytes(ctx, rec.AgentID)
	if err != nil {
		return nil, err
	}
	totalHeld, err := r.cfg.Store.DumpBytes(ctx, "")
	if err != nil {
		return nil, err
	}
	r.stored.Set(float64(totalHeld))
	need := rec.Size - rec.Committed
	b := r.cfg.Bounds
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.active {
		pending := a.size - a.committed
		totalHeld += pending
		if a.agentID == rec.AgentID {
			agentHeld += pending
		}
	}
	switch {
	case b.QuotaPerAgent > 0 && agentHeld+need > b.QuotaPerAgent:
		return nil, r.refuse("quota_agent", rec.AgentID, rec.ID, status.Errorf(codes.ResourceExhausted,
			"dump.size: %d more bytes would pass the agent's dump quota (%d of %d bytes held); keep the dump and retry once dumps are removed",
			need, agentHeld, b.QuotaPerAgent))
	case b.QuotaTotal > 0 && totalHeld+need > b.QuotaTotal:
		return nil, r.refuse("quota_total", rec.AgentID, rec.ID, status.Errorf(codes.ResourceExhausted,
			"dump.size: %d more bytes would pass the controller's total dump quota (%d of %d bytes held); keep the dump and retry once dumps are removed",
			need, totalHeld, b.QuotaTotal))
	}
	a := &active{agentID: rec.AgentID, size: rec.Size, committed: rec.Committed}
	r.active[rec.ID] = a
	return func() {
		r.mu.Lock()
		if r.active[rec.ID] == a {
			delete(r.active, rec.ID)
		}
		r.mu.Unlock()
	}, nil
}

// uploading reports whether dump id is being uploaded here.
func (r *Receiver) uploading(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active[id] != nil
}

// Uploading reports whether dump id is being uploaded to this replica.
func (r *Receiver) Uploading(id string) bool { return r.uploading(id) }

// Reading reports whether a download of dump id is open on this replica.
func (r *Receiver) Reading(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readers[id] > 0
}

// Run removes partial uploads that made no progress for the partial
// upload TTL, and renews the read marks of the downloads open here, until
// ctx ends.
func (r *Receiver) Run(ctx context.Context) error {
	every := min(max(r.cfg.Bounds.PartialTTL/4, 100*time.Millisecond), 10*time.Minute)
	t := r.cfg.Clock.NewTicker(every)
	defer t.Stop()
	renew := r.cfg.Clock.NewTicker(ReadLease / 4)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
			r.Sweep(ctx)
		case <-renew.Chan():
			r.RenewReads(ctx)
		}
	}
}

// RenewReads moves the store's read mark of every dump with a download
// open here to ReadLease from now.
func (r *Receiver) RenewReads(ctx context.Context) {
	r.mu.Lock()
	ids := make([]string, 0, len(r.readers))
	for id := range r.readers {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	until := r.cfg.Clock.Now().UTC().Add(ReadLease)
	for _, id := range ids {
		if err := r.cfg.Store.MarkDumpRead(ctx, id, until); err != nil {
			r.cfg.Logger.Warn("renew dump read mark", "dump_id", id, "err", err)
		}
	}
}

// startRead counts a download of dump id open here and marks the dump read
// in the store; release undoes the count.
func (r *Receiver) startRead(ctx context.Context, id string) (release func(), err error) {
	r.mu.Lock()
	r.readers[id]++
	r.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			r.mu.Lock()
			if r.readers[id]--; r.readers[id] <= 0 {
				delete(r.readers, id)
			}
			r.mu.Unlock()
		})
	}
	if err := r.cfg.Store.MarkDumpRead(ctx, id, r.cfg.Clock.Now().UTC().Add(ReadLease)); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// reading is an open download: Close releases its count.
type reading struct {
	blobstore.Reader
	release func()
}

func (f *reading) Close() error {
	err := f.Reader.Close()
	f.release()
	return err
}

// Sweep removes the partial uploads that made no progress for the partial
// upload TTL, except uploads in progress here: their content in the blob
// store, and their committed offset in the store (the dump is marked
// failed; the agent starts it again from 0 if it comes back). It returns
// how many it removed.
func (r *Receiver) Sweep(ctx context.Context) int {
	now := r.cfg.Clock.Now().UTC()
	before := now.Add(-r.cfg.Bounds.PartialTTL)
	detail := fmt.Sprintf("partial upload removed after %s without progress", r.cfg.Bounds.PartialTTL)
	n := 0
	stale, err := r.cfg.Store.StaleDumpUploads(ctx, before, sweepBatch)
	if err != nil {
		r.cfg.Logger.Warn("list stale dump uploads", "err", err)
	}
	for _, d := range stale {
		if r.uploading(d.ID) {
			continue
		}
		ok, err := r.cfg.Store.ExpireDumpUpload(ctx, d.ID, before, detail, now)
		if err != nil {
			r.cfg.Logger.Warn("expire dump upload", "dump_id", d.ID, "err", err)
			continue
		}
		if !ok {
			continue // it moved meanwhile
		}
		if err := r.cfg.Blobs.DiscardUpload(ctx, d.ID); err != nil {
			// Harmless: an upload of the dump from 0 replaces it.
			r.cfg.Logger.Warn("discard partial dump upload", "dump_id", d.ID, "err", err)
		}
		n++
		r.expired.Inc()
		r.cfg.Logger.Info("partial dump upload expired", "dump_id", d.ID, "agent_id", d.AgentID, "committed", d.Committed, "ttl", r.cfg.Bounds.PartialTTL)
	}
	// Partial uploads the store does not know of, or no longer counts.
	ids, err := r.cfg.Blobs.ExpireUploads(ctx, before, r.uploading)
	if err != nil {
		r.cfg.Logger.Warn("expire partial uploads in the blob store", "err", err)
	}
	if len(ids) > 0 {
		r.expired.Add(float64(len(ids)))
		r.cfg.Logger.Info("orphaned partial uploads removed", "count", len(ids))
	}
	if held, err := r.cfg.Store.DumpBytes(ctx, ""); err == nil {
		r.stored.Set(float64(held))
	}
	return n
}

// admit reports whether the dump may upload under its capture's limits, and
// if not, why. Admission is one transaction in the store, so replicas
// admitting at once never exceed a limit together, and a dump once admitted
// stays admitted when its upload resumes.
func (r *Receiver) admit(ctx context.Context, d store.Dump) (bool, string, error) {
	if r.cfg.Limits == nil || d.CaptureID == "" {
		return true, "", nil
	}
	l, err := r.cfg.Limits(ctx, d.CaptureID)
	if err != nil {
		return false, "", err
	}
	if l.MaxDumps <= 0 && l.PerSignature <= 0 {
		return true, "", nil
	}
	ok, err := r.cfg.Store.AdmitDump(ctx, d.ID, l.MaxDumps, l.PerSignature)
	if err != nil || ok {
		return ok, "", err
	}
	var why []string
	if l.MaxDumps > 0 {
		why = append(why, fmt.Sprintf("max-dumps %d", l.MaxDumps))
	}
	if l.PerSignature > 0 {
		why = append(why, fmt.Sprintf("dumps-per-signature %d", l.PerSignature))
	}
	return false, "capture limit reached (" + strings.Join(why, ", ") + ")", nil
}

// blobErr turns a blob store error into a status for the agent, which
// keeps the dump and retries; a full disk and an unreachable store say so.
func blobErr(op string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return status.Errorf(codes.ResourceExhausted, "controller disk full: %v; keep the dump and retry later", err)
	case errors.Is(err, blobstore.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "%s: %v; keep the dump and retry later", op, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", op, err)
}

// wireMark is how many compressed bytes had arrived when raw bytes had
// been written, at a chunk boundary.
type wireMark struct{ raw, compressed int64 }

// compressedAt estimates the compressed bytes behind the first durable raw
// bytes, exactly at a chunk boundary and proportionally inside a chunk,
// and drops the marks before it. marks[0] is at or before durable.
func compressedAt(marks []wireMark, durable int64) (int64, []wireMark) {
	i := 0
	for i+1 < len(marks) && marks[i+1].raw <= durable {
		i++
	}
	marks = marks[i:]
	m := marks[0]
	if m.raw == durable || len(marks) == 1 {
		return m.compressed, marks
	}
	next := marks[1]
	return m.compressed + (durable-m.raw)*(next.compressed-m.compressed)/(next.raw-m.raw), marks
}

func (r *Receiver) receive(ctx context.Context, agentID string, in <-chan msg, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse], rec store.Dump, up blobstore.Upload) error {
	written, compressed, lastSync := rec.Committed, rec.Compressed, rec.Committed
	lastCommit := r.cfg.Clock.Now()
	var marksMu sync.Mutex // marks: appended here, read by a commit in the background
	marks := []wireMark{{written, compressed}}
	// commit records what the store says is durable, which may trail what
	// was written (an S3 upload is durable a whole part at a time).
	// Anything past the recorded offset is never trusted: an upload
	// resumes there.
	commit := func(state string) error {
		ctx := context.WithoutCancel(ctx)
		durable, err := up.Sync(ctx)
		if err != nil {
			return blobErr("sync dump", err)
		}
		var wire int64
		marksMu.Lock()
		wire, marks = compressedAt(marks, durable)
		marksMu.Unlock()
		if err := r.cfg.Store.SetDumpProgress(ctx, rec.ID, durable, wire, state, "", r.cfg.Clock.Now().UTC()); err != nil {
			return err
		}
		r.mu.Lock()
		if a := r.active[rec.ID]; a != nil {
			a.committed = durable
		}
		r.mu.Unlock()
		return nil
	}
	// Commits while chunks arrive run in the background, one at a time,
	// so that the fsync and the store's transaction overlap the next
	// writes instead of stalling them; the last commit, and one after a
	// failure, wait for it and run here.
	var pending chan struct{} // closed when the background commit is done
	var pendingErr error
	settle := func() error {
		if pending != nil {
			<-pending
			pending = nil
		}
		return pendingErr
	}
	defer settle()
	background := func() {
		done := make(chan struct{})
		pending = done
		go func() {
			defer close(done)
			pendingErr = commit(StateUploading)
		}()
	}
	// finalCommit waits for a background commit and commits again.
	finalCommit := func() error {
		if err := settle(); err != nil {
			return err
		}
		return commit(StateUploading)
	}
	// nextChunk waits for the next message up to the chunk timeout; if the
	// stream pauses with commitMin bytes or more not committed, it commits
	// them after commitInterval meanwhile.
	nextChunk := func() (*livedumpv1.UploadDumpRequest, error) {
		timeout := r.cfg.Bounds.ChunkTimeout
		deadline := r.cfg.Clock.Now().Add(timeout)
		for {
			wait := deadline.Sub(r.cfg.Clock.Now())
			idle := written-lastSync >= commitMin
			if idle {
				wait = min(wait, commitInterval)
			}
			m, err := r.next(ctx, in, max(wait, 0), "chunk")
			if status.Code(err) != codes.DeadlineExceeded {
				return m, err
			}
			if !idle || !r.cfg.Clock.Now().Before(deadline) {
				return nil, status.Errorf(codes.DeadlineExceeded, "chunk: nothing received within %s; the upload is cut, resume it from the committed offset", timeout)
			}
			if err := settle(); err != nil {
				return nil, err
			}
			lastSync, lastCommit = written, r.cfg.Clock.Now()
			background()
		}
	}
	buf := make([]byte, 0, MaxChunkRaw)
	for {
		m, err := nextChunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			// Keep what is durable; the agent resumes from it.
			_ = finalCommit()
			if status.Code(err) == codes.DeadlineExceeded {
				return r.refuse("chunk_timeout", agentID, rec.ID, err)
			}
			return err
		}
		chunk := m.GetChunk()
		if m.GetHeader() != nil || len(chunk) == 0 {
			return r.refuse("invalid", agentID, rec.ID, invalid("chunk", "expected a non-empty zstd chunk"))
		}
		// The decoder allocates at most MaxChunkRaw and stops there, and
		// nothing decoded is written unless it fits the announced size.
		raw, err := r.dec.DecodeAll(chunk, buf[:0])
		if err != nil {
			return r.refuse("invalid", agentID, rec.ID, invalid("chunk", "not a zstd frame of at most %d bytes: %v", MaxChunkRaw, err))
		}
		if written+int64(len(raw)) > rec.Size {
			_ = finalCommit()
			return r.refuse("past_size", agentID, rec.ID, invalid("chunk", "more data than the announced %d bytes", rec.Size))
		}
		if _, err := up.Write(raw); err != nil {
			_ = finalCommit()
			return blobErr("write dump", err)
		}
		written += int64(len(raw))
		compressed += int64(len(chunk))
		marksMu.Lock()
		marks = append(marks, wireMark{written, compressed})
		marksMu.Unlock()
		r.bytes.Add(float64(len(raw)))
		r.compressed.Add(float64(len(chunk)))
		if n := written - lastSync; n >= commitEvery || n >= commitMin && r.cfg.Clock.Since(lastCommit) >= commitInterval {
			if pending != nil {
				select {
				case <-pending:
					pending = nil
				default:
					continue // the last commit is still running: the next one after it
				}
			}
			if pendingErr != nil {
				return pendingErr
			}
			lastSync, lastCommit = written, r.cfg.Clock.Now()
			background()
		}
	}
	if written != rec.Size {
		_ = finalCommit()
		return invalid("dump.size", "stream ended at %d of %d bytes", written, rec.Size)
	}
	if err := finalCommit(); err != nil {
		return err
	}
	// All the content is here: publish it even if the agent goes away now.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	err := up.Finish(fctx)
	if errors.Is(err, blobstore.ErrHashMismatch) {
		// Everything was discarded: a resumed upload cannot fix bytes that
		// are wrong somewhere before the offset.
		r.results.WithLabelValues("corrupt").Inc()
		_ = r.cfg.Store.SetDumpProgress(fctx, rec.ID, 0, 0, StateUploading, "hash mismatch: upload discarded", r.cfg.Clock.Now().UTC())
		r.cfg.Logger.Warn("dump hash mismatch, upload discarded", "dump_id", rec.ID, "error", err)
		return status.Errorf(codes.DataLoss, "%v: upload discarded, send it again from 0", err)
	}
	if err != nil {
		return blobErr("store dump", err)
	}
	if err := r.cfg.Store.SetDumpProgress(fctx, rec.ID, written, compressed, StateUploaded, "", r.cfg.Clock.Now().UTC()); err != nil {
		return err
	}
	r.results.WithLabelValues("uploaded").Inc()
	r.cfg.Logger.Info("dump uploaded and verified", "dump_id", rec.ID, "sha256", rec.SHA256, "bytes", written, "compressed", compressed)
	return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Committed: written})
}

// Proto renders a stored dump.
func Proto(d store.Dump, hostname string) *livedumpv1.Dump {
	return &livedumpv1.Dump{
		Id: d.ID, AgentId: d.AgentID, Hostname: hostname, CaptureId: d.CaptureID, EventId: d.EventID, FileName: d.FileName,
		Size: d.Size, Sha256: d.SHA256, State: StateValue(d.State), Detail: d.Detail, Written: timestamppb.New(d.Written),
		Updated: timestamppb.New(d.Updated), Uploaded: d.Committed, Compressed: d.Compressed, Signature: d.Signature,
		DumpType: d.DumpType, BugCheckCode: d.BugCheckCode, OsBuild: d.OSBuild, DeclaredSize: d.DeclaredSize,
	}
}

// Open opens an uploaded dump's content. Until the reader is closed the
// dump counts as being downloaded: it is marked read in the store (renewed
// by Run) so that no replica's retention sweep or delete removes it. The
// mark comes before the content is opened, so a dump deleted first is not
// found, and one marked first is not deleted.
func (r *Receiver) Open(ctx context.Context, id string) (store.Dump, blobstore.Reader, error) {
	d, err := r.cfg.Store.GetDump(ctx, id)
	if err != nil {
		return store.Dump{}, nil, err
	}
	if d.State != StateUploaded {
		return d, nil, status.Errorf(codes.FailedPrecondition, "dump %s is %s, not uploaded (hash-only dumps: dumps pull %s)", id, d.State, id)
	}
	release, err := r.startRead(ctx, id)
	if err != nil {
		return d, nil, err
	}
	f, err := r.cfg.Blobs.Open(ctx, d.SHA256)
	if err != nil {
		release()
		return d, nil, fmt.Errorf("open dump %s: %w", id, err)
	}
	return d, &reading{Reader: f, release: release}, nil
}
