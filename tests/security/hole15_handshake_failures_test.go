package security

import (
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/tests/harness"
	"github.com/livedump/livedump/tests/testca"
)

// TestHole15_FailedHandshakesAreCountedAndLogged: a client certificate from
// another CA, plain garbage, and a client that never finishes its handshake
// each fail the TLS handshake; each failure is counted by reason and logged
// (rate-limited) with the source address.
func TestHole15_FailedHandshakesAreCountedAndLogged(t *testing.T) {
	logs := &logBuffer{}
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.Transport.HandshakeTimeout = 500 * time.Millisecond
	})

	// A certificate from another CA of the same name as the controller's:
	// a TLS client offers only a certificate whose issuer the server names.
	other := testca.New(t, testca.Options{Name: c.CA().Cert.Subject.CommonName})
	cfg := anonymousTLS(c)
	cfg.Certificates = []tls.Certificate{*other.Operator(t, pki.RoleAdmin, "mallory")}
	if conn, err := tls.Dial("tcp", c.Addr(), cfg); err == nil {
		// TLS 1.3: the client learns of the refusal on its first read.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := conn.Read(make([]byte, 1))
		conn.Close()
		if rerr == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	}

	// Garbage instead of a ClientHello.
	conn, err := net.Dial("tcp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: livedump\r\n\r\n"))
	closedWithin(conn, 5*time.Second)
	conn.Close()

	// Nothing at all until the deadline.
	conn, err = net.Dial("tcp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	closedWithin(conn, 5*time.Second)
	conn.Close()

	for _, reason := range []string{"unknown_ca", "protocol", "timeout"} {
		harness.Eventually(t, 5*time.Second, "a "+reason+" handshake failure counted", func() bool {
			return counterValue(t, c.Metrics, "livedump_controller_tls_handshake_failures_total", map[string]string{"reason": reason}) >= 1
		})
		harness.Eventually(t, 5*time.Second, "a "+reason+" handshake failure logged", func() bool {
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "tls handshake failed") && strings.Contains(line, "reason="+reason) && strings.Contains(line, "source=127.0.0.1") {
					return true
				}
			}
			return false
		})
	}
}

// TestHole15_HandshakeFailureLogIsRateLimited: a flood of failed handshakes
// is counted in full but logs a bounded number of lines, and a later line
// says how many were suppressed.
func TestHole15_HandshakeFailureLogIsRateLimited(t *testing.T) {
	logs := &logBuffer{}
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const flood = 200
	for range flood {
		conn, err := net.Dial("tcp", c.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("\x00\x01garbage\r\n\r\n"))
		closedWithin(conn, 5*time.Second)
		conn.Close()
	}
	harness.Eventually(t, 5*time.Second, "every failure counted", func() bool {
		return counterValue(t, c.Metrics, "livedump_controller_tls_handshake_failures_total", map[string]string{"reason": "protocol"}) >= flood
	})
	lines := strings.Count(logs.String(), "tls handshake failed")
	t.Logf("%d failed handshakes, %d log lines", flood, lines)
	if lines == 0 || lines > 20 {
		t.Errorf("%d failed handshakes logged %d lines, want 1-20", flood, lines)
	}
	// A second later, the next failure is logged with the count suppressed.
	time.Sleep(1100 * time.Millisecond)
	conn, err := net.Dial("tcp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("garbage\r\n\r\n"))
	closedWithin(conn, 5*time.Second)
	conn.Close()
	harness.Eventually(t, 5*time.Second, "a log line with the suppressed count", func() bool {
		return strings.Contains(logs.String(), "suppressed=")
	})
}
