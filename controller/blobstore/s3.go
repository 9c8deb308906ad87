package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
)

const (
	// partSize is the size of an upload's parts: above S3's 5 MiB minimum
	// for all but the last, and what one upload buffers in memory.
	partSize = 8 << 20
	// maxParts is S3's limit on the parts of one object; larger dumps get
	// larger parts.
	maxParts = 10000
	// hashStates is how many recent part boundaries keep their hash state
	// in the resume state. A resume starts at the offset last recorded in
	// the database, which trails the last part by at most one; keeping
	// them all would make every state write grow with the upload.
	hashStates = 4
	// cleanupTimeout bounds cleanups that run after the caller's context
	// has ended.
	cleanupTimeout = time.Minute
)

// S3 keeps blobs in an S3-compatible bucket under <prefix>sha256/ab/cdef...
// Put stages content under <prefix>tmp/ and copies it into place once
// checked. An upload goes straight into a multipart upload of its final
// key, so nothing is visible until CompleteMultipartUpload, which follows
// the hash check; its resume state, <prefix>uploads/<id>.json, lets any
// process sharing the bucket continue it. Abandoned uploads and staged
// objects are best expired by bucket lifecycle rules on those prefixes.
type S3 struct {
	client *minio.Client
	core   minio.Core
	bucket string
	prefix string // empty or ending in "/"
}

var _ Blobs = (*S3)(nil)

func (s *S3) key(sum string) string     { return s.prefix + "sha256/" + sum[:2] + "/" + sum[2:] }
func (s *S3) stateKey(id string) string { return s.prefix + "uploads/" + id + ".json" }
func (s *S3) tmpKey(name string) string { return s.prefix + "tmp/" + name }
func (s *S3) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// transient marks errors that say the store is out of reach or failing
// for now with ErrUnavailable.
func transient(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var e minio.ErrorResponse
	var netErr net.Error
	switch {
	case errors.As(err, &e):
		switch e.Code {
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout":
		default:
			if e.StatusCode < 500 {
				return err
			}
		}
	case errors.As(err, &netErr), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func notFound(err error) bool {
	var e minio.ErrorResponse
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case minio.NoSuchKey, minio.NoSuchUpload:
		return true
	}
	return e.StatusCode == http.StatusNotFound && e.Code != minio.NoSuchBucket
}

// Put implements Blobs.Put.
func (s *S3) Put(ctx context.Context, r io.Reader, want string, max int64) (sum string, size int64, err error) {
	defer func() { err = transient(err) }()
	if want != "" {
		if err := ValidSHA256(want); err != nil {
			return "", 0, err
		}
	}
	tmp := s.tmpKey("put-" + randomHex(16))
	h := sha256.New()
	body := io.TeeReader(io.LimitReader(r, max+1), h)
	defer func() {
		cctx, cancel := s.detached(ctx)
		defer cancel()
		_ = s.client.RemoveObject(cctx, s.bucket, tmp, minio.RemoveObjectOptions{})
	}()
	info, err := s.client.PutObject(ctx, s.bucket, tmp, body, -1, minio.PutObjectOptions{PartSize: partSize})
	if err != nil {
		return "", 0, fmt.Errorf("stage %s: %w", tmp, err)
	}
	if info.Size > max {
		return "", 0, fmt.Errorf("content is larger than the %d-byte limit", max)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", 0, mismatch(sum, want)
	}
	if ok, err := s.Has(ctx, sum); err != nil {
		return "", 0, err
	} else if ok {
		return sum, info.Size, nil // deduplicated
	}
	_, err = s.client.ComposeObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(sum)},
		minio.CopySrcOptions{Bucket: s.bucket, Object: tmp})
	if err != nil {
		return "", 0, fmt.Errorf("copy %s into place: %w", tmp, err)
	}
	return sum, info.Size, nil
}

// Open implements Blobs.Open.
func (s *S3) Open(ctx context.Context, sum string) (_ Reader, err error) {
	defer func() { err = transient(err) }()
	if err := ValidSHA256(sum); err != nil {
		return nil, err
	}
	o, err := s.client.GetObject(ctx, s.bucket, s.key(sum), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	info, err := o.Stat()
	if err != nil {
		o.Close()
		if notFound(err) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, sum)
		}
		return nil, err
	}
	return &object{Object: o, size: info.Size}, nil
}

type object struct {
	*minio.Object
	size int64
}

func (o *object) Size() int64 { return o.size }

// Has implements Blobs.Has.
func (s *S3) Has(ctx context.Context, sum string) (bool, error) {
	if err := ValidSHA256(sum); err != nil {
		return false, err
	}
	_, err := s.client.StatObject(ctx, s.bucket, s.key(sum), minio.StatObjectOptions{})
	if notFound(err) {
		return false, nil
	}
	return err == nil, transient(err)
}

// Delete implements Blobs.Delete. S3 answers a delete of a missing key
// with success.
func (s *S3) Delete(ctx context.Context, sum string) error {
	if err := ValidSHA256(sum); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(sum), minio.RemoveObjectOptions{})
	if notFound(err) {
		return nil
	}
	return transient(err)
}

// uploadState is what another process needs to resume an upload.
type uploadState struct {
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	PartSize int64  `json:"part_size"`
	UploadID string `json:"upload_id"` // of the multipart upload; empty before the first part
	Parts    []part `json:"parts"`
}

type part struct {
	Number int    `json:"number"`
	ETag   string `json:"etag"`
	End    int64  `json:"end"` // content offset after the part
	// Hash is the marshalled SHA-256 state at End, for the latest parts.
	Hash []byte `json:"hash,omitempty"`
}

func (st *uploadState) durable() int64 {
	if len(st.Parts) == 0 {
		return 0
	}
	return st.Parts[len(st.Parts)-1].End
}

func (s *S3) loadState(ctx context.Context, id string) (*uploadState, error) {
	o, err := s.client.GetObject(ctx, s.bucket, s.stateKey(id), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, 16<<20))
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.stateKey(id), err)
	}
	st := &uploadState{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", s.stateKey(id), err)
	}
	return st, nil
}

func (s *S3) saveState(ctx context.Context, id string, st *uploadState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.client.PutObject(ctx, s.bucket, s.stateKey(id), bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{ContentType: "application/json"})
	return err
}

// discard aborts an upload's multipart upload and deletes its state.
func (s *S3) discard(ctx context.Context, id string, st *uploadState) error {
	ctx, cancel := s.detached(ctx)
	defer cancel()
	var err error
	if st.UploadID != "" {
		if aerr := s.core.AbortMultipartUpload(ctx, s.bucket, s.key(st.SHA256), st.UploadID); aerr != nil && !notFound(aerr) {
			err = aerr
		}
	}
	if rerr := s.client.RemoveObject(ctx, s.bucket, s.stateKey(id), minio.RemoveObjectOptions{}); rerr != nil && !notFound(rerr) {
		err = errors.Join(err, rerr)
	}
	return err
}

// Upload implements Blobs.Upload. ctx also bounds the part uploads that
// Write makes.
func (s *S3) Upload(ctx context.Context, id, sum string, size, committed int64) (_ Upload, err error) {
	defer func() { err = transient(err) }()
	if err := checkUpload(id, sum, size, committed); err != nil {
		return nil, err
	}
	old, err := s.loadState(ctx, id)
	if err != nil {
		return nil, err
	}
	u := &s3Upload{s: s, ctx: ctx, id: id, h: sha256.New()}
	if old != nil && committed > 0 && old.SHA256 == sum && old.Size == size {
		for i, p := range old.Parts {
			if p.End != committed || p.Hash == nil {
				continue
			}
			if err := u.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(p.Hash); err != nil {
				return nil, fmt.Errorf("%s: part %d: %w", s.stateKey(id), p.Number, err)
			}
			// Parts past the committed offset were not recorded; they
			// are sent again under the same numbers, which replaces them.
			old.Parts = old.Parts[:i+1]
			u.st, u.off = *old, committed
			u.durable.Store(committed)
			u.buf = make([]byte, 0, u.st.PartSize)
			return u, nil
		}
	}
	if old != nil {
		if err := s.discard(ctx, id, old); err != nil {
			return nil, fmt.Errorf("discard the previous upload %s: %w", id, err)
		}
	}
	u.st = uploadState{SHA256: sum, Size: size, PartSize: partSizeFor(size)}
	u.buf = make([]byte, 0, u.st.PartSize)
	return u, nil
}

func partSizeFor(size int64) int64 {
	n := int64(partSize)
	if need := (size + maxParts - 1) / maxParts; need > n {
		n = (need + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB
	}
	return n
}

type s3Upload struct {
	s    *S3
	ctx  context.Context
	id   string
	st   uploadState
	h    hash.Hash
	buf  []byte // written after the last part
	off  int64  // bytes written
	err  error  // a failed part upload ends the upload
	done bool
	// durable is st.durable() once the part's state is saved, for Sync,
	// which may run beside Write.
	durable atomic.Int64
}

func (u *s3Upload) Offset() int64 { return u.off }

func (u *s3Upload) Write(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	if u.off+int64(len(p)) > u.st.Size {
		return 0, errPastSize(u.st.Size)
	}
	written := 0
	for len(p) > 0 {
		n := min(len(p), int(u.st.PartSize)-len(u.buf))
		u.buf = append(u.buf, p[:n]...)
		u.h.Write(p[:n])
		u.off += int64(n)
		written += n
		p = p[n:]
		if len(u.buf) == int(u.st.PartSize) {
			if err := u.flush(u.ctx); err != nil {
				u.err = transient(err)
				return written, u.err
			}
		}
	}
	return written, nil
}

// flush uploads the buffer as the next part and records it.
func (u *s3Upload) flush(ctx context.Context) error {
	key := u.s.key(u.st.SHA256)
	if u.st.UploadID == "" {
		id, err := u.s.core.NewMultipartUpload(ctx, u.s.bucket, key, minio.PutObjectOptions{})
		if err != nil {
			return fmt.Errorf("start multipart upload of %s: %w", key, err)
		}
		u.st.UploadID = id
	}
	n := len(u.st.Parts) + 1
	p, err := u.s.core.PutObjectPart(ctx, u.s.bucket, key, u.st.UploadID, n, bytes.NewReader(u.buf), int64(len(u.buf)), minio.PutObjectPartOptions{})
	if err != nil {
		return fmt.Errorf("upload part %d of %s: %w", n, key, err)
	}
	hs, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	if len(u.st.Parts) >= hashStates {
		u.st.Parts[len(u.st.Parts)-hashStates].Hash = nil
	}
	u.st.Parts = append(u.st.Parts, part{Number: n, ETag: p.ETag, End: u.off, Hash: hs})
	u.buf = u.buf[:0]
	if err := u.s.saveState(ctx, u.id, &u.st); err != nil {
		// The part is there but cannot be resumed from: forget it.
		u.st.Parts = u.st.Parts[:len(u.st.Parts)-1]
		return fmt.Errorf("save the state of upload %s: %w", u.id, err)
	}
	u.durable.Store(u.st.durable())
	return nil
}

// Sync implements Upload.Sync: parts are made durable as they fill, so the
// durable offset is the end of the last part saved.
func (u *s3Upload) Sync(context.Context) (int64, error) {
	return u.durable.Load(), nil
}

func (u *s3Upload) Finish(ctx context.Context) (err error) {
	defer func() { err = transient(err) }()
	if u.err != nil {
		return u.err
	}
	if u.done {
		return errors.New("upload already finished")
	}
	if u.off != u.st.Size {
		return fmt.Errorf("finish upload: %d of %d bytes written", u.off, u.st.Size)
	}
	key := u.s.key(u.st.SHA256)
	if got := hex.EncodeToString(u.h.Sum(nil)); got != u.st.SHA256 {
		u.done = true
		if err := u.s.discard(ctx, u.id, &u.st); err != nil {
			return errors.Join(mismatch(got, u.st.SHA256), err)
		}
		return mismatch(got, u.st.SHA256)
	}
	// Identical content is stored once.
	if ok, err := u.s.Has(ctx, u.st.SHA256); err != nil {
		return err
	} else if ok {
		u.done = true
		_ = u.s.discard(ctx, u.id, &u.st) // best effort: the content is safe
		return nil
	}
	if len(u.st.Parts) == 0 {
		// Small enough for one part: a single PUT, now that it is checked.
		if _, err := u.s.client.PutObject(ctx, u.s.bucket, key, bytes.NewReader(u.buf), int64(len(u.buf)),
			minio.PutObjectOptions{DisableMultipart: true}); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
	} else {
		if len(u.buf) > 0 {
			if err := u.flush(ctx); err != nil {
				return err
			}
		}
		parts := make([]minio.CompletePart, len(u.st.Parts))
		for i, p := range u.st.Parts {
			parts[i] = minio.CompletePart{PartNumber: p.Number, ETag: p.ETag}
		}
		if _, err := u.s.core.CompleteMultipartUpload(ctx, u.s.bucket, key, u.st.UploadID, parts, minio.PutObjectOptions{}); err != nil {
			return fmt.Errorf("complete multipart upload of %s: %w", key, err)
		}
		u.st.UploadID = "" // completed: nothing to abort
	}
	u.done = true
	u.buf = nil
	// Best effort: the content is published, and a state left behind is
	// discarded when the id is next uploaded from 0.
	_ = u.s.discard(ctx, u.id, &u.st)
	return nil
}

func (u *s3Upload) Close() error {
	u.buf = nil
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// DiscardUpload implements Blobs.DiscardUpload.
func (s *S3) DiscardUpload(ctx context.Context, id string) (err error) {
	defer func() { err = transient(err) }()
	if err := checkUploadID(id); err != nil {
		return err
	}
	st, err := s.loadState(ctx, id)
	if err != nil || st == nil {
		return err
	}
	return s.discard(ctx, id, st)
}

// ExpireUploads implements Blobs.ExpireUploads. An upload's resume state is
// rewritten with every part, so its age is the upload's silence; multipart
// uploads that no state names (a state write failed, a process died
// before the first one) are aborted once initiated before before, and
// staged Puts older than before are removed. Bucket lifecycle rules on
// these prefixes remain a good second line.
func (s *S3) ExpireUploads(ctx context.Context, before time.Time, keep func(id string) bool) (_ []string, err error) {
	defer func() { err = transient(err) }()
	var ids []string
	var errs []error
	named := map[string]bool{} // multipart upload IDs that a live state names
	statePrefix := s.prefix + "uploads/"
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: statePrefix, Recursive: true}) {
		if o.Err != nil {
			return ids, o.Err
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, statePrefix), ".json")
		if !ok || checkUploadID(id) != nil {
			continue
		}
		st, err := s.loadState(ctx, id)
		if err != nil || st == nil {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if !o.LastModified.Before(before) || keep != nil && keep(id) {
			named[st.UploadID] = true
			continue
		}
		if err := s.discard(ctx, id, st); err != nil {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, id)
	}
	for u := range s.client.ListIncompleteUploads(ctx, s.bucket, s.prefix+"sha256/", true) {
		if u.Err != nil {
			errs = append(errs, u.Err)
			break
		}
		if named[u.UploadID] || !u.Initiated.Before(before) {
			continue
		}
		if err := s.core.AbortMultipartUpload(ctx, s.bucket, u.Key, u.UploadID); err != nil && !notFound(err) {
			errs = append(errs, err)
		}
	}
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "tmp/", Recursive: true}) {
		if o.Err != nil {
			errs = append(errs, o.Err)
			break
		}
		if o.LastModified.Before(before) {
			if err := s.client.RemoveObject(ctx, s.bucket, o.Key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return ids, errors.Join(errs...)
}
