package dumps

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestReportRules: an agent speaks only of its own dumps, links them only
// to captures that target it, never calls a dump uploaded, and never
// changes a dump's hash, size or capture once reported.
func TestReportRules(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	raw, sum := content(1 << 20)
	_, other := content(1 << 20)
	d := dumpOf("eeeeeeee01", raw, sum)
	if err := f.r.Report(ctx, "agent-1", d); err != nil {
		t.Fatal(err)
	}
	with := func(edit func(d *livedumpv1.Dump)) *livedumpv1.Dump {
		c := dumpOf("eeeeeeee01", raw, sum)
		edit(c)
		return c
	}
	for _, tc := range []struct {
		name  string
		agent string
		d     *livedumpv1.Dump
		code  codes.Code
		field string
	}{
		{"another agent's dump", "agent-2", d, codes.PermissionDenied, "another agent"},
		{"uploaded", "agent-1", with(func(d *livedumpv1.Dump) { d.State = livedumpv1.DumpState_DUMP_STATE_UPLOADED }), codes.InvalidArgument, "dump.state"},
		{"another hash", "agent-1", with(func(d *livedumpv1.Dump) { d.Sha256 = other }), codes.InvalidArgument, "dump.sha256"},
		{"another size", "agent-1", with(func(d *livedumpv1.Dump) { d.Size++ }), codes.InvalidArgument, "dump.size"},
		{"another capture", "agent-1", with(func(d *livedumpv1.Dump) { d.CaptureId = "c-2" }), codes.InvalidArgument, "dump.capture_id"},
		{"not a target", "agent-3", &livedumpv1.Dump{Id: "eeeeeeee02", CaptureId: "c-1"}, codes.PermissionDenied, "not a target"},
		{"unknown capture", "agent-1", &livedumpv1.Dump{Id: "eeeeeeee03", CaptureId: "nope"}, codes.PermissionDenied, "not a target"},
		{"a new dump reported uploaded", "agent-1", &livedumpv1.Dump{Id: "eeeeeeee04", Size: 1, Sha256: sum, State: livedumpv1.DumpState_DUMP_STATE_UPLOADED}, codes.InvalidArgument, "dump.state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.r.Report(ctx, tc.agent, tc.d)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Fatalf("%v, want %v naming %s", err, tc.code, tc.field)
			}
		})
	}
	got, err := f.st.GetDump(ctx, "eeeeeeee01")
	if err != nil || got.SHA256 != sum || got.Size != int64(len(raw)) || got.CaptureID != "c-1" || got.State == StateUploaded {
		t.Fatalf("after refused reports: %+v %v", got, err)
	}
	for _, id := range []string{"eeeeeeee02", "eeeeeeee03", "eeeeeeee04"} {
		if _, err := f.st.GetDump(ctx, id); err == nil {
			t.Errorf("refused report of %s was stored", id)
		}
	}
	// A report while the file is rehashed (no hash yet) keeps the hash.
	if err := f.r.Report(ctx, "agent-1", with(func(d *livedumpv1.Dump) { d.Sha256, d.Size, d.State = "", 5, livedumpv1.DumpState_DUMP_STATE_WRITING })); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.st.GetDump(ctx, "eeeeeeee01"); got.SHA256 != sum || got.Size != int64(len(raw)) {
		t.Fatalf("hash or size changed by a report without a hash: %+v", got)
	}
}

// TestSweepExpiresStalePartialUploads: a partial upload with no progress
// for the TTL is removed from the blob store and the dump record, on every
// backend; the agent then starts again from 0 and succeeds.
func TestSweepExpiresStalePartialUploads(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		blobs := b.open(t)
		f := newFixtureWith(t, blobs)
		r, err := New(Config{Store: f.st, Blobs: blobs, Bounds: Bounds{PartialTTL: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		raw, sum := content(10 << 20)
		d := dumpOf("ffffffff01", raw, sum)
		msgs := messages(t, d, raw, 0, 1<<20)
		if err := f.uploadWith(r, "agent-1", &fakeStream{msgs: msgs[:10], cut: status.Error(codes.Unavailable, "gone")}); err == nil {
			t.Fatal("cut upload succeeded")
		}
		committed := f.committed(d.GetId())
		if committed == 0 {
			t.Fatal("nothing committed to expire")
		}
		time.Sleep(20 * time.Millisecond)
		if n := r.Sweep(context.Background()); n != 1 {
			t.Fatalf("Sweep removed %d uploads, want 1", n)
		}
		rec, _ := f.st.GetDump(context.Background(), d.GetId())
		if rec.Committed != 0 || rec.State != StateFailed || rec.Detail == "" {
			t.Fatalf("record after expiry: %+v", rec)
		}
		// Nothing is left to resume from.
		u, err := b.open(t).Upload(context.Background(), d.GetId(), sum, int64(len(raw)), committed)
		if err != nil || u.Offset() != 0 {
			t.Fatalf("the partial upload survived the sweep: %v", err)
		}
		u.Close()
		s := &fakeStream{msgs: messages(t, d, raw, 0, 1<<20)}
		if err := f.uploadWith(r, "agent-1", s); err != nil || s.resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			t.Fatalf("upload from 0 after expiry: %v %v", err, s.resp)
		}
		if n := r.Sweep(context.Background()); n != 0 {
			t.Fatalf("Sweep removed %d uploaded dumps", n)
		}
		if got := download(t, f.r, d.GetId(), 0); len(got) != len(raw) {
			t.Fatalf("downloaded %d bytes", len(got))
		}
	})
}
