package dumps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fakeController is the controller's side of UploadDump and DumpOffset:
// it decompresses every chunk, commits it, verifies the SHA-256 at the end,
// and can be told to misbehave.
type fakeController struct {
	livedumpv1.UnimplementedAgentServiceServer
	dec *zstd.Decoder

	mu      sync.Mutex
	dumps   map[string]*fakeDump
	headers []seenHeader
	offsets []string // DumpOffset calls, by dump ID

	// Misbehaviour, each consumed when it fires.
	failAfter    int // end a stream with Unavailable after this many chunks
	blockAfter   int // after this many chunks, hold the stream until the client goes away
	blocked      chan struct{}
	hashOnly     bool // answer HASH_ONLY (the per-signature quota)
	mismatchOnce bool // report a hash mismatch once, discarding the partial
	keepContent  bool // keep the bytes for comparison (off for huge dumps)
	onOffset     func(id string)
}

type fakeDump struct {
	header    *livedumpv1.Dump
	committed int64
	h         hash.Hash
	content   []byte
	state     livedumpv1.DumpState
	done      time.Time
}

type seenHeader struct {
	id     string
	offset int64
	at     time.Time
}

func newFakeController(t testing.TB) (*fakeController, livedumpv1.AgentServiceClient) {
	t.Helper()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeController{dec: dec, dumps: map[string]*fakeDump{}, keepContent: true, blocked: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	livedumpv1.RegisterAgentServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		dec.Close()
	})
	return f, livedumpv1.NewAgentServiceClient(cc)
}

func (f *fakeController) DumpOffset(_ context.Context, req *livedumpv1.DumpOffsetRequest) (*livedumpv1.DumpOffsetResponse, error) {
	f.mu.Lock()
	f.offsets = append(f.offsets, req.GetDumpId())
	hook := f.onOffset
	d, ok := f.dumps[req.GetDumpId()]
	var resp *livedumpv1.DumpOffsetResponse
	if ok {
		resp = &livedumpv1.DumpOffsetResponse{Committed: d.committed, State: d.state}
	}
	f.mu.Unlock()
	if hook != nil {
		hook(req.GetDumpId())
	}
	if !ok {
		return nil, status.Error(codes.NotFound, "no such dump")
	}
	return resp, nil
}

func (f *fakeController) UploadDump(st livedumpv1.AgentService_UploadDumpServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	hdr := req.GetHeader()
	if hdr == nil || hdr.GetDump().GetId() == "" {
		return status.Error(codes.InvalidArgument, "header first")
	}
	if hdr.GetCompression() != "zstd" {
		return status.Error(codes.InvalidArgument, "compression")
	}
	id := hdr.GetDump().GetId()
	f.mu.Lock()
	f.headers = append(f.headers, seenHeader{id: id, offset: hdr.GetOffset(), at: time.Now()})
	d, ok := f.dumps[id]
	if !ok {
		d = &fakeDump{h: sha256.New(), state: livedumpv1.DumpState_DUMP_STATE_UPLOADING}
		f.dumps[id] = d
	}
	d.header = hdr.GetDump()
	if f.hashOnly {
		f.mu.Unlock()
		return st.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, Committed: d.committed, Detail: "quota"})
	}
	if hdr.GetOffset() != d.committed {
		f.mu.Unlock()
		return status.Errorf(codes.FailedPrecondition, "offset %d, committed %d", hdr.GetOffset(), d.committed)
	}
	f.mu.Unlock()
	chunks := 0
	var buf []byte
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // the agent went away: what was committed stays
		}
		raw, err := f.dec.DecodeAll(req.GetChunk(), buf[:0])
		buf = raw
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "chunk: %v", err)
		}
		f.mu.Lock()
		d.h.Write(raw)
		if f.keepContent {
			d.content = append(d.content, raw...)
		}
		d.committed += int64(len(raw))
		chunks++
		fail := f.failAfter > 0 && chunks == f.failAfter
		if fail {
			f.failAfter = 0
		}
		block := f.blockAfter > 0 && chunks == f.blockAfter
		if block {
			f.blockAfter = 0
			close(f.blocked)
		}
		f.mu.Unlock()
		if fail {
			return status.Error(codes.Unavailable, "injected failure")
		}
		if block {
			<-st.Context().Done()
			return st.Context().Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.committed != d.header.GetSize() {
		return st.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADING, Committed: d.committed})
	}
	sum := hex.EncodeToString(d.h.Sum(nil))
	if f.mismatchOnce || sum != d.header.GetSha256() {
		f.mismatchOnce = false
		d.h.Reset()
		d.content, d.committed = nil, 0
		return status.Error(codes.DataLoss, "sha256 mismatch; partial discarded")
	}
	d.state = livedumpv1.DumpState_DUMP_STATE_UPLOADED
	d.done = time.Now()
	return st.SendAndClose(&livedumpv1.UploadDumpResponse{State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Committed: d.committed})
}

func (f *fakeController) offsetsFor(id string) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int64
	for _, h := range f.headers {
		if h.id == id {
			out = append(out, h.offset)
		}
	}
	return out
}

func (f *fakeController) stored(id string) (content []byte, sum string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.dumps[id]
	if !ok || d.state != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		return nil, "", false
	}
	return d.content, hex.EncodeToString(d.h.Sum(nil)), true
}

func (f *fakeController) headerCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.headers)
}

func (f *fakeController) set(fn func(f *fakeController)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// harness runs a Manager against the fake controller and records its
// reports.
type harness struct {
	t         *testing.T
	dir       string // the LiveKernelReports folder
	state     string
	fake      *fakeController
	client    livedumpv1.AgentServiceClient
	clientErr func() error

	mu      sync.Mutex
	reports []*livedumpv1.Dump

	m      *Manager
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T) *harness {
	fake, client := newFakeController(t)
	h := &harness{t: t, dir: filepath.Join(tempDir(t), "LiveKernelReports"), state: tempDir(t), fake: fake, client: client}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// config is the fast configuration the tests use.
func (h *harness) config() Config {
	return Config{
		Dir:      func() (string, error) { return h.dir, nil },
		StateDir: h.state,
		Client: func() (livedumpv1.AgentServiceClient, error) {
			if h.clientErr != nil {
				if err := h.clientErr(); err != nil {
					return nil, err
				}
			}
			return h.client, nil
		},
		Report: func(d *livedumpv1.Dump) {
			h.mu.Lock()
			h.reports = append(h.reports, d)
			h.mu.Unlock()
		},
		AgentID:   func() string { return "agent-1" },
		StableFor: 150 * time.Millisecond,
		Rescan:    25 * time.Millisecond,
		ChunkSize: 64 << 10,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// start runs a Manager built from cfg (h.config() when nil).
func (h *harness) start(cfg *Config) *Manager {
	h.t.Helper()
	c := h.config()
	if cfg != nil {
		c = *cfg
	}
	m, err := New(c)
	if err != nil {
		h.t.Fatal(err)
	}
	m.backoffMin, m.backoffMax = 5*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	h.m, h.cancel, h.done = m, cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := m.Run(ctx); err != nil {
			h.t.Error(err)
		}
	}()
	h.t.Cleanup(h.stop)
	return m
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Error("Run did not return after cancel")
	}
	h.cancel = nil
}

// wait returns the first report of the named file in the given state.
func (h *harness) wait(name string, st livedumpv1.DumpState) *livedumpv1.Dump {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if d := h.find(name, st); d != nil {
			return d
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("no %s report for %s; reports: %v", st, name, h.summary())
	return nil
}

func (h *harness) find(name string, st livedumpv1.DumpState) *livedumpv1.Dump {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.reports {
		if d.GetFileName() == name && d.GetState() == st {
			return d
		}
	}
	return nil
}

func (h *harness) states(name string) []livedumpv1.DumpState {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []livedumpv1.DumpState
	for _, d := range h.reports {
		if d.GetFileName() == name && (len(out) == 0 || out[len(out)-1] != d.GetState()) {
			out = append(out, d.GetState())
		}
	}
	return out
}

func (h *harness) summary() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, d := range h.reports {
		out = append(out, d.GetFileName()+":"+d.GetState().String()+":"+d.GetDetail())
	}
	return out
}

// waitFor polls cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tempDir is t.TempDir without its cleanup check, which fails under Wine 8
// (Go's RemoveAll uses a call Wine lacks); what is left there is harmless.
func tempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "dumptest")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
