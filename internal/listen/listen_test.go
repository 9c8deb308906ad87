package listen

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestErrorKinds(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		addr   string
		kind   Kind
		reason string
	}{
		{busy.Addr().String(), InUse, "address already in use"},
		{"127.0.0.1", BadAddress, "missing port in address"},
		{"127.0.0.1:http-alt-nope", BadAddress, "unknown port"},
		{"192.0.2.1:0", NotAvailable, "no interface of this machine has that address"},
	} {
		l, err := TCP("metrics_listen", tc.addr)
		if err == nil {
			l.Close()
			t.Errorf("%s: listened", tc.addr)
			continue
		}
		var le *Error
		if !errors.As(err, &le) {
			t.Fatalf("%s: %T is not an *Error", tc.addr, err)
		}
		if le.Kind() != tc.kind {
			t.Errorf("%s: kind %d, want %d (%v)", tc.addr, le.Kind(), tc.kind, le.Err)
		}
		if want := "metrics_listen: " + tc.addr + ": "; !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: error %q, want %q...%q", tc.addr, err, want, tc.reason)
		}
		if strings.Contains(le.Reason(), "listen tcp") {
			t.Errorf("%s: reason %q repeats net.Listen's prefix", tc.addr, le.Reason())
		}
	}
}

func TestListens(t *testing.T) {
	l, err := TCP("listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
