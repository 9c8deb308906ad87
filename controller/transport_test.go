package controller

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
)

func TestHandshakeReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, reasonUnknownCA},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, reasonBadCertificate},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, reasonTimeout},
		{io.EOF, reasonClosed},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), reasonClosed},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, reasonProtocol},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, reasonBadCertificate},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}, reasonUnknownCA},
		{errors.New("tls: client offered only unsupported versions: [303]"), reasonProtocol},
		{errors.New("credentials: cannot check peer: missing selected ALPN property"), reasonProtocol},
		{errors.New("something else"), reasonOther},
	}
	for _, tt := range tests {
		if got := handshakeReason(tt.err); got != tt.want {
			t.Errorf("handshakeReason(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestTransportDefaults(t *testing.T) {
	d := TransportConfig{}.withDefaults()
	if d.MaxConnections < 64 || d.MaxAnonymousConnections != DefaultMaxAnonymousConnections ||
		d.MaxStreamsPerConnection != DefaultMaxStreamsPerConnection || d.HandshakeTimeout != DefaultHandshakeTimeout ||
		d.AnonymousIdleTimeout != DefaultAnonymousIdleTimeout || d.AnonymousMaxLifetime != DefaultAnonymousMaxLifetime ||
		d.EnrollRate != DefaultEnrollRate || d.EnrollBurst != DefaultEnrollBurst {
		t.Fatalf("defaults: %+v", d)
	}
	if n := openFileLimit(); n > 0 && d.MaxConnections != max(n-fdReserve, 64) {
		t.Errorf("MaxConnections = %d with an open-file limit of %d", d.MaxConnections, n)
	}
	if off := (TransportConfig{EnrollRate: -1}).withDefaults(); off.EnrollRate >= 0 {
		t.Errorf("a negative EnrollRate (off) became %v", off.EnrollRate)
	}
}
