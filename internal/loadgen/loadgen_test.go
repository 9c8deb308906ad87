package loadgen_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// TestFleetAgainstARealController runs 50 simulated agents against a real
// controller: enrollment, streams, an arm directive to every agent, events
// up to the per-agent cap stored and acknowledged, and identities reused
// from the state file by a second fleet.
func TestFleetAgainstARealController(t *testing.T) {
	const n, perAgent = 50, 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	// The load generator enrolls a whole fleet from a few loopback
	// addresses, as no real rollout does: the per-source Enroll limit is off.
	c, err := controller.New(ctx, controller.Config{Listen: "127.0.0.1:0", MetricsListen: "-", DataDir: dir,
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
	state := filepath.Join(dir, "ids.json")
	fl, err := loadgen.New(loadgen.Config{Controller: c.Addr(), CA: c.CA().Pool(), Token: tok, Agents: n, EventRate: 50,
		StateFile: state, SourceIPs: []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := fl.Enroll(ctx)
	if err != nil || st.Enrolled != n {
		t.Fatalf("enrolled %d of %d: %v", st.Enrolled, n, err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = fl.Run(rctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := fl.WaitConnected(wctx, n); err != nil {
		t.Fatal(err)
	}

	op := operator(t, c)
	resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "fleet=loadgen", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		PerAgentCap: perAgent, Expire: durationpb.New(time.Hour),
	}, Force: true}) // simulated agents report no provisioning state
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	deadline := time.Now().Add(30 * time.Second)
	for (len(fl.ArmTimes(id)) < n || fl.Stats().EventsAcked < n*perAgent) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(fl.ArmTimes(id)); got != n {
		t.Fatalf("%d agents armed, want %d", got, n)
	}
	if s := fl.Stats(); s.EventsSent != n*perAgent || s.EventsAcked != n*perAgent {
		t.Fatalf("events sent %d, acked %d, want %d each (the per-agent cap)", s.EventsSent, s.EventsAcked, n*perAgent)
	}
	got, err := op.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetCapture().GetEvents() != n*perAgent {
		t.Fatalf("controller stored %d events, want %d", got.GetCapture().GetEvents(), n*perAgent)
	}
	rcancel()
	<-ran

	// A second fleet from the state file needs no token.
	again, err := loadgen.New(loadgen.Config{Controller: c.Addr(), CA: c.CA().Pool(), Agents: n, StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := again.Enroll(ctx); err != nil || st.Enrolled != 0 {
		t.Fatalf("second fleet enrolled %d: %v", st.Enrolled, err)
	}
}

// TestFleetOverSeveralControllers gives the fleet two addresses, each a TCP
// relay to one real controller: the agents spread over both, and when one
// address goes away its agents come back through the other.
func TestFleetOverSeveralControllers(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	c, err := controller.New(ctx, controller.Config{Listen: "127.0.0.1:0", MetricsListen: "-", DataDir: dir,
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
	a, b := startRelay(t, c.Addr()), startRelay(t, c.Addr())
	fl, err := loadgen.New(loadgen.Config{Controllers: []string{a.addr, b.addr}, CA: c.CA().Pool(), Token: tok, Agents: n,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := fl.Enroll(ctx); err != nil || st.Enrolled != n {
		t.Fatalf("enrolled %d of %d: %v", st.Enrolled, n, err)
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
	// The enrollments' connections close on their own time.
	want := [2]int64{n / 2, n / 2}
	got := [2]int64{a.open.Load(), b.open.Load()}
	for deadline := time.Now().Add(10 * time.Second); got != want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		got = [2]int64{a.open.Load(), b.open.Load()}
	}
	if got != want {
		t.Fatalf("connections through the two addresses %v, want %v", got, want)
	}
	if fl.Stats().FailedDials != 0 {
		t.Fatalf("%d failed attempts with both addresses up", fl.Stats().FailedDials)
	}

	a.stop()
	deadline := time.Now().Add(30 * time.Second)
	for (b.open.Load() < n || fl.Stats().Connected < n) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := fl.Stats()
	if b.open.Load() != n || st.Connected != n {
		t.Fatalf("after the first address went away: %d connections through the second, %d agents connected, want %d", b.open.Load(), st.Connected, n)
	}
	if st.Reconnects != n/2 || st.FailedDials < n/2 {
		t.Fatalf("reconnects %d (want %d), failed attempts %d (want at least %d: each moved agent tried its own address again first)",
			st.Reconnects, n/2, st.FailedDials, n/2)
	}
}

// relay forwards TCP connections to a controller, so that one controller
// can be reached at several addresses, one of which can go away.
type relay struct {
	addr string
	open atomic.Int64
	stop func()
}

func startRelay(t *testing.T, to string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: l.Addr().String()}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if add && conns == nil {
			return false
		}
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			l.Close()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			conns = nil
			mu.Unlock()
		})
	}
	t.Cleanup(r.stop)
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", to)
			if err != nil || !track(in, true) {
				in.Close()
				if out != nil {
					out.Close()
				}
				continue
			}
			track(out, true)
			r.open.Add(1)
			go func() {
				defer r.open.Add(-1)
				var wg sync.WaitGroup
				wg.Add(2)
				pipe := func(dst, src net.Conn) {
					defer wg.Done()
					_, _ = io.Copy(dst, src)
					dst.Close()
					src.Close()
				}
				go pipe(out, in)
				go pipe(in, out)
				wg.Wait()
				track(in, false)
				track(out, false)
			}()
		}
	}()
	return r
}

func operator(t *testing.T, c *controller.Controller) livedumpv1.FleetServiceClient {
	t.Helper()
	ca := testca.Wrap(c.CA())
	cert := ca.Operator(t, pki.RoleOperator, "loadgen-test")
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS("127.0.0.1", cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return livedumpv1.NewFleetServiceClient(cc)
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := loadgen.Percentile(ds, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if loadgen.Percentile(nil, 50) != 0 {
		t.Error("Percentile of nothing is not 0")
	}
}
