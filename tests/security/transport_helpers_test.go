package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/livedump/livedump/tests/harness"
	"github.com/livedump/livedump/tests/testca"
)

// Helpers of the attacks without a certificate (holes 2, 3 and 15).

// counterValue is the value of a controller counter with exactly these
// labels, or 0 when it does not exist.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// anonymousTLS is the TLS configuration of a client without a certificate
// that trusts the controller.
func anonymousTLS(c *harness.Controller) *tls.Config {
	cfg := testca.Wrap(c.CA()).ClientTLS("127.0.0.1", nil)
	cfg.NextProtos = []string{"h2"}
	return cfg
}

// dialFrom connects to the controller without a certificate from another
// loopback source address, so per-source limits of the attacker do not
// touch the test's legitimate clients on 127.0.0.1.
func dialFrom(t testing.TB, c *harness.Controller, source string) *grpc.ClientConn {
	t.Helper()
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
		return d.DialContext(ctx, "tcp", addr)
	}
	cc, err := grpc.NewClient(c.Addr(), grpc.WithContextDialer(dialer),
		grpc.WithTransportCredentials(credentials.NewTLS(anonymousTLS(c))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// logBuffer collects a controller's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
