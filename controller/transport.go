package controller

import "time"

// Defaults of the transport limits.
const (
	DefaultMaxAnonymousConnections = 1024
	DefaultMaxStreamsPerConnection = 128
	DefaultHandshakeTimeout        = 10 * time.Second
	DefaultAnonymousIdleTimeout    = 10 * time.Second
	DefaultAnonymousMaxLifetime    = 60 * time.Second
	DefaultEnrollRate              = 1.0
	DefaultEnrollBurst             = 20
)

// TransportConfig bounds what a peer can hold before it has proven who it
// is: the first attacker of docs/security.md reaches the port with no
// certificate. Zero values take the defaults.
type TransportConfig struct {
	// MaxConnections caps open gRPC connections, with or without a
	// certificate; past it new connections are closed at once. 0: the
	// process's open-file limit less a reserve for the store and blobs.
	MaxConnections int
	// MaxAnonymousConnections caps connections that completed the TLS
	// handshake without a client certificate (default 1024).
	MaxAnonymousConnections int
	// MaxStreamsPerConnection is HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// (default 128): an agent uses a handful.
	MaxStreamsPerConnection uint32
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface of a
	// new connection (default 10s).
	HandshakeTimeout time.Duration
	// AnonymousIdleTimeout closes a connection without a client
	// certificate that has sent nothing for this long (default 10s).
	AnonymousIdleTimeout time.Duration
	// AnonymousMaxLifetime closes a connection without a client
	// certificate this long after its handshake, busy or not (default 60s):
	// it needs only Enroll and health checks.
	AnonymousMaxLifetime time.Duration
	// EnrollRate is the Enroll calls per second allowed from one source
	// (an IPv4 address or an IPv6 /64), with bursts of EnrollBurst
	// (defaults 1/s and 20). A negative EnrollRate turns the limit off.
	EnrollRate  float64
	EnrollBurst int
}
