package integration

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
)

// BenchmarkTLSLoopback is the ceiling for dump uploads on this machine: one
// TLS 1.3 stream over loopback with 1 MiB writes, both ends in one process,
// the way PERF-NOTES measured it. Run:
//
//	go test ./tests/integration -run '^$' -bench TLSLoopback -benchtime 2048x
func BenchmarkTLSLoopback(b *testing.B) {
	ca, err := pki.NewCA("bench", time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	key, _ := pki.GenerateKey()
	cert, err := ca.SignServer(key.Public(), []string{"localhost"}, nil, time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}})
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
	c := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: "localhost"})
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
