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
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of an upload.
const (
	MaxDumpSize  = 1 << 40 // 1 TiB
	MaxChunkRaw  = 8 << 20 // raw bytes one zstd chunk may expand to
	commitEvery  = 4 << 20 // sync and record the offset this often
	defaultSlots = 4
	// finishTimeout bounds publishing a complete upload, which goes on
	// if the agent disconnects after its last chunk.
	finishTimeout = 15 * time.Minute
)

// Stored states.
const (
	StateWriting   = "writing"
	StateHashed    = "hashed"
	StateHashOnly  = "hash_only"
	StateUploading = "uploading"
	StateUploaded  = "uploaded"
	StateFailed    = "failed"
	StateAborted   = "aborted"
)

var stateNames = map[livedumpv1.DumpState]string{
	livedumpv1.DumpState_DUMP_STATE_WRITING: StateWriting, livedumpv1.DumpState_DUMP_STATE_HASHED: StateHashed,
	livedumpv1.DumpState_DUMP_STATE_HASH_ONLY: StateHashOnly, livedumpv1.DumpState_DUMP_STATE_UPLOADING: StateUploading,
	livedumpv1.DumpState_DUMP_STATE_UPLOADED: StateUploaded, livedumpv1.DumpState_DUMP_STATE_FAILED: StateFailed,
	livedumpv1.DumpState_DUMP_STATE_ABORTED: StateAborted,
}

// StateValue maps a stored state to the wire enum.
func StateValue(s string) livedumpv1.DumpState {
	for k, v := range stateNames {
		if v == s {
			return k
		}
	}
	return livedumpv1.DumpState_DUMP_STATE_UNSPECIFIED
}

var (
	idRe  = regexp.MustCompile(`^[0-9a-f]{8,64}$`)
	shaRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// Windows names live dumps <Component>-YYYYMMDD-HHMM[-N].dmp.
	fileRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}\.(?i:dmp)$`)
)

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
	Limits   func(ctx context.Context, captureID string) (Limits, error)
	Logger   *slog.Logger
	Clock    clockwork.Clock
	Registry prometheus.Registerer
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

	results    *prometheus.CounterVec
	bytes      prometheus.Counter
	compressed prometheus.Counter
	duration   prometheus.Histogram
	resumes    prometheus.Counter
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
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxChunkRaw), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, slots: make(chan struct{}, cfg.Slots), dec: dec,
		results:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_dumps_total", Help: "Dump uploads finished, by result (uploaded, duplicate, hash_only, corrupt, failed)."}, []string{"result"}),
		bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_bytes_received_total", Help: "Raw dump bytes received and written."}),
		compressed: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_compressed_bytes_received_total", Help: "Compressed dump bytes received on the wire."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "livedump_controller_dump_upload_seconds", Help: "Duration of one upload stream.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 18)}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_dump_upload_resumes_total", Help: "Uploads that resumed from a committed offset above 0."}),
	}
	for _, res := range []string{"uploaded", "duplicate", "hash_only", "corrupt", "failed"} {
		r.results.WithLabelValues(res)
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(r.results, r.bytes, r.compressed, r.duration, r.resumes)
	}
	return r, nil
}

func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, field+": "+format, args...)
}

func checkDump(d *livedumpv1.Dump) error {
	switch {
	case d == nil:
		return invalid("dump", "missing")
	case !idRe.MatchString(d.GetId()):
		return invalid("dump.id", "%q: want 8-64 lower-case hex digits", d.GetId())
	case d.GetFileName() != "" && !fileRe.MatchString(d.GetFileName()):
		return invalid("dump.file_name", "%q is not a dump file name", d.GetFileName())
	case d.GetSha256() != "" && !shaRe.MatchString(d.GetSha256()):
		return invalid("dump.sha256", "%q: want 64 lower-case hex digits", d.GetSha256())
	case d.GetSize() < 0 || d.GetSize() > MaxDumpSize:
		return invalid("dump.size", "%d out of range", d.GetSize())
	case len(d.GetCaptureId()) > 64 || len(d.GetEventId()) > 64 || len(d.GetDetail()) > 4096:
		return invalid("dump", "oversized field")
	}
	return nil
}

// Report records what an agent says about a dump. Progress the upload owns
// (and an uploaded dump's state) is never rolled back by a late report.
func (r *Receiver) Report(ctx context.Context, agentID string, d *livedumpv1.Dump) error {
	if err := checkDump(d); err != nil {
		return err
	}
	old, err := r.cfg.Store.GetDump(ctx, d.GetId())
	switch {
	case err == nil && old.AgentID != agentID:
		return status.Errorf(codes.PermissionDenied, "dump %s belongs to another agent", d.GetId())
	case err == nil && old.State == StateUploaded:
		return nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	sig := ""
	if d.GetEventId() != "" {
		sig, _ = r.cfg.Store.EventSignature(ctx, d.GetEventId())
	}
	state := stateNames[d.GetState()]
	if state == "" {
		state = StateWriting
	}
	return r.cfg.Store.PutDump(ctx, store.Dump{
		ID: d.GetId(), AgentID: agentID, CaptureID: d.GetCaptureId(), EventID: d.GetEventId(), FileName: d.GetFileName(),
		Size: d.GetSize(), SHA256: d.GetSha256(), State: state, Detail: d.GetDetail(), Written: d.GetWritten().AsTime(),
		Updated: r.cfg.Clock.Now().UTC(), Signature: sig,
	})
}

// Offset returns where an upload resumes.
func (r *Receiver) Offset(ctx context.Context, agentID, id string) (*livedumpv1.DumpOffsetResponse, error) {
	if !idRe.MatchString(id) {
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

// Upload receives one upload stream.
func (r *Receiver) Upload(agentID string, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]) error {
	ctx := stream.Context()
	// A bounded number of uploads write at once; the others wait here, which
	// the agent sees as a slow stream, not an error.
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	start := time.Now()
	defer func() { r.duration.Observe(time.Since(start).Seconds()) }()

	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be the header")
	}
	d := h.GetDump()
	if err := checkDump(d); err != nil {
		return err
	}
	if !shaRe.MatchString(d.GetSha256()) || d.GetSize() <= 0 {
		return invalid("dump", "an upload needs the dump's size and sha256")
	}
	if h.GetCompression() != "zstd" {
		return invalid("header.compression", "%q: want zstd", h.GetCompression())
	}
	if err := r.Report(ctx, agentID, d); err != nil {
		return err
	}
	rec, err := r.cfg.Store.GetDump(ctx, d.GetId())
	if err != nil {
		return err
	}
	now := func() time.Time { return r.cfg.Clock.Now().UTC() }
	dup := rec.State == StateUploaded
	if !dup && rec.Committed == 0 && h.GetOffset() == 0 {
		if dup, err = r.cfg.Blobs.Has(ctx, d.GetSha256()); err != nil {
			return blobErr("look up the dump's content", err)
		}
	}
	if dup {
		// Identical content is stored once: a second copy is verified by
		// its hash alone.
		if err := r.cfg.Store.SetDumpProgress(ctx, rec.ID, rec.Size, rec.Compressed, StateUploaded, "identical content already stored", now()); err != nil {
			return err
		}
		r.results.WithLabelValues("duplicate").Inc()
		return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Committed: rec.Size, Detail: "identical content already stored"})
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
	err = r.receive(ctx, stream, rec, up)
	switch status.Code(err) {
	case codes.OK, codes.Canceled, codes.DataLoss: // DataLoss is counted as corrupt
	default:
		r.results.WithLabelValues("failed").Inc()
	}
	return err
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

func (r *Receiver) receive(ctx context.Context, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse], rec store.Dump, up blobstore.Upload) error {
	written, compressed, lastSync := rec.Committed, rec.Compressed, rec.Committed
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
		lastSync = written
		var wire int64
		wire, marks = compressedAt(marks, durable)
		return r.cfg.Store.SetDumpProgress(ctx, rec.ID, durable, wire, state, "", r.cfg.Clock.Now().UTC())
	}
	buf := make([]byte, 0, MaxChunkRaw)
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			// Keep what is durable; the agent resumes from it.
			_ = commit(StateUploading)
			return err
		}
		chunk := m.GetChunk()
		if m.GetHeader() != nil || len(chunk) == 0 {
			return invalid("chunk", "expected a non-empty zstd chunk")
		}
		raw, err := r.dec.DecodeAll(chunk, buf[:0])
		if err != nil {
			return invalid("chunk", "not a zstd frame of at most %d bytes: %v", MaxChunkRaw, err)
		}
		if written+int64(len(raw)) > rec.Size {
			return invalid("chunk", "more data than the announced %d bytes", rec.Size)
		}
		if _, err := up.Write(raw); err != nil {
			_ = commit(StateUploading)
			return blobErr("write dump", err)
		}
		written += int64(len(raw))
		compressed += int64(len(chunk))
		marks = append(marks, wireMark{written, compressed})
		r.bytes.Add(float64(len(raw)))
		r.compressed.Add(float64(len(chunk)))
		if written-lastSync >= commitEvery {
			if err := commit(StateUploading); err != nil {
				return err
			}
		}
	}
	if written != rec.Size {
		_ = commit(StateUploading)
		return invalid("dump.size", "stream ended at %d of %d bytes", written, rec.Size)
	}
	if err := commit(StateUploading); err != nil {
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
	}
}

// Open opens an uploaded dump's content.
func (r *Receiver) Open(ctx context.Context, id string) (store.Dump, blobstore.Reader, error) {
	d, err := r.cfg.Store.GetDump(ctx, id)
	if err != nil {
		return store.Dump{}, nil, err
	}
	if d.State != StateUploaded {
		return d, nil, status.Errorf(codes.FailedPrecondition, "dump %s is %s, not uploaded (hash-only dumps: dumps pull %s)", id, d.State, id)
	}
	f, err := r.cfg.Blobs.Open(ctx, d.SHA256)
	if err != nil {
		return d, nil, fmt.Errorf("open dump %s: %w", id, err)
	}
	return d, f, nil
}
