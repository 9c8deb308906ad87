package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/loadgen"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/testca"
)

func TestControllers(t *testing.T) {
	for in, want := range map[string][]string{
		"127.0.0.1:7443": {"127.0.0.1:7443"},
		"a:1,b:2, c:3":   {"a:1", "b:2", "c:3"},
		"a:1,,b:2,":      {"a:1", "b:2"},
		"":               nil,
	} {
		if got := controllers(in); !slices.Equal(got, want) {
			t.Errorf("controllers(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFollowCaptures: a follower times the arms of captures another client
// creates, from their creation, round after round.
func TestFollowCaptures(t *testing.T) {
	const n = 10
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := controller.New(ctx, controller.Config{Listen: "127.0.0.1:0", MetricsListen: "-", DataDir: t.TempDir(),
		Transport: controller.TransportConfig{EnrollRate: -1},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tok, err := c.CreateToken(ctx, n, time.Hour, map[string]string{"fleet": "loadgen"})
	if err != nil {
		t.Fatal(err)
	}
	fl, err := loadgen.New(loadgen.Config{Controller: c.Addr(), CA: c.CA().Pool(), Token: tok, Agents: n})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fl.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = fl.Run(rctx) }()
	defer func() { rcancel(); <-ran }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := fl.WaitConnected(wctx, n); err != nil {
		t.Fatal(err)
	}
	ca := testca.Wrap(c.CA())
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS("127.0.0.1", ca.Operator(t, pki.RoleOperator, "follow-test")))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	op := livedumpv1.NewFleetServiceClient(cc)

	type result struct {
		id  string
		lat []time.Duration
	}
	results := make(chan result, 2)
	followed := make(chan error, 1)
	go func() {
		followed <- followCaptures(ctx, fl, op, n, 2, func(_ int, id string, lat []time.Duration) error {
			results <- result{id, lat}
			return nil
		})
	}()
	for r := range 2 {
		resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
			Selector: "fleet=loadgen", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
			Expire: durationpb.New(time.Hour),
		}, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetCapture().GetId()
		var got result
		select {
		case got = <-results:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: no result", r+1)
		}
		if got.id != id || len(got.lat) != n {
			t.Fatalf("round %d: followed %s with %d arms, want %s with %d", r+1, got.id, len(got.lat), id, n)
		}
		for _, d := range got.lat {
			if d < 0 || d > 30*time.Second {
				t.Fatalf("round %d: create → arm %s", r+1, d)
			}
		}
		if _, err := op.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
}
