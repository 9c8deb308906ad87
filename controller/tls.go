package controller

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/livedump/livedump/internal/pki"
)

// serverIdentity holds the controller's TLS server certificate and replaces
// it before it expires. Handshakes pick it up through GetConfigForClient, so
// rotation needs no restart.
type serverIdentity struct {
	ca    *pki.CA
	names []string
	ttl   time.Duration
	cur   atomic.Pointer[tls.Certificate]
}

func defaultServerNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	return names
}

// issue creates a fresh key and certificate for the configured names.
func (s *serverIdentity) issue(now time.Time) error {
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	var dns []string
	var ips []net.IP
	for _, n := range s.names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	cert, err := s.ca.SignServer(key.Public(), dns, ips, now, s.ttl)
	if err != nil {
		return fmt.Errorf("issue server certificate: %w", err)
	}
	s.cur.Store(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
	return nil
}

// due reports whether two thirds of the current certificate's life are gone.
func (s *serverIdentity) due(now time.Time) bool {
	c := s.cur.Load()
	if c == nil {
		return true
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	return now.After(c.Leaf.NotBefore.Add(life * 2 / 3))
}

// tlsConfig accepts clients with or without a certificate: Enroll is the one
// RPC callable without one, and the authorizer refuses every other RPC to a
// caller that has none. A certificate that is presented must chain to the CA.
func (s *serverIdentity) tlsConfig() *tls.Config {
	pool := s.ca.Pool()
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"h2"},
			Certificates: []tls.Certificate{*s.cur.Load()},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    pool,
		}, nil
	}
	return base
}
