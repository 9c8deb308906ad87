package security

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/controller"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// partial is where the filesystem blob store keeps a partial upload.
func partial(c *harness.Controller, id string) string {
	return filepath.Join(c.DataDir, "blobs", "uploads", id+".part")
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestHole05_CompressionBombStopsAtTheAnnouncedSize: zstd frames of zeros
// expand a thousandfold. The controller writes nothing past the size the
// dump announced, refuses the frame that would pass it, and refuses a frame
// that expands past the per-chunk bound without decoding it whole.
func TestHole05_CompressionBombStopsAtTheAnnouncedSize(t *testing.T) {
	c := harness.StartController(t, nil)
	thief := c.EnrollRaw(t, "THIEF-01", nil)
	zeros := make([]byte, 8<<20)
	frames := zstdFrames(t, zeros, 1<<20) // 8 frames of 1 MiB, a few hundred bytes each

	// Announce 2 MiB, send 8 MiB worth of frames.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := upload(ctx, thief.Client(), dumpMsg("b0b0000000000001", "", 2<<20, sha256Hex(zeros[:2<<20])), frames)
	harness.WantCode(t, err, codes.InvalidArgument, "announced")
	if n := fileSize(partial(c, "b0b0000000000001")); n > 2<<20 {
		t.Errorf("%d bytes written for a dump announced as %d", n, 2<<20)
	}
	notUploaded(t, c, "b0b0000000000001")

	// One frame that expands to 64 MiB.
	big := zstdFrames(t, make([]byte, 64<<20), 64<<20)
	_, err = upload(ctx, thief.Client(), dumpMsg("b0b0000000000002", "", 64<<20, sha256Hex(make([]byte, 64<<20))), big)
	harness.WantCode(t, err, codes.InvalidArgument, "chunk")
	if n := fileSize(partial(c, "b0b0000000000002")); n != 0 {
		t.Errorf("%d bytes written from an oversized frame", n)
	}
}

// TestHole05_AnnouncedSizeBeyondMemoryIsRefused: a live kernel dump cannot
// be larger than the machine's memory. A stolen identity whose machine
// reported 256 MiB announces 1 GiB, and an agent of unknown memory
// announces more than the configured maximum: both are refused at the
// header, before any row is admitted or byte stored.
func TestHole05_AnnouncedSizeBeyondMemoryIsRefused(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) { cfg.Uploads.MaxSize = 512 << 20 })
	thief := c.EnrollRaw(t, "THIEF-01", nil)
	inv := harness.Inventory("THIEF-01")
	inv.MemoryBytes = 256 << 20
	connect(t, thief, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	zeros := zstdFrames(t, make([]byte, 1<<20), 1<<20)

	_, err := upload(ctx, thief.Client(), dumpMsg("b1b1000000000001", "", 1<<30, sha256Hex([]byte("x"))), zeros)
	harness.WantCode(t, err, codes.InvalidArgument, "dump.size")
	harness.WantCode(t, err, codes.InvalidArgument, "memory")

	other := c.EnrollRaw(t, "THIEF-02", nil) // memory unknown
	_, err = upload(ctx, other.Client(), dumpMsg("b1b1000000000002", "", 600<<20, sha256Hex([]byte("x"))), zeros)
	harness.WantCode(t, err, codes.InvalidArgument, "dump.size")
	harness.WantCode(t, err, codes.InvalidArgument, "maximum")

	for _, id := range []string{"b1b1000000000001", "b1b1000000000002"} {
		if d, err := c.Store().GetDump(ctx, id); err == nil {
			t.Errorf("dump %s recorded after a refused header: %+v", id, d)
		}
		if n := fileSize(partial(c, id)); n != 0 {
			t.Errorf("dump %s: %d bytes stored", id, n)
		}
	}
	if !auditHas(t, c, thief.ID, "UploadDump", "dump.size") {
		t.Error("the refused announcement is not audited")
	}
}

// TestHole05_QuotasRefuseUploads: per-agent and total byte quotas stop a
// stolen identity (or many) from filling the controller's disk.
func TestHole05_QuotasRefuseUploads(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Uploads.QuotaPerAgent = 4 << 20
		cfg.Uploads.QuotaTotal = 5 << 20
	})
	a := c.EnrollRaw(t, "THIEF-01", nil)
	b := c.EnrollRaw(t, "THIEF-02", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	raw, _ := dumpContent(2 << 20)
	uploadAll(t, a, "c0c0000000000001", "", raw)
	raw3, sum3 := dumpContent(3 << 20)
	_, err := upload(ctx, a.Client(), dumpMsg("c0c0000000000002", "", int64(len(raw3)), sum3), zstdFrames(t, raw3, 1<<20))
	harness.WantCode(t, err, codes.ResourceExhausted, "quota")

	rawB, _ := dumpContent(2 << 20)
	uploadAll(t, b, "c0c0000000000003", "", rawB)
	rawB2, sumB2 := dumpContent(2 << 20)
	_, err = upload(ctx, b.Client(), dumpMsg("c0c0000000000004", "", int64(len(rawB2)), sumB2), zstdFrames(t, rawB2, 1<<20))
	harness.WantCode(t, err, codes.ResourceExhausted, "quota")

	for _, id := range []string{"c0c0000000000002", "c0c0000000000004"} {
		notUploaded(t, c, id)
		if n := fileSize(partial(c, id)); n != 0 {
			t.Errorf("dump %s: %d bytes stored over the quota", id, n)
		}
		if ok, _ := c.Store().GetDump(ctx, id); ok.Committed != 0 {
			t.Errorf("dump %s: %d bytes committed over the quota", id, ok.Committed)
		}
	}
	if !auditHas(t, c, a.ID, "UploadDump", "quota") {
		t.Error("the quota refusal is not audited")
	}
}

// TestHole05_AbandonedPartialUploadsAreRemoved: a partial upload that makes
// no progress for the configured time is removed, and its record says so.
func TestHole05_AbandonedPartialUploadsAreRemoved(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) { cfg.Uploads.PartialTTL = time.Second })
	thief := c.EnrollRaw(t, "THIEF-01", nil)
	raw, sum := dumpContent(8 << 20)
	frames := zstdFrames(t, raw, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := thief.Client().UploadDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(header(dumpMsg("d0d0000000000001", "", int64(len(raw)), sum), 0)); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames[:5] {
		if err := s.Send(chunkMsg(f)); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 10*time.Second, "4 MiB committed", func() bool {
		d, err := c.Store().GetDump(context.Background(), "d0d0000000000001")
		return err == nil && d.Committed >= 4<<20
	})
	cancel() // the attacker walks away
	if fileSize(partial(c, "d0d0000000000001")) == 0 {
		t.Fatal("no partial upload to expire")
	}
	harness.Eventually(t, 15*time.Second, "the abandoned partial upload removed", func() bool {
		_, err := os.Stat(partial(c, "d0d0000000000001"))
		d, derr := c.Store().GetDump(context.Background(), "d0d0000000000001")
		return os.IsNotExist(err) && derr == nil && d.Committed == 0 && d.State == "failed"
	})
	if off, err := thief.Client().DumpOffset(context.Background(), &livedumpv1.DumpOffsetRequest{DumpId: "d0d0000000000001"}); err != nil || off.GetCommitted() != 0 {
		t.Fatalf("offset after expiry: %v %v, want 0", off, err)
	}
}
