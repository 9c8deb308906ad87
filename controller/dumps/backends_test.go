package dumps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/blobstore"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/s3test"
)

// backend is a blob store under test; open returns another instance on the
// same storage, as another controller replica sharing it would.
type backend struct {
	name string
	open func(t *testing.T) blobstore.Blobs
	// durable is the offset recorded after a stream breaks at cut bytes
	// with 1 MiB chunks: every 4 MiB synced on a disk, whole 8 MiB parts
	// in S3.
	durable func(cut int64) int64
}

func eachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	srv := s3test.Start(t)
	t.Run("filesystem", func(t *testing.T) {
		dir := t.TempDir()
		test(t, backend{
			name: "filesystem",
			open: func(t *testing.T) blobstore.Blobs {
				s, err := blobstore.New(dir)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			durable: func(cut int64) int64 { return cut },
		})
	})
	t.Run("s3", func(t *testing.T) {
		url := "s3://" + srv.NewBucket(t) + "/dumps?region=us-east-1&endpoint=" + srv.Endpoint
		test(t, backend{
			name: "s3",
			open: func(t *testing.T) blobstore.Blobs {
				s, err := blobstore.Open(context.Background(), blobstore.Options{URL: url, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			durable: func(cut int64) int64 { return cut / (8 << 20) * (8 << 20) },
		})
	})
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (f *fixture) uploadWith(r *Receiver, agent string, s *fakeStream) error {
	s.ctx = context.Background()
	return r.Upload(agent, s)
}

func (f *fixture) committed(id string) int64 {
	f.t.Helper()
	off, err := f.r.Offset(context.Background(), "agent-1", id)
	if err != nil {
		f.t.Fatal(err)
	}
	return off.GetCommitted()
}

// download reads an uploaded dump through the Receiver, from offset.
func download(t *testing.T, r *Receiver, id string, offset int64) []byte {
	t.Helper()
	_, rc, err := r.Open(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBackendUpload(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		f := newFixtureWith(t, b.open(t))
		raw, sum := content(17<<20 + 5)
		d := dumpOf("bbbbbbbb01", raw, sum)
		s := &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
		if err := f.upload("agent-1", s); err != nil {
			t.Fatal(err)
		}
		if s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED || s.resp.GetCommitted() != int64(len(raw)) {
			t.Fatalf("response %v", s.resp)
		}
		rec, _ := f.st.GetDump(context.Background(), d.GetId())
		if rec.State != StateUploaded || rec.Committed != int64(len(raw)) || rec.Compressed <= 0 || rec.Compressed >= rec.Committed {
			t.Fatalf("record %+v", rec)
		}
		// Another replica serves it, resumably.
		if got := download(t, f.receiver(b.open(t)), d.GetId(), 5<<20); !bytes.Equal(got, raw[5<<20:]) {
			t.Fatal("stored content differs")
		}
	})
}

func TestBackendResumeOnAnotherReplica(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		f := newFixtureWith(t, b.open(t))
		raw, sum := content(20<<20 + 123)
		d := dumpOf("bbbbbbbb02", raw, sum)
		msgs := messages(t, d, raw, 0, 1<<20)
		// The connection to the first replica drops after 12 of 21 chunks.
		err := f.upload("agent-1", &fakeStream{msgs: msgs[:13], cut: status.Error(codes.Unavailable, "connection reset")})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("cut upload: %v", err)
		}
		committed := f.committed(d.GetId())
		if want := b.durable(12 << 20); committed != want {
			t.Fatalf("committed %d after 12 MiB, want %d", committed, want)
		}
		rec, _ := f.st.GetDump(context.Background(), d.GetId())
		if rec.Compressed <= 0 || rec.Compressed >= committed {
			t.Fatalf("compressed %d for %d committed bytes", rec.Compressed, committed)
		}

		// The agent reconnects to another replica sharing the database
		// and the blob store.
		other := f.receiver(b.open(t))
		if err := f.uploadWith(other, "agent-1", &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("restart from 0 with bytes committed: %v", err)
		}
		s := &fakeStream{msgs: messages(t, d, raw, committed, 1<<20)}
		if err := f.uploadWith(other, "agent-1", s); err != nil {
			t.Fatal(err)
		}
		if s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			t.Fatalf("resumed upload: %v", s.resp)
		}
		if got := download(t, f.r, d.GetId(), 0); !bytes.Equal(got, raw) {
			t.Fatal("resumed content differs")
		}
	})
}

func TestBackendCorruptContent(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		f := newFixtureWith(t, b.open(t))
		raw, sum := content(9<<20 + 7)
		d := dumpOf("bbbbbbbb03", raw, sum)
		wrong := bytes.Clone(raw)
		wrong[1<<20] ^= 0xFF
		err := f.upload("agent-1", &fakeStream{msgs: messages(t, d, wrong, 0, 1<<20)})
		if status.Code(err) != codes.DataLoss {
			t.Fatalf("wrong content: %v", err)
		}
		if c := f.committed(d.GetId()); c != 0 {
			t.Fatalf("committed %d after a hash mismatch, want 0", c)
		}
		blobs := b.open(t)
		for _, s := range []string{sum, sha(wrong)} {
			if ok, err := blobs.Has(context.Background(), s); err != nil || ok {
				t.Fatalf("Has(%s) = %v %v after a hash mismatch", s, ok, err)
			}
		}
		if _, _, err := f.r.Open(context.Background(), d.GetId()); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("Open of a rejected dump: %v", err)
		}
		s := &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
		if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			t.Fatalf("re-upload: %v %v", err, s.resp)
		}
	})
}

func TestBackendDuplicateContent(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		f := newFixtureWith(t, b.open(t))
		raw, sum := content(9 << 20)
		s := &fakeStream{msgs: messages(t, dumpOf("bbbbbbbb04", raw, sum), raw, 0, 1<<20)}
		if err := f.upload("agent-1", s); err != nil || s.resp.GetDetail() != "" {
			t.Fatalf("first copy: %v %v", err, s.resp)
		}
		// The same content from another machine, through another replica:
		// sent and verified again (the hash alone proves nothing about
		// what the agent holds), and stored once.
		d := dumpOf("bbbbbbbb05", raw, sum)
		s = &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
		if err := f.uploadWith(f.receiver(b.open(t)), "agent-2", s); err != nil {
			t.Fatal(err)
		}
		if s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED || len(s.msgs) != 0 {
			t.Fatalf("duplicate: %v, %d chunks left unread", s.resp, len(s.msgs))
		}
		if got := download(t, f.r, d.GetId(), 0); !bytes.Equal(got, raw) {
			t.Fatal("duplicate reads differently")
		}
	})
}

// A replica whose disk does not hold the partial upload makes the agent
// start again from 0 rather than refusing it forever.
func TestResumeOnAReplicaWithoutThePartialUpload(t *testing.T) {
	first, err := blobstore.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWith(t, first)
	raw, sum := content(10 << 20)
	d := dumpOf("bbbbbbbb06", raw, sum)
	msgs := messages(t, d, raw, 0, 1<<20)
	if err := f.upload("agent-1", &fakeStream{msgs: msgs[:6], cut: status.Error(codes.Unavailable, "connection reset")}); err == nil {
		t.Fatal("cut upload succeeded")
	}
	committed := f.committed(d.GetId())
	if committed != 5<<20 {
		t.Fatalf("committed %d, want %d", committed, 5<<20)
	}
	elsewhere, err := blobstore.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	other := f.receiver(elsewhere)
	err = f.uploadWith(other, "agent-1", &fakeStream{msgs: messages(t, d, raw, committed, 1<<20)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("resume without the partial data: %v", err)
	}
	if c := f.committed(d.GetId()); c != 0 {
		t.Fatalf("committed %d, want 0: the agent starts again", c)
	}
	s := &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
	if err := f.uploadWith(other, "agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("upload from 0: %v %v", err, s.resp)
	}
}

// failingStore is a filesystem store whose upload writes fail with err
// once room bytes are written: a full disk, an object store gone away.
type failingStore struct {
	blobstore.Blobs
	room int64
	err  error
}

func (d *failingStore) Upload(ctx context.Context, id, sum string, size, committed int64) (blobstore.Upload, error) {
	u, err := d.Blobs.Upload(ctx, id, sum, size, committed)
	if err != nil {
		return nil, err
	}
	return &failingUpload{Upload: u, d: d}, nil
}

type failingUpload struct {
	blobstore.Upload
	d *failingStore
}

func (u *failingUpload) Write(p []byte) (int, error) {
	if int64(len(p)) > u.d.room {
		return 0, u.d.err
	}
	u.d.room -= int64(len(p))
	return u.Upload.Write(p)
}

func TestStoreFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"disk full", &os.PathError{Op: "write", Path: "x.part", Err: syscall.ENOSPC}, codes.ResourceExhausted},
		{"s3 down", fmt.Errorf("upload part 2: %w: connection refused", blobstore.ErrUnavailable), codes.Unavailable},
		{"other", errors.New("input/output error"), codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blobs, err := blobstore.New(filepath.Join(t.TempDir(), "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			store := &failingStore{Blobs: blobs, room: 6 << 20, err: tc.err}
			f := newFixtureWith(t, store)
			raw, sum := content(10 << 20)
			d := dumpOf("bbbbbbbb07", raw, sum)
			err = f.upload("agent-1", &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)})
			if status.Code(err) != tc.want {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			// What was written before is kept for the retry.
			committed := f.committed(d.GetId())
			if committed != 6<<20 {
				t.Fatalf("committed %d, want %d", committed, 6<<20)
			}
			store.room = 1 << 40
			s := &fakeStream{msgs: messages(t, d, raw, committed, 1<<20)}
			if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
				t.Fatalf("retry: %v %v", err, s.resp)
			}
		})
	}
}
