package security

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestHole04_StalledUploadsDoNotBlockOthers: a stolen agent identity opens
// many UploadDump streams and sends nothing, and another sends a header and
// stalls. Before, each stream took one of the controller's upload slots
// before its first message and held it forever, so a legitimate agent's
// upload waited behind them. Now a slot is taken only after a valid header,
// an agent holds at most one upload stream, and silent streams are cut at
// the header and chunk deadlines.
func TestHole04_StalledUploadsDoNotBlockOthers(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.UploadSlots = 2
		cfg.Uploads.HeaderTimeout = time.Second
		cfg.Uploads.ChunkTimeout = time.Second
	})
	thief := c.EnrollRaw(t, "THIEF-01", nil)
	thief2 := c.EnrollRaw(t, "THIEF-02", nil)
	legit := c.EnrollRaw(t, "LEGIT-01", nil)

	// Eight silent streams from one stolen identity.
	type result struct {
		err  error
		took time.Duration
	}
	silent := make(chan result, 8)
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		s, err := thief.Client().UploadDump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			start := time.Now()
			// RecvMsg without CloseSend: the stream stays open, silent.
			err := s.RecvMsg(&livedumpv1.UploadDumpResponse{})
			silent <- result{err, time.Since(start)}
		}()
	}
	// A header, then nothing, from a second stolen identity.
	raw, sum := dumpContent(2 << 20)
	stalled := make(chan result, 1)
	{
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		s, err := thief2.Client().UploadDump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(header(dumpMsg("5ca1ab1e00000001", "", int64(len(raw)), sum), 0)); err != nil {
			t.Fatal(err)
		}
		go func() {
			start := time.Now()
			err := s.RecvMsg(&livedumpv1.UploadDumpResponse{})
			stalled <- result{err, time.Since(start)}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let the attack take whatever it can

	// The legitimate agent's upload goes through at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	own, ownSum := dumpContent(3 << 20)
	resp, err := upload(ctx, legit.Client(), dumpMsg("600d000000000001", "", int64(len(own)), ownSum), zstdFrames(t, own, 1<<20))
	if err != nil || resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("legitimate upload during the attack: %v %v (blocked by the attacker's streams)", resp, err)
	}

	// Every silent stream is refused: at most one per agent, and that one
	// is cut at the header deadline.
	busy, cut := 0, 0
	for range 8 {
		r := <-silent
		switch status.Code(r.err) {
		case codes.ResourceExhausted:
			busy++
		case codes.DeadlineExceeded:
			if r.took > 5*time.Second {
				t.Errorf("silent stream cut after %s, want about the 1s header deadline", r.took)
			}
			harness.WantCode(t, r.err, codes.DeadlineExceeded, "header")
			cut++
		default:
			t.Errorf("silent stream: %v, want ResourceExhausted or DeadlineExceeded", r.err)
		}
	}
	if busy != 7 || cut != 1 {
		t.Errorf("silent streams: %d refused as busy, %d cut at the deadline; want 7 and 1", busy, cut)
	}
	r := <-stalled
	harness.WantCode(t, r.err, codes.DeadlineExceeded, "chunk")
	if r.took > 5*time.Second {
		t.Errorf("stalled stream cut after %s, want about the 1s chunk deadline", r.took)
	}
	// Nothing of the stalled upload was stored, and the refusals are audited.
	if d, err := c.Store().GetDump(context.Background(), "5ca1ab1e00000001"); err == nil && (d.Committed != 0 || d.State == "uploaded") {
		t.Errorf("stalled dump stored: %+v", d)
	}
	if !auditHas(t, c, thief.ID, "UploadDump", "resourceexhausted") {
		t.Error("no audit entry for the refused concurrent upload")
	}
	if !auditHas(t, c, thief2.ID, "UploadDump", "deadlineexceeded") {
		t.Error("no audit entry for the stalled upload")
	}
}
