package security

import (
	"context"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestHarnessReachesTheController proves the harness itself: a real
// controller, a real agent on a simulated machine, and an admin who sees it.
func TestHarnessReachesTheController(t *testing.T) {
	c := harness.StartController(t, nil)
	a := harness.StartAgent(t, c, harness.AgentOpts{Token: c.Token(t, 1, map[string]string{"site": "lab"}), Hostname: "LAB-01"})
	admin := c.Fleet(t, pki.RoleAdmin)
	harness.Eventually(t, 10*time.Second, "the agent online", func() bool {
		resp, err := admin.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{Selector: "site=lab"})
		return err == nil && len(resp.GetAgents()) == 1 && resp.GetAgents()[0].GetId() == a.ID() &&
			resp.GetAgents()[0].GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE
	})
}
