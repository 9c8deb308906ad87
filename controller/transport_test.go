package controller

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
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

// TestFrameConnEndsStreamAtFrameBoundary feeds a frameConn the client's
// preface and frames in odd-sized pieces, asks mid-frame and mid-header-
// block for the end of a stream, and checks that the END_STREAM frame is
// read only between whole frames, after the header block is complete.
func TestFrameConnEndsStreamAtFrameBoundary(t *testing.T) {
	frame := func(typ, flags byte, stream uint32, payload int) []byte {
		f := []byte{byte(payload >> 16), byte(payload >> 8), byte(payload), typ, flags,
			byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
		return append(f, make([]byte, payload)...)
	}
	var wire []byte
	wire = append(wire, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")...)
	wire = append(wire, frame(0x4, 0, 0, 18)...)                 // SETTINGS
	wire = append(wire, frame(http2FrameHeaders, 0, 3, 40)...)   // HEADERS without END_HEADERS
	wire = append(wire, frame(http2FrameCont, 0x4, 3, 10)...)    // CONTINUATION, END_HEADERS
	wire = append(wire, frame(http2FrameData, 0, 3, 300)...)     // DATA
	wire = append(wire, frame(http2FrameHeaders, 0x4, 5, 20)...) // another stream
	client, server := net.Pipe()
	go func() { client.Write(wire); client.Close() }()
	reg := &sync.Map{}
	fc := newFrameConn(server, reg)
	if v, ok := reg.Load(server.RemoteAddr()); !ok || v != fc {
		t.Fatal("connection not registered by its address")
	}
	var got []byte
	read := func(n int) {
		t.Helper()
		b := make([]byte, n)
		k, err := io.ReadFull(fc, b)
		if err != nil {
			t.Fatalf("read %d: %v", n, err)
		}
		got = append(got, b[:k]...)
	}
	read(24 + 9 + 18 + 9 + 20) // preface, SETTINGS, half of the HEADERS payload
	fc.endStream(3)            // mid-frame and mid-block: must wait
	read(20 + 9 + 10)          // the rest of HEADERS and its CONTINUATION
	if fc.lastHeaders() != 3 {
		t.Fatalf("last HEADERS stream %d, want 3", fc.lastHeaders())
	}
	read(9) // at a boundary with the block complete: the injected frame
	want := []byte{0, 0, 0, http2FrameData, http2FlagEndStream, 0, 0, 0, 3}
	if string(got[len(got)-9:]) != string(want) {
		t.Fatalf("frame after the header block = %x, want END_STREAM %x", got[len(got)-9:], want)
	}
	read(9 + 300 + 9 + 20) // the real frames follow unchanged
	if string(got[:24]) != "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" || fc.lastHeaders() != 5 || !fc.atBoundary() {
		t.Fatalf("stream lost its framing: last HEADERS %d, at boundary %v", fc.lastHeaders(), fc.atBoundary())
	}
	fc.Close()
	if _, ok := reg.Load(server.RemoteAddr()); ok {
		t.Fatal("closed connection still registered")
	}
}

// TestFrameConnInterruptsBlockedRead: a reader waiting for the client at a
// frame boundary gets the END_STREAM frame at once.
func TestFrameConnInterruptsBlockedRead(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fc := newFrameConn(server, &sync.Map{})
	defer fc.Close()
	if _, err := client.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 24)
	if _, err := io.ReadFull(fc, b); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(50 * time.Millisecond); fc.endStream(1) }()
	b = make([]byte, 9)
	if _, err := io.ReadFull(fc, b); err != nil || b[3] != http2FrameData || b[4] != http2FlagEndStream || b[8] != 1 {
		t.Fatalf("read %x, %v: want END_STREAM on stream 1", b, err)
	}
	// The connection reads on normally afterwards.
	if _, err := client.Write([]byte{0, 0, 1, 0x4, 0, 0, 0, 0, 0, 7}); err != nil {
		t.Fatal(err)
	}
	b = make([]byte, 10)
	if _, err := io.ReadFull(fc, b); err != nil || b[9] != 7 {
		t.Fatalf("read after the handover %x, %v", b, err)
	}
}
