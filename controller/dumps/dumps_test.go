package dumps

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fakeStream plays an agent's upload stream: the messages to receive, and
// optionally an error instead of the end (a cut connection).
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []*livedumpv1.UploadDumpRequest
	cut  error
	resp *livedumpv1.UploadDumpResponse
}

func (f *fakeStream) Context() context.Context                            { return f.ctx }
func (f *fakeStream) SetHeader(metadata.MD) error                         { return nil }
func (f *fakeStream) SendHeader(metadata.MD) error                        { return nil }
func (f *fakeStream) SetTrailer(metadata.MD)                              {}
func (f *fakeStream) SendAndClose(r *livedumpv1.UploadDumpResponse) error { f.resp = r; return nil }
func (f *fakeStream) Recv() (*livedumpv1.UploadDumpRequest, error) {
	if len(f.msgs) == 0 {
		if f.cut != nil {
			return nil, f.cut
		}
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

type fixture struct {
	t     *testing.T
	st    store.Store
	blobs blobstore.Blobs
	r     *Receiver
	quota int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	blobs, err := blobstore.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureWith(t, blobs)
}

// newFixtureWith returns a Receiver on a fresh database and blobs.
func newFixtureWith(t *testing.T, blobs blobstore.Blobs) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Capture c-1 targets both test agents: only targets may link dumps to it.
	now := time.Now()
	if err := st.CreateCapture(context.Background(), store.Capture{ID: "c-1", Spec: "{}", State: "active", Created: now, Expires: now.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "agent-1", State: "armed"}, {AgentID: "agent-2", State: "armed"}}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, st: st, blobs: blobs}
	f.r = f.receiver(blobs)
	return f
}

// receiver returns another Receiver on the fixture's database, as another
// controller replica would run.
func (f *fixture) receiver(blobs blobstore.Blobs) *Receiver {
	f.t.Helper()
	r, err := New(Config{Store: f.st, Blobs: blobs,
		Limits: func(context.Context, string) (Limits, error) { return Limits{PerSignature: f.quota}, nil }})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) has(sum string) bool {
	f.t.Helper()
	ok, err := f.blobs.Has(context.Background(), sum)
	if err != nil {
		f.t.Fatal(err)
	}
	return ok
}

func content(n int) ([]byte, string) {
	b := make([]byte, n)
	_, _ = rand.Read(b[:n/4]) // some random pages, the rest zero: dump-like
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// messages splits raw into zstd chunks after a header at offset.
func messages(t *testing.T, d *livedumpv1.Dump, raw []byte, offset int64, chunk int) []*livedumpv1.UploadDumpRequest {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*livedumpv1.UploadDumpRequest{{Msg: &livedumpv1.UploadDumpRequest_Header{Header: &livedumpv1.UploadDumpHeader{Dump: d, Offset: offset, Compression: "zstd"}}}}
	for i := int(offset); i < len(raw); i += chunk {
		end := min(i+chunk, len(raw))
		msgs = append(msgs, &livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: enc.EncodeAll(raw[i:end], nil)}})
	}
	return msgs
}

func dumpOf(id string, raw []byte, sum string) *livedumpv1.Dump {
	return &livedumpv1.Dump{Id: id, CaptureId: "c-1", FileName: "DTRACE-20261126-1000.dmp", Size: int64(len(raw)), Sha256: sum,
		State: livedumpv1.DumpState_DUMP_STATE_HASHED}
}

func (f *fixture) upload(agent string, s *fakeStream) error {
	s.ctx = context.Background()
	return f.r.Upload(agent, s)
}

func TestUploadVerifiesAndStores(t *testing.T) {
	f := newFixture(t)
	raw, sum := content(3<<20 + 123)
	d := dumpOf("aaaaaaaa01", raw, sum)
	s := &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil {
		t.Fatal(err)
	}
	if s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("response %v", s.resp)
	}
	rc, err := f.blobs.Open(context.Background(), sum)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, raw) {
		t.Fatal("stored content differs")
	}
	rec, _ := f.st.GetDump(context.Background(), d.GetId())
	if rec.State != StateUploaded || rec.Committed != int64(len(raw)) || rec.Compressed >= rec.Committed {
		t.Fatalf("record %+v", rec)
	}
	// Another agent cannot touch it.
	if err := f.upload("agent-2", &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("foreign agent: %v", err)
	}
}

func TestUploadResumesFromTheCommittedOffset(t *testing.T) {
	f := newFixture(t)
	raw, sum := content(12 << 20)
	d := dumpOf("aaaaaaaa02", raw, sum)
	msgs := messages(t, d, raw, 0, 1<<20)
	// The connection drops after 6 of 12 chunks.
	if err := f.upload("agent-1", &fakeStream{msgs: msgs[:7], cut: status.Error(codes.Unavailable, "connection reset")}); err == nil {
		t.Fatal("cut upload succeeded")
	}
	off, err := f.r.Offset(context.Background(), "agent-1", d.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if off.GetCommitted() != 6<<20 {
		t.Fatalf("committed %d after 6 MiB, want %d", off.GetCommitted(), 6<<20)
	}
	// Resuming from anywhere else is refused.
	if err := f.upload("agent-1", &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("restart from 0 with bytes committed: %v", err)
	}
	s := &fakeStream{msgs: messages(t, d, raw, off.GetCommitted(), 1<<20)}
	if err := f.upload("agent-1", s); err != nil {
		t.Fatal(err)
	}
	if s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("resumed upload: %v", s.resp)
	}
}

func TestCorruptUploadsAreRejected(t *testing.T) {
	f := newFixture(t)
	raw, sum := content(2 << 20)
	d := dumpOf("aaaaaaaa03", raw, sum)

	bad := messages(t, d, raw, 0, 1<<20)
	bad[1] = &livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: []byte("not zstd")}}
	if err := f.upload("agent-1", &fakeStream{msgs: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("garbage chunk: %v", err)
	}

	// Bytes that decode fine but are not the announced content: the whole
	// partial upload is discarded and the agent starts again from 0.
	wrong := append([]byte(nil), raw...)
	wrong[len(wrong)-1] ^= 0xFF
	off, _ := f.r.Offset(context.Background(), "agent-1", d.GetId())
	err := f.upload("agent-1", &fakeStream{msgs: messages(t, d, wrong, off.GetCommitted(), 1<<20)})
	if status.Code(err) != codes.DataLoss {
		t.Fatalf("wrong content: %v", err)
	}
	if off, _ := f.r.Offset(context.Background(), "agent-1", d.GetId()); off.GetCommitted() != 0 {
		t.Fatalf("committed %d after a hash mismatch, want 0", off.GetCommitted())
	}
	if f.has(sum) {
		t.Fatal("corrupt content reached the store")
	}
	s := &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("re-upload: %v %v", err, s.resp)
	}
}

func TestQuotaAndDuplicates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := f.st.InsertEvents(ctx, []store.Event{
		{ID: "ev000001", CaptureID: "c-1", AgentID: "agent-1", Time: now, Signature: "ntdll!NtCreateFile", User: "[]", Kernel: "[]"},
		{ID: "ev000002", CaptureID: "c-1", AgentID: "agent-1", Time: now, Signature: "ntdll!NtCreateFile", User: "[]", Kernel: "[]"},
	}); err != nil {
		t.Fatal(err)
	}
	f.quota = 1
	raw1, sum1 := content(1 << 20)
	d1 := dumpOf("aaaaaaaa04", raw1, sum1)
	d1.EventId = "ev000001"
	s := &fakeStream{msgs: messages(t, d1, raw1, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("first dump of the signature: %v %v", err, s.resp)
	}
	raw2, sum2 := content(1 << 20)
	d2 := dumpOf("aaaaaaaa05", raw2, sum2)
	d2.EventId = "ev000002"
	s = &fakeStream{msgs: messages(t, d2, raw2, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_HASH_ONLY {
		t.Fatalf("second dump of the signature: %v %v, want hash-only", err, s.resp)
	}

	// An operator's pull uploads it anyway.
	if err := f.st.MarkDumpPulled(ctx, d2.GetId()); err != nil {
		t.Fatal(err)
	}
	s = &fakeStream{msgs: messages(t, d2, raw2, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("pulled dump over the quota: %v %v, want uploaded", err, s.resp)
	}

	// The same content from another dump is sent again (a hash alone
	// proves nothing) and verified, and stored once.
	f.quota = 0
	d3 := dumpOf("aaaaaaaa06", raw1, sum1)
	s = &fakeStream{msgs: messages(t, d3, raw1, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED || len(s.msgs) != 0 {
		t.Fatalf("duplicate content: %v %v, %d messages unread", err, s.resp, len(s.msgs))
	}
	// Sending it again for a dump already uploaded is confirmed at once.
	s = &fakeStream{msgs: messages(t, d3, raw1, 0, 1<<20)}
	if err := f.upload("agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED || s.resp.GetDetail() == "" {
		t.Fatalf("uploaded dump sent again: %v %v", err, s.resp)
	}
}

func TestBadHeaders(t *testing.T) {
	f := newFixture(t)
	raw, sum := content(1 << 20)
	for name, d := range map[string]*livedumpv1.Dump{
		"bad id":   {Id: "../x", Size: 1, Sha256: sum},
		"bad sha":  {Id: "aaaaaaaa07", Size: 1, Sha256: "xyz"},
		"bad name": {Id: "aaaaaaaa08", Size: 1, Sha256: sum, FileName: "../../etc/passwd"},
		"no size":  {Id: "aaaaaaaa09", Sha256: sum},
	} {
		t.Run(name, func(t *testing.T) {
			err := f.upload("agent-1", &fakeStream{msgs: messages(t, d, raw[:1], 0, 1<<20)})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%v", err)
			}
		})
	}
	if _, err := f.r.Offset(context.Background(), "agent-1", "../x"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Offset with a bad id: %v", err)
	}
}

// TestTruncatedReportWithHeaderFacts: an agent reports a dump truncated,
// with the facts of its header; the controller stores and shows them, and
// refuses a malformed dump type.
func TestTruncatedReportWithHeaderFacts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	d := &livedumpv1.Dump{Id: "0123456789abcdef", CaptureId: "c-1", FileName: "DTRACE-20261126-1000.dmp", Size: 4096,
		State: livedumpv1.DumpState_DUMP_STATE_TRUNCATED, Detail: "truncated: the file has 4096 of the 8388608 bytes its header declares",
		DumpType: "full", BugCheckCode: 0xE2, OsBuild: 26100, DeclaredSize: 8 << 20}
	if err := f.r.Report(ctx, "agent-1", d); err != nil {
		t.Fatal(err)
	}
	got, err := f.st.GetDump(ctx, d.GetId())
	if err != nil {
		t.Fatal(err)
	}
	p := Proto(got, "VDI-01")
	if p.GetState() != livedumpv1.DumpState_DUMP_STATE_TRUNCATED || p.GetDumpType() != "full" || p.GetBugCheckCode() != 0xE2 ||
		p.GetOsBuild() != 26100 || p.GetDeclaredSize() != 8<<20 {
		t.Fatalf("stored %+v", p)
	}
	bad := proto.Clone(d).(*livedumpv1.Dump)
	bad.DumpType = "Full; DROP"
	if err := f.r.Report(ctx, "agent-1", bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "dump.dump_type") {
		t.Fatalf("malformed dump type: %v", err)
	}
}
