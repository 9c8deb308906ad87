package integration

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/livedump/livedump/tests/testca"
)

// BenchmarkTLSLoopback is the ceiling for dump uploads on this machine: one
// TLS 1.3 stream over loopback with 1 MiB writes, both ends in one process,
// the way PERF-NOTES measured it. Run:
//
//	go test ./tests/integration -run '^$' -bench TLSLoopback -benchtime 2048x
func BenchmarkTLSLoopback(b *testing.B) {
	ca := testca.New(b, testca.Options{Name: "bench", TTL: time.Hour})
	l, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerTLS(ca.Server(b, "localhost"), tls.NoClientCert))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := tls.Client(raw, ca.ClientTLS("localhost", nil))
	defer c.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
