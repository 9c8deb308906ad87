// Package dumps receives live kernel dumps from agents: resumable uploads
// of zstd chunks, committed durably at known offsets, verified against the
// SHA-256 of the raw content before they enter the content-addressed store.
package dumps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
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
	commitEvery  = 4 << 20 // fsync and record the offset this often
	defaultSlots = 4
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

// Config configures a Receiver.
type Config struct {
	Store    store.Store
	Blobs    *blobstore.Store
	Dir      string // partial uploads
	Slots    int    // concurrent uploads; more wait (backpressure, not errors)
	Quota    func(ctx context.Context, captureID string) (int, error)
	Logger   *slog.Logger
	Clock    clockwork.Clock
	Registry prometheus.Registerer
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
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
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
	if rec.State == StateUploaded || r.cfg.Blobs.Has(d.GetSha256()) && rec.Committed == 0 && h.GetOffset() == 0 {
		// Identical content is stored once: a second copy is verified by
		// its hash alone.
		if err := r.cfg.Store.SetDumpProgress(ctx, rec.ID, rec.Size, rec.Compressed, StateUploaded, "identical content already stored", now()); err != nil {
			return err
		}
		r.results.WithLabelValues("duplicate").Inc()
		return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Committed: rec.Size, Detail: "identical content already stored"})
	}
	if quota, err := r.quota(ctx, rec); err != nil {
		return err
	} else if quota {
		if err := r.cfg.Store.SetDumpProgress(ctx, rec.ID, 0, 0, StateHashOnly, "dumps-per-signature quota reached", now()); err != nil {
			return err
		}
		r.results.WithLabelValues("hash_only").Inc()
		return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, Detail: "dumps-per-signature quota reached; kept on the agent"})
	}
	if h.GetOffset() != rec.Committed {
		return status.Errorf(codes.FailedPrecondition, "offset %d: the controller has %d bytes committed; resume from there", h.GetOffset(), rec.Committed)
	}
	if rec.Committed > 0 {
		r.resumes.Inc()
	}
	err = r.receive(ctx, stream, rec)
	switch status.Code(err) {
	case codes.OK, codes.Canceled, codes.DataLoss: // DataLoss is counted as corrupt
	default:
		r.results.WithLabelValues("failed").Inc()
	}
	return err
}

// quota reports whether the capture's per-signature upload quota is used up.
func (r *Receiver) quota(ctx context.Context, d store.Dump) (bool, error) {
	if r.cfg.Quota == nil || d.Pulled || d.CaptureID == "" || d.Signature == "" {
		return false, nil
	}
	n, err := r.cfg.Quota(ctx, d.CaptureID)
	if err != nil || n <= 0 {
		return false, err
	}
	have, err := r.cfg.Store.CountDumps(ctx, d.CaptureID, d.Signature, StateUploaded)
	return have >= n, err
}

func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return status.Errorf(codes.ResourceExhausted, "controller disk full: %v; keep the dump and retry later", err)
	}
	return status.Errorf(codes.Internal, "write dump: %v", err)
}

func (r *Receiver) receive(ctx context.Context, stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse], rec store.Dump) error {
	path := filepath.Join(r.cfg.Dir, rec.ID+".part")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return diskErr(err)
	}
	defer f.Close()
	// Anything past the committed offset was not synced when it was
	// recorded, so it is not trusted.
	if err := f.Truncate(rec.Committed); err != nil {
		return diskErr(err)
	}
	if _, err := f.Seek(rec.Committed, io.SeekStart); err != nil {
		return diskErr(err)
	}
	written, compressed, lastCommit := rec.Committed, rec.Compressed, rec.Committed
	commit := func(state string) error {
		if err := f.Sync(); err != nil {
			return diskErr(err)
		}
		lastCommit = written
		return r.cfg.Store.SetDumpProgress(context.WithoutCancel(ctx), rec.ID, written, compressed, state, "", r.cfg.Clock.Now().UTC())
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
		if _, err := f.Write(raw); err != nil {
			_ = commit(StateUploading)
			return diskErr(err)
		}
		written += int64(len(raw))
		compressed += int64(len(chunk))
		r.bytes.Add(float64(len(raw)))
		r.compressed.Add(float64(len(chunk)))
		if written-lastCommit >= commitEvery {
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
	sum, err := hashFile(path)
	if err != nil {
		return diskErr(err)
	}
	if sum != rec.SHA256 {
		// Discard everything: a resumed upload cannot fix bytes that are
		// wrong somewhere before the offset.
		f.Close()
		os.Remove(path)
		r.results.WithLabelValues("corrupt").Inc()
		_ = r.cfg.Store.SetDumpProgress(context.WithoutCancel(ctx), rec.ID, 0, 0, StateUploading, "hash mismatch: upload discarded", r.cfg.Clock.Now().UTC())
		r.cfg.Logger.Warn("dump hash mismatch, upload discarded", "dump_id", rec.ID, "got", sum, "want", rec.SHA256)
		return status.Errorf(codes.DataLoss, "content hashes to %s, not %s: upload discarded, send it again from 0", sum, rec.SHA256)
	}
	f.Close()
	if err := r.cfg.Blobs.Adopt(path, sum); err != nil {
		return diskErr(err)
	}
	if err := r.cfg.Store.SetDumpProgress(context.WithoutCancel(ctx), rec.ID, written, compressed, StateUploaded, "", r.cfg.Clock.Now().UTC()); err != nil {
		return err
	}
	r.results.WithLabelValues("uploaded").Inc()
	r.cfg.Logger.Info("dump uploaded and verified", "dump_id", rec.ID, "sha256", sum, "bytes", written, "compressed", compressed)
	return stream.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Committed: written})
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
func (r *Receiver) Open(ctx context.Context, id string) (store.Dump, *os.File, error) {
	d, err := r.cfg.Store.GetDump(ctx, id)
	if err != nil {
		return store.Dump{}, nil, err
	}
	if d.State != StateUploaded {
		return d, nil, status.Errorf(codes.FailedPrecondition, "dump %s is %s, not uploaded (hash-only dumps: dumps pull %s)", id, d.State, id)
	}
	f, err := r.cfg.Blobs.Open(d.SHA256)
	if err != nil {
		return d, nil, fmt.Errorf("open dump %s: %w", id, err)
	}
	return d, f, nil
}
