package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// openH2 opens a TLS connection (with cert, if any), speaks the HTTP/2
// preface and waits for the server's SETTINGS: the controller serves it.
func openH2(c *harness.Controller, cert *tls.Certificate) (*tls.Conn, *http2.Framer, error) {
	cfg := anonymousTLS(c)
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.Addr(), cfg)
	if err != nil {
		return nil, nil, err
	}
	fr := http2.NewFramer(conn, conn)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := fr.WriteSettings(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := fr.ReadFrame()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if _, ok := f.(*http2.SettingsFrame); !ok {
		conn.Close()
		return nil, nil, errors.New("first frame is not SETTINGS")
	}
	return conn, fr, nil
}

// closedWithin reports whether the server closes conn within d; it reads
// and discards whatever the server sends meanwhile.
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// goroutinesSettle waits until the goroutine count stops moving and returns it.
func goroutinesSettle() int {
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// TestHole03_NoHealthWatchWithoutCertificate: one connection without a
// certificate opens thousands of health Watch streams. Every one is refused
// (Unauthenticated); the controller holds no goroutine for them. Check stays
// open for load balancers and a certificate holder may still Watch.
func TestHole03_NoHealthWatchWithoutCertificate(t *testing.T) {
	c := harness.StartController(t, nil)
	hc := healthpb.NewHealthClient(c.Dial(t, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check without a certificate = %v, %v; want SERVING", resp, err)
	}
	base := goroutinesSettle()

	const streams = 3000
	errs := make(chan error, streams)
	for range streams {
		go func() {
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = w.Recv()
			}
			errs <- err
		}()
	}
	// Refused by the authorizer, or earlier when more than a few calls are
	// in flight on a connection without a certificate.
	refused, unauthenticated, reported := 0, 0, 0
	for range streams {
		err := <-errs
		switch status.Code(err) {
		case codes.Unauthenticated:
			if !strings.Contains(status.Convert(err).Message(), "Watch requires a client certificate") {
				t.Errorf("refusal %q does not say Watch needs a certificate", status.Convert(err).Message())
			}
			unauthenticated++
			refused++
			continue
		case codes.ResourceExhausted:
			refused++
			continue
		}
		if reported++; reported <= 3 {
			t.Errorf("Watch without a certificate: %v, want Unauthenticated (or ResourceExhausted)", err)
		}
	}
	t.Logf("%d Watch streams: %d refused Unauthenticated, %d ResourceExhausted", streams, unauthenticated, refused-unauthenticated)
	if refused != streams || unauthenticated == 0 {
		t.Errorf("%d of %d Watch streams refused (%d Unauthenticated), want all", refused, streams, unauthenticated)
	}
	if held := goroutinesSettle() - base; held > 100 {
		t.Errorf("%d goroutines more than before the attack, want <= 100", held)
	}

	// An enrolled agent may still Watch.
	agent := c.EnrollRaw(t, "GOOD-01", nil)
	w, err := healthpb.NewHealthClient(agent.Conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		var resp *healthpb.HealthCheckResponse
		resp, err = w.Recv()
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("agent Watch: %v", resp.GetStatus())
		}
	}
	if err != nil {
		t.Errorf("agent Watch: %v", err)
	}
}

// TestHole03_StreamFloodOnOneConnectionIsCapped: a hostile HTTP/2 client
// ignores SETTINGS_MAX_CONCURRENT_STREAMS and opens thousands of Enroll
// streams that never send their request. The controller refuses the
// streams past its limit and holds a bounded number of goroutines.
func TestHole03_StreamFloodOnOneConnectionIsCapped(t *testing.T) {
	c := harness.StartController(t, nil)
	base := goroutinesSettle()
	conn, fr, err := openH2(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var refused atomic.Int64
	go func() {
		ended := map[uint32]bool{}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			// Refused: reset, or answered at once with an error status.
			switch f := f.(type) {
			case *http2.RSTStreamFrame, *http2.HeadersFrame:
				if h, ok := f.(*http2.HeadersFrame); ok && !h.StreamEnded() {
					continue
				}
				if id := f.Header().StreamID; !ended[id] {
					ended[id] = true
					refused.Add(1)
				}
			}
		}
	}()
	const streams = 3000
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range streams {
		hb.Reset()
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "https"}, {":path", livedumpv1.AgentService_Enroll_FullMethodName},
			{":authority", "127.0.0.1"}, {"content-type", "application/grpc"}, {"te", "trailers"},
		} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	harness.Eventually(t, 10*time.Second, "refused streams", func() bool { return refused.Load() > 0 })
	time.Sleep(500 * time.Millisecond)
	held := goroutinesSettle() - base
	t.Logf("%d of %d streams refused; %d goroutines held", refused.Load(), streams, held)
	if held > controller.DefaultMaxStreamsPerConnection+100 {
		t.Errorf("one connection holds %d goroutines, want <= %d", held, controller.DefaultMaxStreamsPerConnection+100)
	}
	if refused.Load() < streams-controller.DefaultMaxStreamsPerConnection-10 {
		t.Errorf("%d streams refused, want >= %d", refused.Load(), streams-controller.DefaultMaxStreamsPerConnection-10)
	}
}

// TestHole03_IdleAnonymousConnectionsAreClosed: a hundred TLS connections
// without a certificate sit idle; the controller closes them within its
// idle limit. A connection with a certificate stays.
func TestHole03_IdleAnonymousConnectionsAreClosed(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Transport.AnonymousIdleTimeout = time.Second
	})
	const conns = 100
	var wg sync.WaitGroup
	var closed atomic.Int64
	for range conns {
		conn, _, err := openH2(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedWithin(conn, 4*time.Second) {
				closed.Add(1)
			}
		}()
	}
	op, _, err := openH2(c, c.Issue(t, pki.OperatorIdentity(pki.RoleViewer, "idle-viewer")))
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	wg.Wait()
	if closed.Load() != conns {
		t.Errorf("%d of %d idle connections without a certificate closed within 4s, want all", closed.Load(), conns)
	}
	if closedWithin(op, time.Second) {
		t.Error("the idle connection of an operator was closed too")
	}
}

// TestHole03_BusyAnonymousConnectionLivesBoundedTime: a connection without
// a certificate that keeps calling health Check is still closed after the
// anonymous lifetime; the client reconnects and carries on.
func TestHole03_BusyAnonymousConnectionLivesBoundedTime(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Transport.AnonymousMaxLifetime = time.Second
	})
	var dials atomic.Int64
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	cc, err := grpc.NewClient(c.Addr(), grpc.WithContextDialer(dialer), grpc.WithTransportCredentials(credentials.NewTLS(anonymousTLS(c))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	for end := time.Now().Add(3500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		_, _ = hc.Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	}
	if dials.Load() < 3 {
		t.Errorf("a busy connection without a certificate was dialled %d times in 3.5s with a 1s lifetime, want >= 3", dials.Load())
	}
}

// TestHole03_HandshakeDeadline: clients that connect and then send nothing,
// or half a ClientHello, are disconnected after the handshake deadline.
func TestHole03_HandshakeDeadline(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Transport.HandshakeTimeout = time.Second
	})
	for _, prefix := range [][]byte{nil, {0x16, 0x03, 0x01}} {
		conn, err := net.Dial("tcp", c.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(prefix); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if !closedWithin(conn, 5*time.Second) {
			t.Errorf("a client that sent %d bytes was not disconnected within 5s (deadline 1s)", len(prefix))
		} else {
			t.Logf("sent %d bytes: disconnected after %s", len(prefix), time.Since(start).Round(10*time.Millisecond))
		}
	}
}

// TestHole03_ConnectionCaps: connections without a certificate are capped
// on their own, so they cannot crowd out agents and operators; the overall
// cap refuses the connection past it, and room comes back as others close.
func TestHole03_ConnectionCaps(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Transport.MaxConnections = 20
		cfg.Transport.MaxAnonymousConnections = 10
		cfg.Transport.AnonymousIdleTimeout = time.Minute
	})
	ctx := context.Background()
	var anon []net.Conn
	for i := range 10 {
		conn, _, err := openH2(c, nil)
		if err != nil {
			t.Fatalf("anonymous connection %d: %v", i+1, err)
		}
		defer conn.Close()
		anon = append(anon, conn)
	}
	// The 11th connection without a certificate is closed after its handshake.
	if conn, _, err := openH2(c, nil); err == nil {
		defer conn.Close()
		if !closedWithin(conn, 3*time.Second) {
			t.Error("the 11th connection without a certificate was served (cap 10)")
		}
	}
	// Operators still get in: fill the overall cap with certificate holders.
	viewer := c.Issue(t, pki.OperatorIdentity(pki.RoleViewer, "cap-viewer"))
	var ops []net.Conn
	for i := range 10 {
		conn, _, err := openH2(c, viewer)
		if err != nil {
			t.Fatalf("operator connection %d (of 20 in all): %v", i+1, err)
		}
		defer conn.Close()
		ops = append(ops, conn)
	}
	// The 21st connection is refused, whoever it is.
	if conn, _, err := openH2(c, viewer); err == nil {
		defer conn.Close()
		if !closedWithin(conn, 3*time.Second) {
			t.Error("the 21st connection was served (cap 20)")
		}
	}
	if got := counterValue(t, c.Metrics, "livedump_controller_connections_refused_total", map[string]string{"reason": "max_connections"}); got < 1 {
		t.Errorf("connections_refused_total{reason=max_connections} = %v, want >= 1", got)
	}
	if got := counterValue(t, c.Metrics, "livedump_controller_connections_refused_total", map[string]string{"reason": "max_anonymous_connections"}); got < 1 {
		t.Errorf("connections_refused_total{reason=max_anonymous_connections} = %v, want >= 1", got)
	}
	// Room comes back when connections close.
	for _, conn := range append(anon[:5], ops[:5]...) {
		conn.Close()
	}
	admin := c.Fleet(t, pki.RoleAdmin)
	harness.Eventually(t, 5*time.Second, "an admin call once connections closed", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := admin.ListAgents(cctx, &livedumpv1.ListAgentsRequest{})
		return err == nil
	})
}
