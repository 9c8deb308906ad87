// Package listen opens the TCP listeners of the livedump programs and
// explains why one could not be opened, so that the program can name the
// setting (flag, environment variable or config key) that chose the
// address: "address already in use" alone does not say which of two ports.
package listen

import (
	"errors"
	"fmt"
	"net"
)

// Kind classifies why a listener could not be opened.
type Kind int

const (
	// Other is any failure not below.
	Other Kind = iota
	// BadAddress: the address is malformed or its host does not resolve,
	// a mistake of the configuration (a usage error).
	BadAddress
	// InUse: another socket listens on the address.
	InUse
	// Denied: the port needs privileges (below 1024 on Linux).
	Denied
	// NotAvailable: no interface of this machine has the IP.
	NotAvailable
)

// Error is a failure to listen on Addr, the address of the setting Key
// (the config key, such as "listen" or "metrics_listen").
type Error struct {
	Key  string
	Addr string
	Err  error // from net.Listen
}

// Error reads "key: addr: reason", e.g.
// "listen: 127.0.0.1:7443: address already in use".
func (e *Error) Error() string { return fmt.Sprintf("%s: %s: %s", e.Key, e.Addr, e.Reason()) }

func (e *Error) Unwrap() error { return e.Err }

// Kind says why the listener could not be opened.
func (e *Error) Kind() Kind {
	switch {
	case errors.Is(e.Err, errInUse):
		return InUse
	case errors.Is(e.Err, errDenied):
		return Denied
	case errors.Is(e.Err, errNotAvailable):
		return NotAvailable
	}
	var addrErr *net.AddrError
	var dnsErr *net.DNSError
	var parseErr *net.ParseError
	if errors.As(e.Err, &addrErr) || errors.As(e.Err, &dnsErr) || errors.As(e.Err, &parseErr) {
		return BadAddress
	}
	return Other
}

// Reason is the failure in a few words, without the "listen tcp ADDR:"
// prefix net.Listen puts before it (the address is in Error already).
func (e *Error) Reason() string {
	switch e.Kind() {
	case InUse:
		return "address already in use"
	case Denied:
		return "permission denied"
	case NotAvailable:
		return "no interface of this machine has that address"
	}
	var addrErr *net.AddrError
	if errors.As(e.Err, &addrErr) {
		return addrErr.Err // without "address ADDR:"
	}
	var op *net.OpError
	if errors.As(e.Err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return e.Err.Error()
}

// TCP listens on addr, the value of the setting key. Its error is an
// *Error.
func TCP(key, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &Error{Key: key, Addr: addr, Err: err}
	}
	return l, nil
}
