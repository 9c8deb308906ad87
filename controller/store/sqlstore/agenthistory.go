package sqlstore

import (
	"context"
	"fmt"
	"math"

	"github.com/livedump/livedump/controller/store"
)

// One agent's history, for agents describe and dumps list --agent.
const (
	// ListAgentTargets lists an agent's capture targets, newest capture
	// first. Arguments: agent_id, the limit. Without an index on
	// capture_targets (agent_id) this reads the targets table; a describe
	// is one operator's call, bounded by its limit.
	ListAgentTargets = `SELECT t.capture_id, t.agent_id, t.state, t.detail, t.events, t.updated
		FROM capture_targets t JOIN captures c ON c.id = t.capture_id
		WHERE t.agent_id = ? ORDER BY c.created DESC, c.id LIMIT ?`

	// ListAgentDumps lists an agent's dumps newest written first, unwritten
	// last (dumps_agent_idx). Arguments: agent_id, the limit.
	ListAgentDumps = `SELECT ` + DumpColumns + ` FROM dumps WHERE agent_id = ?
		ORDER BY written DESC NULLS LAST, id LIMIT ?`
)

// sqlLimit is limit for a LIMIT clause: no limit when limit <= 0.
func sqlLimit(limit int) int64 {
	if limit <= 0 {
		return math.MaxInt32
	}
	return int64(limit)
}

// ListAgentTargets returns the agent's capture targets, newest capture
// first, at most limit (all when limit <= 0).
func (s *Store) ListAgentTargets(ctx context.Context, agentID string, limit int) ([]store.CaptureTarget, error) {
	return list(ctx, s.r, fmt.Sprintf("list targets of agent %s", agentID), ScanTarget, ListAgentTargets, agentID, sqlLimit(limit))
}

// ListAgentDumps returns the agent's dumps newest first, at most limit (all
// when limit <= 0).
func (s *Store) ListAgentDumps(ctx context.Context, agentID string, limit int) ([]store.Dump, error) {
	return list(ctx, s.r, fmt.Sprintf("list dumps of agent %s", agentID), ScanDump, ListAgentDumps, agentID, sqlLimit(limit))
}
