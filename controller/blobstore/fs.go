package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Store is a content-addressed directory: blobs under sha256/, Put's
// temporary files under tmp/, partial uploads under uploads/. Publishing a
// blob is a rename, or a copy when uploads/ is a filesystem of its own.
type Store struct {
	dir string
}

var _ Blobs = (*Store)(nil)

// New opens (creating if needed) the store rooted at dir.
func New(dir string) (*Store, error) {
	for _, d := range []string{"sha256", "tmp", "uploads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir}, nil
}

// path returns where the blob with hash sum lives (whether or not it exists).
func (s *Store) path(sum string) (string, error) {
	if err := ValidSHA256(sum); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, "sha256", sum[:2], sum[2:]), nil
}

// Put implements Blobs.Put.
func (s *Store) Put(_ context.Context, r io.Reader, want string, max int64) (sum string, size int64, err error) {
	if want != "" {
		if err := ValidSHA256(want); err != nil {
			return "", 0, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err == nil && size > max {
		err = fmt.Errorf("content is larger than the %d-byte limit", max)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", 0, mismatch(sum, want)
	}
	return sum, size, s.adopt(tmp.Name(), sum)
}

// adopt moves a file whose content hashes to sum (checked by the caller)
// into the store. If the content is already stored the file is removed:
// identical content is kept once.
func (s *Store) adopt(path, sum string) error {
	dst, err := s.path(sum)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dst); err == nil {
		return os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	err = os.Rename(path, dst)
	if errors.Is(err, syscall.EXDEV) {
		// uploads/ on a volume of its own (an operator gave partial
		// uploads more room, or a tmpfs) cannot be renamed into sha256/:
		// copy instead, or every resumed upload would fail at its end.
		err = s.copyIn(path, dst)
	}
	return err
}

// copyIn publishes path at dst through tmp/, which is on dst's filesystem,
// and removes path.
func (s *Store) copyIn(path, dst string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "adopt-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	return os.Remove(path)
}

// Open implements Blobs.Open.
func (s *Store) Open(_ context.Context, sum string) (Reader, error) {
	p, err := s.path(sum)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, sum)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &file{File: f, size: fi.Size()}, nil
}

type file struct {
	*os.File
	size int64
}

func (f *file) Size() int64 { return f.size }

// Has implements Blobs.Has.
func (s *Store) Has(_ context.Context, sum string) (bool, error) {
	p, err := s.path(sum)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Delete implements Blobs.Delete.
func (s *Store) Delete(_ context.Context, sum string) error {
	p, err := s.path(sum)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Upload implements Blobs.Upload with a file uploads/<id>.part that is
// fsynced on Sync. A resume re-reads the committed prefix to restore the
// hash, so Finish never reads the whole file again.
func (s *Store) Upload(ctx context.Context, id, sum string, size, committed int64) (Upload, error) {
	if err := checkUpload(id, sum, size, committed); err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir, "uploads", id+".part")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	u := &fileUpload{s: s, f: f, path: path, sum: sum, size: size, h: sha256.New()}
	if err := u.resume(ctx, committed); err != nil {
		f.Close()
		return nil, err
	}
	return u, nil
}

type fileUpload struct {
	s         *Store
	f         *os.File
	path, sum string
	size      int64
	off       atomic.Int64 // bytes written; read by Sync beside Write
	synced    int64        // bytes fsynced
	h         hash.Hash
	err       error // a short write: the hash no longer matches the file
	closed    bool
}

func (u *fileUpload) resume(ctx context.Context, committed int64) error {
	fi, err := u.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < committed {
		// The partial data is not here (written on another machine, or
		// lost): start over.
		committed = 0
	}
	// Anything past the committed offset was not synced when it was
	// recorded, so it is not trusted.
	if err := u.f.Truncate(committed); err != nil {
		return err
	}
	n, err := io.CopyBuffer(u.h, io.LimitReader(readerCtx{ctx, u.f}, committed), make([]byte, 1<<20))
	if err != nil {
		return err
	}
	if n != committed {
		return fmt.Errorf("%s: read %d of %d committed bytes", u.path, n, committed)
	}
	u.off.Store(committed)
	u.synced = committed
	return nil
}

func (u *fileUpload) Offset() int64 { return u.off.Load() }

// hashBeside is the write size from which Write hashes on a goroutine of
// its own while the write system call copies the bytes into the page
// cache: the two take about as long, so a large write costs one of them.
const hashBeside = 256 << 10

func (u *fileUpload) Write(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	off := u.off.Load()
	if off+int64(len(p)) > u.size {
		return 0, errPastSize(u.size)
	}
	var n int
	var err error
	if len(p) < hashBeside {
		n, err = u.f.Write(p)
		u.h.Write(p[:n])
	} else {
		hashed := make(chan struct{})
		go func() {
			u.h.Write(p)
			close(hashed)
		}()
		n, err = u.f.Write(p)
		<-hashed
		if n < len(p) {
			// The hash has bytes the file has not: this upload can no
			// longer finish; a resume re-reads what is committed.
			u.err = fmt.Errorf("%s: short write (%d of %d bytes): %w", u.path, n, len(p), err)
		}
	}
	u.off.Store(off + int64(n))
	return n, err
}

func (u *fileUpload) Sync(context.Context) (int64, error) {
	off := u.off.Load() // what was written before the fsync began
	if err := u.f.Sync(); err != nil {
		return u.synced, err
	}
	u.synced = off
	return u.synced, nil
}

func (u *fileUpload) Finish(ctx context.Context) error {
	if u.err != nil {
		return u.err
	}
	if off := u.off.Load(); off != u.size {
		return fmt.Errorf("finish upload: %d of %d bytes written", off, u.size)
	}
	if _, err := u.Sync(ctx); err != nil {
		return err
	}
	u.Close()
	if got := hex.EncodeToString(u.h.Sum(nil)); got != u.sum {
		// Discard everything: a resumed upload cannot fix bytes that are
		// wrong somewhere before the offset.
		os.Remove(u.path)
		return mismatch(got, u.sum)
	}
	return u.s.adopt(u.path, u.sum)
}

func (u *fileUpload) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	return u.f.Close()
}

// readerCtx stops a long read (re-hashing a large prefix) when ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// DiscardUpload implements Blobs.DiscardUpload.
func (s *Store) DiscardUpload(_ context.Context, id string) error {
	if err := checkUploadID(id); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.dir, "uploads", id+".part"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ExpireUploads implements Blobs.ExpireUploads: partial files not written
// since before, and temporary files of Puts that did not finish.
func (s *Store) ExpireUploads(_ context.Context, before time.Time, keep func(id string) bool) ([]string, error) {
	var ids []string
	var errs []error
	for _, sub := range []string{"uploads", "tmp"} {
		dir := filepath.Join(s.dir, sub)
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			name := e.Name()
			id, isPart := strings.CutSuffix(name, ".part")
			if e.IsDir() || sub == "uploads" && (!isPart || keep != nil && keep(id)) {
				continue
			}
			fi, err := e.Info()
			if err != nil || !fi.ModTime().Before(before) {
				continue // gone meanwhile, or recent
			}
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			if sub == "uploads" {
				ids = append(ids, id)
			}
		}
	}
	return ids, errors.Join(errs...)
}
