package dumps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/internal/backoff"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Compression is the UploadDumpHeader.compression this package sends.
const Compression = "zstd"

const (
	// progressBytes and progressEvery space out UPLOADING reports.
	progressBytes = 64 << 20
	progressEvery = 5 * time.Second
	// quickRetries is how many offset or hash mismatches in a row are
	// retried at once before the backoff applies.
	quickRetries = 2
	// maxMismatches is how many times the controller may reject a dump's
	// hash before the agent gives up on it.
	maxMismatches = 3
)

// uploadErr classifies why an upload attempt stopped.
type uploadErr struct {
	kind   errKind
	err    error
	detail string // for permanent errors: what the dump's detail says
}

type errKind int

const (
	// errRetry: transport or server trouble; retry with backoff.
	errRetry errKind = iota
	// errResync: the controller's offset differs from ours or it rejected
	// the hash; ask for the offset again at once.
	errResync
	// errPermanent: this dump cannot be uploaded; it is marked FAILED.
	errPermanent
)

func (e *uploadErr) Error() string { return e.err.Error() }
func (e *uploadErr) Unwrap() error { return e.err }

func retry(err error) error { return &uploadErr{kind: errRetry, err: err} }

func permanent(detail string, err error) error {
	return &uploadErr{kind: errPermanent, err: err, detail: detail}
}

// classify sorts a gRPC error.
func classify(err error) error {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.DataLoss:
		return &uploadErr{kind: errResync, err: err}
	case codes.InvalidArgument, codes.OutOfRange:
		return permanent("the controller refused the dump: "+status.Convert(err).Message(), err)
	default:
		// Unavailable, DeadlineExceeded, ResourceExhausted, Internal,
		// Unauthenticated (a certificate being renewed)... all pass.
		return retry(err)
	}
}

// uploadLoop uploads dumps one at a time until ctx ends.
func (m *Manager) uploadLoop(ctx context.Context) {
	retry := backoff.New(backoff.Policy{Min: m.backoffMin, Max: m.backoffMax, Jitter: true})
	quick := 0
	for {
		e := m.nextToUpload()
		if e == nil {
			retry.Reset()
			quick = 0
			select {
			case <-ctx.Done():
				return
			case <-m.uploadKick:
				continue
			}
		}
		err := m.upload(ctx, e)
		if ctx.Err() != nil {
			return
		}
		var ue *uploadErr
		switch {
		case err == nil:
			retry.Reset()
			quick = 0
			continue
		case errors.As(err, &ue) && ue.kind == errPermanent:
			m.fail(e, ue.detail)
			retry.Reset()
			quick = 0
			continue
		case errors.As(err, &ue) && ue.kind == errResync:
			if quick < quickRetries {
				quick++
				m.log.Info("dump upload out of step with the controller; resyncing", "dump_id", e.ID, "err", err)
				continue
			}
		}
		quick = 0
		d := retry.NextBackOff()
		m.log.Warn("dump upload failed; retrying", "dump_id", e.ID, "err", err, "retry_in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-m.clock.After(d):
		case <-m.uploadKick:
		}
	}
}

// nextToUpload returns the dump to upload next: one already uploading (an
// interrupted upload), else the oldest hashed one. It marks it UPLOADING
// under the lock, so Expect cannot switch it to hash-only meanwhile.
func (m *Manager) nextToUpload() *entry {
	m.mu.Lock()
	var next *entry
	for _, e := range m.dumps {
		if e.State != stateHashed && e.State != stateUploading {
			continue
		}
		if next == nil || uploadsBefore(e, next) {
			next = e
		}
	}
	var out []*livedumpv1.Dump
	if next != nil && next.State == stateHashed {
		out = append(out, m.setState(next, stateUploading, ""))
	}
	m.mu.Unlock()
	m.report(out...)
	return next
}

// uploadsBefore orders the upload queue: an interrupted upload first, then
// the oldest dump.
func uploadsBefore(a, b *entry) bool {
	if (a.State == stateUploading) != (b.State == stateUploading) {
		return a.State == stateUploading
	}
	if !a.Written.Equal(b.Written) {
		return a.Written.Before(b.Written)
	}
	return a.Created.Before(b.Created)
}

// fail marks a dump FAILED.
func (m *Manager) fail(e *entry, detail string) {
	m.mu.Lock()
	d := m.setState(e, stateFailed, detail)
	m.mu.Unlock()
	m.log.Error("dump upload failed for good", "dump_id", e.ID, "detail", detail)
	m.report(d)
}

// upload runs one attempt: ask for the committed offset, send the rest.
func (m *Manager) upload(ctx context.Context, e *entry) error {
	m.mu.Lock()
	id, abs, size := e.ID, e.abs(), e.Size
	header := m.snapshot(e)
	m.mu.Unlock()

	client, err := m.cfg.Client()
	if err != nil {
		return retry(fmt.Errorf("no connection to the controller: %w", err))
	}
	committed := int64(0)
	off, err := client.DumpOffset(ctx, &livedumpv1.DumpOffsetRequest{DumpId: id})
	switch {
	case status.Code(err) == codes.NotFound:
		// The controller has not heard of the dump yet: start at 0.
	case err != nil:
		return classify(err)
	case off.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED:
		// Stored and verified before the agent learned of it (it stopped
		// between the last chunk and the answer).
		return m.uploaded(e, size)
	default:
		committed = off.GetCommitted()
	}
	if committed < 0 || committed > size {
		return permanent(fmt.Sprintf("the controller holds %d bytes of a %d-byte dump", committed, size),
			fmt.Errorf("committed offset %d out of range", committed))
	}

	f, err := os.Open(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return permanent("the file was deleted before it was uploaded", err)
	}
	if err != nil {
		return retry(err) // e.g. a sharing violation from a scanner
	}
	// Closed before the verdict: Windows cannot delete a file that is open.
	closeFile := sync.OnceFunc(func() { f.Close() })
	defer closeFile()
	if fi, err := f.Stat(); err != nil {
		return retry(err)
	} else if fi.Size() != size {
		return permanent(fmt.Sprintf("the file changed after it was hashed (%d bytes, now %d)", size, fi.Size()), errors.New("size changed"))
	}
	if _, err := f.Seek(committed, io.SeekStart); err != nil {
		return retry(err)
	}

	m.mu.Lock()
	if committed > 0 {
		m.met.resumes.Inc()
	}
	e.Uploaded = committed
	d := m.setState(e, stateUploading, "")
	m.mu.Unlock()
	m.report(d)
	m.log.Info("uploading dump", "dump_id", id, "size", size, "offset", committed)

	start := m.clock.Now()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.UploadDump(sctx)
	if err != nil {
		return classify(err)
	}
	header.State = livedumpv1.DumpState_DUMP_STATE_UPLOADING
	err = stream.Send(&livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Header{Header: &livedumpv1.UploadDumpHeader{
		Dump: header, Offset: committed, Compression: Compression,
	}}})
	sent, wire, levels, err := m.sendChunks(sctx, stream, f, e, committed, size, err)
	closeFile()
	if err != nil {
		return err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		if status.Code(err) == codes.DataLoss {
			return m.hashRejected(ctx, e, err)
		}
		return classify(err)
	}
	switch resp.GetState() {
	case livedumpv1.DumpState_DUMP_STATE_UPLOADED:
		if resp.GetCommitted() != size {
			return retry(fmt.Errorf("controller reports %d of %d bytes committed", resp.GetCommitted(), size))
		}
		m.met.seconds.Observe(m.clock.Since(start).Seconds())
		m.log.Info("dump uploaded", "dump_id", id, "bytes", sent, "compressed", wire, "chunks_by_level", levels, "took", m.clock.Since(start).Round(time.Millisecond))
		return m.uploaded(e, size)
	case livedumpv1.DumpState_DUMP_STATE_HASH_ONLY:
		m.mu.Lock()
		detail := resp.GetDetail()
		if detail == "" {
			detail = "kept on the agent by the controller's quota"
		}
		d := m.setState(e, stateHashOnly, detail)
		m.mu.Unlock()
		m.report(d)
		return nil
	case livedumpv1.DumpState_DUMP_STATE_FAILED:
		return permanent("the controller failed the upload: "+resp.GetDetail(), errors.New(resp.GetDetail()))
	default:
		return &uploadErr{kind: errResync, err: fmt.Errorf("controller answered %s at %d bytes", resp.GetState(), resp.GetCommitted())}
	}
}

// sendChunks streams [from, size) of f as zstd frames, after the header
// whose send error is hdrErr. It returns the raw and compressed byte counts
// and how many chunks were sent at each level. Consecutive chunks are compressed by several encoders side by side (see
// pipeline) and sent in order.
func (m *Manager) sendChunks(ctx context.Context, stream livedumpv1.AgentService_UploadDumpClient, f io.Reader, e *entry, from, size int64, hdrErr error) (sent, wire int64, levels string, err error) {
	if hdrErr != nil {
		if errors.Is(hdrErr, io.EOF) {
			return 0, 0, "", nil // the server answered early; CloseAndRecv has it
		}
		return 0, 0, "", classify(hdrErr)
	}
	p := m.startPipeline(ctx, f, from, size)
	defer p.stop()
	defer func() { levels = p.ad.summary() }()
	lastReport, lastBytes := m.clock.Now(), from
	for pos := from; pos < size; {
		c, ok := p.next()
		if !ok {
			return sent, wire, "", retry(ctx.Err())
		}
		if c.err != nil {
			return sent, wire, "", c.err
		}
		n := c.n
		waited := time.Now()
		if err := m.limit.wait(ctx, n); err != nil {
			return sent, wire, "", retry(err)
		}
		err := stream.Send(&livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: c.frame}})
		p.ad.sent(c, time.Since(waited))
		frameLen := len(c.frame)
		p.sent(c)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return sent, wire, "", nil // the server ended the stream; CloseAndRecv says why
			}
			return sent, wire, "", classify(err)
		}
		pos += int64(n)
		sent += int64(n)
		wire += int64(frameLen)
		m.met.raw.Add(float64(n))
		m.met.compressed.Add(float64(frameLen))
		now := m.clock.Now()
		m.mu.Lock()
		e.Uploaded = pos
		e.Compressed += int64(frameLen)
		var d *livedumpv1.Dump
		if pos-lastBytes >= progressBytes || now.Sub(lastReport) >= progressEvery {
			lastReport, lastBytes = now, pos
			e.Updated = now
			m.saveLocked()
			d = m.snapshot(e)
		}
		m.mu.Unlock()
		if d != nil {
			m.report(d)
		}
	}
	return sent, wire, "", nil
}

// hashRejected handles the controller's hash mismatch: it discarded its
// partial copy. If the local file no longer has the hash it was reported
// with, the dump fails; otherwise the upload restarts from zero, up to
// maxMismatches times.
func (m *Manager) hashRejected(ctx context.Context, e *entry, err error) error {
	m.mu.Lock()
	e.mismatches++
	n, want, p := e.mismatches, e.SHA256, e.abs()
	e.Uploaded = 0
	m.mu.Unlock()
	if n > maxMismatches {
		return permanent(fmt.Sprintf("the controller rejected the SHA-256 %d times", n-1), err)
	}
	sum, _, herr := HashFile(ctx, p, nil)
	if herr != nil {
		return retry(herr)
	}
	if sum != want {
		return permanent("the file changed after it was hashed", err)
	}
	return &uploadErr{kind: errResync, err: err}
}

// uploaded records a verified upload and deletes the local file unless it
// is to be kept.
func (m *Manager) uploaded(e *entry, size int64) error {
	m.mu.Lock()
	e.Uploaded = size
	e.mismatches = 0
	detail := ""
	keep := m.cfg.KeepAfterUpload
	if keep {
		detail = "kept on the agent"
	}
	d := m.setState(e, stateUploaded, detail)
	p := e.abs()
	m.mu.Unlock()
	m.report(d)
	if keep {
		return nil
	}
	// Only now, with the controller's copy verified, is the file deleted.
	err := os.Remove(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("cannot delete an uploaded dump", "dump_id", e.ID, "path", p, "err", err)
		return nil
	}
	m.mu.Lock()
	if m.byPath[p] == e {
		delete(m.byPath, p)
	}
	e.Gone = true
	m.saveLocked()
	m.mu.Unlock()
	return nil
}

// limiter is a token bucket on raw bytes. A request larger than the bucket
// goes into debt and waits for it, so the long-run rate holds for any chunk
// size.
type limiter struct {
	clock  clockwork.Clock
	rate   float64 // bytes per second; 0: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(clock clockwork.Clock, rate, burst int64) *limiter {
	return &limiter{clock: clock, rate: float64(rate), burst: float64(max(burst, 1)), tokens: float64(max(burst, 1))}
}

// delay takes n bytes from the bucket and returns how long to wait before
// sending them.
func (l *limiter) delay(n int) time.Duration {
	if l == nil || l.rate <= 0 {
		return 0
	}
	now := l.clock.Now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return 0
	}
	return time.Duration(-l.tokens / l.rate * float64(time.Second))
}

// wait blocks until n bytes may be sent.
func (l *limiter) wait(ctx context.Context, n int) error {
	d := l.delay(n)
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-l.clock.After(d):
		return nil
	}
}
