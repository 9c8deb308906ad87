package controller

import (
	"testing"
	"time"

	"github.com/livedump/livedump/agent/session"
)

// TestKeepaliveBounds holds the keepalive settings of both ends to what
// the docs promise: a dead agent or a cut link ends its stream within
// 90 s; on a healthy link only the controller pings (the agent's keepalive
// waits longer than the controller's); and the agent's pings, when they
// come, are within what the controller allows.
func TestKeepaliveBounds(t *testing.T) {
	if KeepaliveTime+KeepaliveTimeout > 90*time.Second {
		t.Errorf("a dead peer is found after %s, more than 90 s", KeepaliveTime+KeepaliveTimeout)
	}
	if session.ClientKeepaliveTime <= KeepaliveTime+5*time.Second {
		t.Errorf("agent keepalive %s does not leave the controller's pings (every %s) a margin: agents would ping too",
			session.ClientKeepaliveTime, KeepaliveTime)
	}
	if session.ClientKeepaliveTime < keepaliveMinTime {
		t.Errorf("agent keepalive %s is below the controller's enforcement MinTime %s", session.ClientKeepaliveTime, keepaliveMinTime)
	}
}
