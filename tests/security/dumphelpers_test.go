package security

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// dumpContent returns n bytes that look like a dump (some random pages,
// the rest zero) and their SHA-256.
func dumpContent(n int) ([]byte, string) {
	b := make([]byte, n)
	_, _ = rand.Read(b[:n/4])
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// zstdFrames splits raw into independent zstd frames of chunk raw bytes, as
// the agent sends them.
func zstdFrames(t testing.TB, raw []byte, chunk int) [][]byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i := 0; i < len(raw); i += chunk {
		out = append(out, enc.EncodeAll(raw[i:min(i+chunk, len(raw))], nil))
	}
	return out
}

// dumpMsg is a dump as an agent describes it in a report or header.
func dumpMsg(id, captureID string, size int64, sum string) *livedumpv1.Dump {
	return &livedumpv1.Dump{Id: id, CaptureId: captureID, FileName: "DTRACE-20261126-1000.dmp", Size: size, Sha256: sum,
		State: livedumpv1.DumpState_DUMP_STATE_UPLOADING, Written: timestamppb.Now()}
}

// header is the first message of an upload.
func header(d *livedumpv1.Dump, offset int64) *livedumpv1.UploadDumpRequest {
	return &livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Header{Header: &livedumpv1.UploadDumpHeader{
		Dump: d, Offset: offset, Compression: "zstd"}}}
}

func chunkMsg(b []byte) *livedumpv1.UploadDumpRequest {
	return &livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: b}}
}

// upload sends a header and frames and returns the controller's answer.
func upload(ctx context.Context, c livedumpv1.AgentServiceClient, d *livedumpv1.Dump, frames [][]byte) (*livedumpv1.UploadDumpResponse, error) {
	s, err := c.UploadDump(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(header(d, 0)); err != nil {
		return s.CloseAndRecv()
	}
	for _, f := range frames {
		if err := s.Send(chunkMsg(f)); err != nil {
			return s.CloseAndRecv()
		}
	}
	return s.CloseAndRecv()
}

// uploadAll uploads raw completely as dump id and fails the test unless the
// controller verified it.
func uploadAll(t testing.TB, r *harness.RawAgent, id, captureID string, raw []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := upload(ctx, r.Client(), dumpMsg(id, captureID, int64(len(raw)), sha256Hex(raw)), zstdFrames(t, raw, 1<<20))
	if err != nil || resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("legitimate upload of %s: %v %v", id, resp, err)
	}
}

// connect opens the agent's Connect stream and says Hello with inv.
func connect(t testing.TB, r *harness.RawAgent, inv *livedumpv1.Inventory) livedumpv1.AgentService_ConnectClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := r.Client().Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: r.ID, Inventory: inv}}}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("connect %s: %v %v", r.ID, m, err)
	}
	return s
}

// report sends dump reports on s, then a harmless marker report, and waits
// until the controller has stored the marker: reports are handled in
// order, so every report before it has been handled too.
func report(t testing.TB, c *harness.Controller, s livedumpv1.AgentService_ConnectClient, ds ...*livedumpv1.Dump) {
	t.Helper()
	marker := fmt.Sprintf("%016x", time.Now().UnixNano())
	ds = append(ds, &livedumpv1.Dump{Id: marker, FileName: "MARKER-20261126-1000.dmp", State: livedumpv1.DumpState_DUMP_STATE_WRITING})
	for _, d := range ds {
		if err := s.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_DumpReport{DumpReport: &livedumpv1.DumpReport{Dump: d}}}); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 10*time.Second, "the marker report", func() bool {
		_, err := c.Store().GetDump(context.Background(), marker)
		return err == nil
	})
}

// auditHas reports whether the audit log holds an entry by actorID (an
// agent ID) for action whose outcome contains substr.
func auditHas(t testing.TB, c *harness.Controller, agentID, action, substr string) bool {
	t.Helper()
	es, err := c.Store().ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.Contains(e.Actor, agentID) && strings.Contains(e.Action, action) && strings.Contains(e.Outcome, substr) {
			return true
		}
	}
	return false
}

// noDump fails unless the store has no dump id, or has it in none of the
// states that hold or promise content.
func notUploaded(t testing.TB, c *harness.Controller, id string) {
	t.Helper()
	d, err := c.Store().GetDump(context.Background(), id)
	if err == nil && d.State == "uploaded" {
		t.Fatalf("dump %s is %s with sha256 %s: the attack was accepted", id, d.State, d.SHA256)
	}
}
