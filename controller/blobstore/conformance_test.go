package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/livedump/livedump/tests/s3test"
)

// backend is one implementation under test. open returns a new instance
// on the same storage each time, as another controller process would see
// it; leftovers lists what is stored besides published blobs.
type backend struct {
	name      string
	open      func(t *testing.T) Blobs
	leftovers func(t *testing.T) []string
}

func fsBackend(t *testing.T) backend {
	dir := t.TempDir()
	return backend{
		name: "filesystem",
		open: func(t *testing.T) Blobs {
			s, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		leftovers: func(t *testing.T) []string {
			var left []string
			for _, sub := range []string{"tmp", "uploads"} {
				es, _ := os.ReadDir(filepath.Join(dir, sub))
				for _, e := range es {
					left = append(left, sub+"/"+e.Name())
				}
			}
			return left
		},
	}
}

func s3Backend(t *testing.T, srv s3test.Server) backend {
	bucket := srv.NewBucket(t)
	const prefix = "livedump/blobs/"
	return backend{
		name: "s3",
		open: func(t *testing.T) Blobs {
			s, err := NewS3(context.Background(), S3Config{Endpoint: srv.Endpoint, Region: "us-east-1", Bucket: bucket,
				Prefix: prefix, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		leftovers: func(t *testing.T) []string {
			ctx := context.Background()
			c := srv.Client(t)
			var left []string
			for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
				if o.Err != nil {
					t.Fatal(o.Err)
				}
				if !strings.HasPrefix(o.Key, prefix+"sha256/") {
					left = append(left, o.Key)
				}
			}
			for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
				if u.Err != nil {
					t.Fatal(u.Err)
				}
				left = append(left, "multipart upload of "+u.Key)
			}
			return left
		},
	}
}

// eachBackend runs test against every implementation, with fresh storage.
func eachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	srv := s3test.Start(t)
	t.Run("filesystem", func(t *testing.T) { test(t, fsBackend(t)) })
	t.Run("s3", func(t *testing.T) { test(t, s3Backend(t, srv)) })
}

func randomContent(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readBlob(t *testing.T, s Blobs, sum string) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), sum)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != int64(len(b)) {
		t.Fatalf("Size() = %d, read %d bytes", r.Size(), len(b))
	}
	return b
}

func noLeftovers(t *testing.T, b backend) {
	t.Helper()
	if left := b.leftovers(t); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func has(t *testing.T, s Blobs, sum string) bool {
	t.Helper()
	ok, err := s.Has(context.Background(), sum)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestPut(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		for _, n := range []int{1, 1000, partSize + 1} {
			content := randomContent(n)
			want := sha(content)
			if has(t, s, want) {
				t.Fatal("Has before Put")
			}
			sum, size, err := s.Put(ctx, bytes.NewReader(content), "", int64(n))
			if err != nil || sum != want || size != int64(n) {
				t.Fatalf("Put = %s %d %v, want %s %d", sum, size, err, want, n)
			}
			// Promised and already there: stored once.
			if sum, _, err := s.Put(ctx, bytes.NewReader(content), want, int64(n)); err != nil || sum != want {
				t.Fatalf("second Put = %s %v", sum, err)
			}
			if !has(t, s, want) {
				t.Fatal("Has after Put")
			}
			if got := readBlob(t, b.open(t), want); !bytes.Equal(got, content) {
				t.Fatal("content changed")
			}
		}
		noLeftovers(t, b)
	})
}

func TestPutRejects(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		content := randomContent(1000)
		wrong := strings.Repeat("0", 64)
		if _, _, err := s.Put(ctx, bytes.NewReader(content), wrong, 1000); !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("mismatch: %v", err)
		}
		if has(t, s, wrong) || has(t, s, sha(content)) {
			t.Fatal("mismatched content was stored")
		}
		if _, err := s.Open(ctx, sha(content)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open after a mismatch: %v", err)
		}
		if _, _, err := s.Put(ctx, bytes.NewReader(content), "", 999); err == nil {
			t.Fatal("over-limit content accepted")
		}
		if has(t, s, sha(content)) {
			t.Fatal("over-limit content was stored")
		}
		for _, bad := range []string{"../../etc/passwd", strings.Repeat("A", 64), "abc"} {
			if _, err := s.Open(ctx, bad); err == nil || errors.Is(err, ErrNotFound) {
				t.Fatalf("Open(%q) = %v, want a validation error", bad, err)
			}
			if _, err := s.Has(ctx, bad); err == nil {
				t.Fatalf("Has(%q) accepted", bad)
			}
			if _, _, err := s.Put(ctx, bytes.NewReader(content), bad, 1000); err == nil || errors.Is(err, ErrHashMismatch) {
				t.Fatalf("Put(want=%q) = %v, want a validation error", bad, err)
			}
		}
		for _, bad := range []struct {
			id              string
			size, committed int64
		}{{"../x", 10, 0}, {"", 10, 0}, {"a/b", 10, 0}, {"ok", 0, 0}, {"ok", 10, 11}, {"ok", 10, -1}} {
			if _, err := s.Upload(ctx, bad.id, sha(content), bad.size, bad.committed); err == nil {
				t.Fatalf("Upload(%q, size %d, committed %d) accepted", bad.id, bad.size, bad.committed)
			}
		}
		noLeftovers(t, b)
	})
}

func TestOpenSeeks(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		content := randomContent(3 << 20)
		sum, _, err := s.Put(ctx, bytes.NewReader(content), "", int64(len(content)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, strings.Repeat("1", 64)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open of a missing blob: %v", err)
		}
		r, err := s.Open(ctx, sum)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.Size() != int64(len(content)) {
			t.Fatalf("Size() = %d, want %d", r.Size(), len(content))
		}
		head := make([]byte, 100)
		if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, content[:100]) {
			t.Fatalf("read the head: %v", err)
		}
		for _, off := range []int64{1 << 20, 12345, int64(len(content)) - 1, int64(len(content))} {
			if n, err := r.Seek(off, io.SeekStart); err != nil || n != off {
				t.Fatalf("Seek(%d) = %d %v", off, n, err)
			}
			rest, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(rest, content[off:]) {
				t.Fatalf("read from %d: %d bytes, %v", off, len(rest), err)
			}
		}
		if n, err := r.Seek(0, io.SeekEnd); err != nil || n != int64(len(content)) {
			t.Fatalf("Seek to the end = %d %v", n, err)
		}
	})
}

// upload writes content[from:] to u in uneven writes.
func write(t *testing.T, u Upload, content []byte) {
	t.Helper()
	for len(content) > 0 {
		n := min(len(content), 1<<20+17)
		if _, err := u.Write(content[:n]); err != nil {
			t.Fatal(err)
		}
		content = content[n:]
	}
}

func TestUpload(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, n := range []int{1, 1000, partSize, 2*partSize + 5} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				s := b.open(t)
				content := randomContent(n)
				sum := sha(content)
				u, err := s.Upload(ctx, "dump-"+fmt.Sprint(n), sum, int64(n), 0)
				if err != nil {
					t.Fatal(err)
				}
				defer u.Close()
				if u.Offset() != 0 {
					t.Fatalf("a new upload at %d", u.Offset())
				}
				write(t, u, content)
				if _, err := u.Write([]byte{0}); err == nil {
					t.Fatal("write past the announced size accepted")
				}
				if has(t, s, sum) {
					t.Fatal("visible before Finish")
				}
				if err := u.Finish(ctx); err != nil {
					t.Fatal(err)
				}
				if got := readBlob(t, b.open(t), sum); !bytes.Equal(got, content) {
					t.Fatal("content changed")
				}
				noLeftovers(t, b)
			})
		}
	})
}

func TestUploadMismatchLeavesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, n := range []int{1000, partSize + 1000} {
			s := b.open(t)
			content := randomContent(n)
			sum := sha(content)
			wrong := bytes.Clone(content)
			wrong[n-1] ^= 0xff
			u, err := s.Upload(ctx, "dump1", sum, int64(n), 0)
			if err != nil {
				t.Fatal(err)
			}
			write(t, u, wrong)
			if err := u.Finish(ctx); !errors.Is(err, ErrHashMismatch) {
				t.Fatalf("Finish = %v, want a hash mismatch", err)
			}
			u.Close()
			if has(t, s, sum) || has(t, s, sha(wrong)) {
				t.Fatal("mismatched content was stored")
			}
			noLeftovers(t, b)
			// Nothing to resume from: the next attempt starts at 0.
			u, err = s.Upload(ctx, "dump1", sum, int64(n), 0)
			if err != nil {
				t.Fatal(err)
			}
			write(t, u, content)
			if err := u.Finish(ctx); err != nil {
				t.Fatal(err)
			}
		}
		noLeftovers(t, b)
	})
}

func TestUploadResumesInAnotherInstance(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		content := randomContent(3*partSize + 12345)
		sum := sha(content)
		size := int64(len(content))

		// The first process gets 2.5 parts through before it goes away.
		first := b.open(t)
		u, err := first.Upload(ctx, "dump1", sum, size, 0)
		if err != nil {
			t.Fatal(err)
		}
		write(t, u, content[:2*partSize+partSize/2])
		durable, err := u.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if durable < 2*partSize || durable > 2*partSize+partSize/2 {
			t.Fatalf("durable %d after %d bytes", durable, 2*partSize+partSize/2)
		}
		u.Close()

		// The database recorded an earlier durable offset: another
		// process resumes from there.
		committed := int64(partSize)
		if b.name == "filesystem" {
			committed = 3 << 20
		}
		u, err = b.open(t).Upload(ctx, "dump1", sum, size, committed)
		if err != nil {
			t.Fatal(err)
		}
		if u.Offset() != committed {
			t.Fatalf("resumed at %d, want %d", u.Offset(), committed)
		}
		write(t, u, content[committed:2*partSize])
		durable, err = u.Sync(ctx)
		if err != nil || durable != 2*partSize {
			t.Fatalf("durable %d %v, want %d", durable, err, 2*partSize)
		}
		u.Close()

		// And a third one finishes it.
		third := b.open(t)
		u, err = third.Upload(ctx, "dump1", sum, size, durable)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		if u.Offset() != durable {
			t.Fatalf("resumed at %d, want %d", u.Offset(), durable)
		}
		write(t, u, content[durable:])
		if err := u.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readBlob(t, first, sum); !bytes.Equal(got, content) {
			t.Fatal("resumed content differs")
		}
		noLeftovers(t, b)
	})
}

func TestUploadRestartsWhenItCannotResume(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		content := randomContent(2*partSize + 1)
		sum := sha(content)
		u, err := s.Upload(ctx, "dump1", sum, int64(len(content)), 0)
		if err != nil {
			t.Fatal(err)
		}
		write(t, u, content[:partSize+1])
		if _, err := u.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		u.Close()
		// Announced differently (the agent re-hashed a changed file): the
		// partial data is not this content's.
		other := randomContent(len(content))
		u, err = s.Upload(ctx, "dump1", sha(other), int64(len(other)), partSize)
		if err != nil {
			t.Fatal(err)
		}
		if u.Offset() != 0 && b.name == "s3" {
			t.Fatalf("resumed another content's upload at %d", u.Offset())
		}
		u.Close()
		// From 0, the old partial upload is gone.
		u, err = s.Upload(ctx, "dump1", sum, int64(len(content)), 0)
		if err != nil {
			t.Fatal(err)
		}
		write(t, u, content)
		if err := u.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		noLeftovers(t, b)
	})
}

func TestConcurrentUploadsOfTheSameContent(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		content := randomContent(partSize + 100)
		sum := sha(content)
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for i := range 3 {
			s := b.open(t)
			wg.Go(func() {
				u, err := s.Upload(ctx, fmt.Sprintf("dump%d", i), sum, int64(len(content)), 0)
				if err != nil {
					errs <- err
					return
				}
				defer u.Close()
				if _, err := u.Write(content); err != nil {
					errs <- err
					return
				}
				errs <- u.Finish(ctx)
			})
			wg.Go(func() {
				_, _, err := s.Put(ctx, bytes.NewReader(content), sum, int64(len(content)))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := readBlob(t, b.open(t), sum); !bytes.Equal(got, content) {
			t.Fatal("content changed")
		}
		noLeftovers(t, b)
	})
}

// startPartial leaves an unfinished upload id with more than one part
// synced, as an agent that went away would.
func startPartial(t *testing.T, s Blobs, id string) {
	t.Helper()
	content := randomContent(2*partSize + 5)
	u, err := s.Upload(context.Background(), id, sha(content), int64(len(content)), 0)
	if err != nil {
		t.Fatal(err)
	}
	write(t, u, content[:partSize+100])
	if n, err := u.Sync(context.Background()); err != nil || n == 0 {
		t.Fatalf("Sync = %d %v", n, err)
	}
	u.Close()
}

func TestExpireUploads(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		startPartial(t, s, "old")
		startPartial(t, s, "busy")
		// Nothing is older than a time before the uploads.
		if ids, err := s.ExpireUploads(ctx, time.Now().Add(-time.Hour), nil); err != nil || len(ids) != 0 {
			t.Fatalf("ExpireUploads(an hour ago) = %v %v, want none", ids, err)
		}
		ids, err := s.ExpireUploads(ctx, time.Now().Add(time.Minute), func(id string) bool { return id == "busy" })
		if err != nil || len(ids) != 1 || ids[0] != "old" {
			t.Fatalf("ExpireUploads = %v %v, want [old]", ids, err)
		}
		if left := b.leftovers(t); len(left) == 0 {
			t.Fatal("the upload in progress was discarded too")
		}
		// A discarded upload resumes from 0.
		content := randomContent(1000)
		u, err := b.open(t).Upload(ctx, "old", sha(content), 1000, 0)
		if err != nil || u.Offset() != 0 {
			t.Fatalf("Upload after expiry: %v", err)
		}
		u.Close()
		if err := s.DiscardUpload(ctx, "busy"); err != nil {
			t.Fatal(err)
		}
		if err := s.DiscardUpload(ctx, "busy"); err != nil {
			t.Fatalf("DiscardUpload of nothing: %v", err)
		}
		if err := s.DiscardUpload(ctx, "old"); err != nil {
			t.Fatal(err)
		}
		if err := s.DiscardUpload(ctx, "../x"); err == nil {
			t.Fatal("DiscardUpload accepted a bad id")
		}
		noLeftovers(t, b)
	})
}

func TestDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		keep, gone := randomContent(1000), randomContent(2000)
		for _, c := range [][]byte{keep, gone} {
			if _, _, err := s.Put(ctx, bytes.NewReader(c), "", int64(len(c))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, sha(gone)); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		// Another instance on the same storage sees it gone, and the
		// other content untouched.
		other := b.open(t)
		if has(t, other, sha(gone)) {
			t.Fatal("Has after Delete")
		}
		if _, err := other.Open(ctx, sha(gone)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open after Delete = %v, want ErrNotFound", err)
		}
		if got := readBlob(t, other, sha(keep)); !bytes.Equal(got, keep) {
			t.Fatal("Delete touched other content")
		}
		if err := s.Delete(ctx, sha(gone)); err != nil {
			t.Fatalf("Delete again = %v, want nil", err)
		}
		if err := s.Delete(ctx, "../../etc/passwd"); err == nil {
			t.Fatal("Delete accepted a path for a hash")
		}
		// Deleted content can be stored again.
		if _, _, err := s.Put(ctx, bytes.NewReader(gone), sha(gone), int64(len(gone))); err != nil || !has(t, s, sha(gone)) {
			t.Fatalf("Put after Delete: %v", err)
		}
		noLeftovers(t, b)
	})
}

// TestSyncBesideWrite runs Sync on another goroutine while Writes go on, as
// the dump receiver commits in the background: every durable offset is one
// the writer had reached, an upload resumed there continues correctly, and
// the content finishes whole.
func TestSyncBesideWrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.open(t)
		n := 2*partSize + 5
		content := randomContent(n)
		sum := sha(content)
		u, err := s.Upload(ctx, "beside", sum, int64(n), 0)
		if err != nil {
			t.Fatal(err)
		}
		ends := map[int64]bool{0: true}
		for off := 0; off < n; off += 1<<20 + 17 {
			ends[int64(min(off+1<<20+17, n))] = true
		}
		stop := make(chan struct{})
		synced := make(chan []int64)
		go func() {
			var got []int64
			for {
				select {
				case <-stop:
					synced <- got
					return
				default:
				}
				d, err := u.Sync(ctx)
				if err != nil {
					t.Error(err)
				}
				got = append(got, d)
			}
		}()
		write(t, u, content)
		close(stop)
		last := int64(0)
		for _, d := range <-synced {
			if d < last || d > int64(n) || !ends[d] && d%partSize != 0 {
				t.Fatalf("Sync returned %d after %d: not an offset the writer reached", d, last)
			}
			last = d
		}
		durable, err := u.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		u.Close()
		// Resume from what the last Sync made durable, in a new instance.
		u, err = b.open(t).Upload(ctx, "beside", sum, int64(n), durable)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		write(t, u, content[u.Offset():])
		if err := u.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readBlob(t, b.open(t), sum); !bytes.Equal(got, content) {
			t.Fatal("content changed")
		}
		noLeftovers(t, b)
	})
}
