package security

import (
	"context"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestHole13_WatchShowsStoredHostname: a stolen agent identity sends an event
// that claims to come from "DC01"; a viewer watching the capture sees the
// hostname the controller has for that agent, not the claim.
func TestHole13_WatchShowsStoredHostname(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	thief := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, thief, "LAB-07")
	id := evCapture(t, c.Fleet(t, pki.RoleOperator), "site=lab")

	w, err := c.Fleet(t, pki.RoleViewer).WatchCapture(ctx, &livedumpv1.WatchCaptureRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	// The watch is subscribed once it has sent the targets.
	if m, err := w.Recv(); err != nil || m.GetTarget() == nil {
		t.Fatalf("first watch message: %v %v", m, err)
	}
	ev := evEvent(thief.ID, id)
	ev.Hostname = "DC01"
	st.events(ev)
	for {
		m, err := w.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if e := m.GetEvent(); e != nil {
			if e.GetHostname() != "LAB-07" {
				t.Fatalf("watcher sees hostname %q, want the stored LAB-07", e.GetHostname())
			}
			return
		}
	}
}
