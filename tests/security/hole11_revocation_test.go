package security

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// zstdFrame compresses b as one zstd frame, the unit of an upload chunk.
func zstdFrame(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// TestHole11_RevokedAgentUploadEndsAtOnce is a stolen agent identity with a
// dump upload open, sending its chunks slowly. The admin revokes the agent:
// the upload must end at once with PermissionDenied, not when the thief
// chooses to finish it, and the dump must not be stored as uploaded.
func TestHole11_RevokedAgentUploadEndsAtOnce(t *testing.T) {
	c := harness.StartController(t, nil)
	thief := c.EnrollRaw(t, "STOLEN-01", nil)
	admin := c.Fleet(t, pki.RoleAdmin)

	content := bytes.Repeat([]byte("kernel memory "), 1<<14) // 224 KiB
	sum := sha256.Sum256(content)
	dumpID := "d0d0d0d0d0d0d0d1"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := thief.Client().UploadDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	half := len(content) / 2
	msgs := []*livedumpv1.UploadDumpRequest{
		{Msg: &livedumpv1.UploadDumpRequest_Header{Header: &livedumpv1.UploadDumpHeader{
			Dump: &livedumpv1.Dump{
				Id: dumpID, FileName: "kernel.dmp", Size: int64(len(content)), Sha256: hex.EncodeToString(sum[:]),
				State: livedumpv1.DumpState_DUMP_STATE_HASHED,
			},
			Compression: "zstd",
		}}},
		{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: zstdFrame(t, content[:half])}},
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			t.Fatalf("upload before revocation: %v", err)
		}
	}
	// The upload is under way on the controller.
	harness.Eventually(t, 10*time.Second, "the upload to start", func() bool {
		_, err := c.Store().GetDump(context.Background(), dumpID)
		return err == nil
	})
	time.Sleep(200 * time.Millisecond) // the first chunk is written

	if _, err := admin.RevokeAgent(context.Background(), &livedumpv1.RevokeAgentRequest{AgentId: thief.ID}); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	// Without sending anything more, the thief's stream is ended by the
	// controller: waiting for its answer returns at once.
	ended := make(chan error, 1)
	go func() { ended <- st.RecvMsg(new(livedumpv1.UploadDumpResponse)) }()
	select {
	case err := <-ended:
		harness.WantCode(t, err, codes.PermissionDenied, "revoked")
	case <-time.After(5 * time.Second):
		// Finish the upload as the thief would, to show what it achieves.
		_ = st.Send(&livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: zstdFrame(t, content[half:])}})
		_, err := st.CloseAndRecv()
		d, _ := c.Store().GetDump(context.Background(), dumpID)
		t.Fatalf("upload of revoked agent %s still open 5s after revocation; finishing it returned %v and left the dump %q", thief.ID, err, d.State)
	}

	// Nothing was stored as uploaded, and the identity is refused from now on.
	d, err := c.Store().GetDump(context.Background(), dumpID)
	if err != nil {
		t.Fatalf("get dump: %v", err)
	}
	if d.State == "uploaded" || d.Committed == d.Size {
		t.Fatalf("dump of a revoked agent stored as %q with %d of %d bytes", d.State, d.Committed, d.Size)
	}
	st2, err := thief.Client().UploadDump(context.Background())
	if err == nil {
		_, err = st2.CloseAndRecv()
	}
	harness.WantCode(t, err, codes.PermissionDenied, "revoked")
}

// TestHole11_RevokedAgentEveryStreamEnds holds a Connect stream and an
// upload of the same stolen identity open: revocation ends both.
func TestHole11_RevokedAgentEveryStreamEnds(t *testing.T) {
	c := harness.StartController(t, nil)
	thief := c.EnrollRaw(t, "STOLEN-02", nil)
	other := c.EnrollRaw(t, "INNOCENT-01", nil)
	admin := c.Fleet(t, pki.RoleAdmin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	connect := func(r *harness.RawAgent) livedumpv1.AgentService_ConnectClient {
		cs, err := r.Client().Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{
			AgentId: r.ID, Inventory: harness.Inventory("HOST"),
		}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Recv(); err != nil { // welcome
			t.Fatalf("welcome: %v", err)
		}
		return cs
	}
	thiefStream := connect(thief)
	otherStream := connect(other)
	up, err := thief.Client().UploadDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The header alone holds the stream open; the agent sends nothing else.
	_ = up.Send(&livedumpv1.UploadDumpRequest{Msg: &livedumpv1.UploadDumpRequest_Header{Header: &livedumpv1.UploadDumpHeader{
		Dump:        &livedumpv1.Dump{Id: "d0d0d0d0d0d0d0d2", Size: 1 << 20, Sha256: hex.EncodeToString(make([]byte, 32)), State: livedumpv1.DumpState_DUMP_STATE_HASHED},
		Compression: "zstd",
	}}})
	time.Sleep(300 * time.Millisecond)

	if _, err := admin.RevokeAgent(context.Background(), &livedumpv1.RevokeAgentRequest{AgentId: thief.ID}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	results := make(chan error, 2)
	go func() {
		for {
			if _, err := thiefStream.Recv(); err != nil {
				results <- err
				return
			}
		}
	}()
	go func() { results <- up.RecvMsg(new(livedumpv1.UploadDumpResponse)) }()
	for i := range 2 {
		select {
		case err := <-results:
			harness.WantCode(t, err, codes.PermissionDenied, "revoked")
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 2 streams of revoked agent %s still open 5s after revocation", 2-i, thief.ID)
		}
	}
	// The other agent's stream is untouched.
	if err := otherStream.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Heartbeat{Heartbeat: &livedumpv1.Heartbeat{}}}); err != nil {
		t.Fatalf("another agent's stream was ended too: %v", err)
	}
	resp, err := admin.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.GetAgents() {
		if a.GetId() == other.ID && a.GetState() != livedumpv1.AgentState_AGENT_STATE_ONLINE {
			t.Fatalf("innocent agent %s is %v after another agent's revocation", other.ID, a.GetState())
		}
	}
}
