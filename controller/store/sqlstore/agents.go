package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Agent statements only Store runs; the rest are in statements.go.
const (
	setLabelsReturning = SetLabels + ` RETURNING ` + AgentColumns
	// revokeAgent keeps the first revocation's time.
	revokeAgent = `UPDATE agents
		SET revoked = TRUE, revoked_at = CASE WHEN revoked THEN revoked_at ELSE ? END
		WHERE id = ? RETURNING ` + AgentColumns
)

// CreateAgent inserts a new agent, or returns store.ErrConflict if the ID is
// already taken.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	labels, err := EncodeLabels(a.Labels)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	err = s.insert(ctx, s.w, CreateAgent,
		a.ID, labels, a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition,
		a.OSProductName, a.OSInstallationType, a.Arch, a.AgentVersion,
		TimeArg(a.FirstSeen), TimeArg(a.LastSeen), a.CertSerial, TimeArg(a.CertExpiry),
		a.Revoked, TimeArg(a.RevokedAt),
		a.ProvisionState, a.ProvisionDetail, TimeArg(a.ProvisionUpdated), a.PrevSerial, TimeArg(a.PrevUntil))
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	return nil
}

// GetAgent returns one agent, or store.ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := ScanAgent(s.r.QueryRow(ctx, GetAgent, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns every agent ordered by hostname, then ID. The result is
// never nil so that it encodes as an empty JSON array.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	return list(ctx, s.r, "list agents", ScanAgent, ListAgents)
}

// ListAgentSelectors returns the agents not revoked with what a capture's
// selector and preview read: at 10,000 agents the full rows were almost
// half of a capture's creation.
func (s *Store) ListAgentSelectors(ctx context.Context) ([]store.Agent, error) {
	return list(ctx, s.r, "list agent selectors", ScanAgentSelector, ListAgentSelectors)
}

var _ store.HostnameReader = (*Store)(nil)

// hostnameBatch is how many IDs AgentHostnames asks for in one statement
// (SQLite's and PostgreSQL's limits on parameters are far above it).
const hostnameBatch = 500

// AgentHostnames returns agent ID -> hostname for ids, reading only those
// agents' IDs and hostnames, hostnameBatch at a time; unknown IDs are left
// out. It serves store.Hostnames, which named a page of a large capture's
// targets by reading every agent's full row.
func (s *Store) AgentHostnames(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), hostnameBatch)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = id
		}
		ids = ids[n:]
		q := `SELECT id, hostname FROM agents WHERE id IN (?` + strings.Repeat(`, ?`, n-1) + `)`
		rows, err := s.r.Query(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("agent hostnames: %w", err)
		}
		pairs, err := Collect(rows, func(r Scanner) ([2]string, error) {
			var p [2]string
			err := r.Scan(&p[0], &p[1])
			return p, err
		})
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("agent hostnames: %w", err)
		}
		for _, p := range pairs {
			out[p[0]] = p[1]
		}
	}
	return out, nil
}

// ListAgentsPage returns at most limit agents ordered by hostname, then ID,
// after the position (afterHostname, afterID), or from the first when
// afterID is empty. The (hostname, id) index serves it.
func (s *Store) ListAgentsPage(ctx context.Context, afterHostname, afterID string, limit int) ([]store.Agent, error) {
	if limit <= 0 {
		return []store.Agent{}, nil
	}
	q, args := s.d.ListAgentsPage(afterHostname, afterID, limit)
	return list(ctx, s.r, "list agents", ScanAgent, q, args...)
}

// UpdateInventory overwrites the inventory fields reported by the agent and
// sets LastSeen to a.LastSeen. Labels, certificate and revocation state are
// left alone because they are owned by the controller, not the agent.
func (s *Store) UpdateInventory(ctx context.Context, a store.Agent) error {
	err := exec(ctx, s.w, UpdateInventory,
		a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition, a.OSProductName,
		a.OSInstallationType, a.Arch, a.AgentVersion, TimeArg(a.LastSeen), a.ID)
	if err != nil {
		return fmt.Errorf("update inventory of agent %s: %w", a.ID, err)
	}
	return nil
}

// TouchAgent sets LastSeen, or returns store.ErrNotFound.
func (s *Store) TouchAgent(ctx context.Context, id string, seen time.Time) error {
	if err := exec(ctx, s.w, TouchAgent, TimeArg(seen), id); err != nil {
		return fmt.Errorf("touch agent %s: %w", id, err)
	}
	return nil
}

// SetLabels replaces the agent's user labels and returns the updated row,
// read by the same statement so the caller sees its own write, not one
// racing in after it.
func (s *Store) SetLabels(ctx context.Context, id string, labels map[string]string) (store.Agent, error) {
	enc, err := EncodeLabels(labels)
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	a, err := ScanAgent(s.w.QueryRow(ctx, setLabelsReturning, enc, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	return a, nil
}

// SetCertificate records the newest certificate issued to the agent, the
// one it replaces as accepted until graceUntil, or returns
// store.ErrNotFound.
func (s *Store) SetCertificate(ctx context.Context, id, serial string, expiry, graceUntil time.Time) error {
	if err := exec(ctx, s.w, SetCertificate, TimeArg(graceUntil), serial, TimeArg(expiry), id); err != nil {
		return fmt.Errorf("set certificate of agent %s: %w", id, err)
	}
	return nil
}

// RevokeAgent marks the agent revoked and returns it. Revoking again keeps
// the original RevokedAt, so retries cannot rewrite when the revocation
// really happened.
func (s *Store) RevokeAgent(ctx context.Context, id string, at time.Time) (store.Agent, error) {
	a, err := ScanAgent(s.w.QueryRow(ctx, revokeAgent, TimeArg(at), id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("revoke agent %s: %w", id, err)
	}
	return a, nil
}

// SetProvisionState records the provisioning state an agent reported.
func (s *Store) SetProvisionState(ctx context.Context, id, state, detail string, at time.Time) error {
	if err := exec(ctx, s.w, SetProvisionState, state, detail, TimeArg(at), id); err != nil {
		return fmt.Errorf("set provision state of %s: %w", id, err)
	}
	return nil
}

// SetAgentMemory records an agent's physical memory.
func (s *Store) SetAgentMemory(ctx context.Context, agentID string, bytes int64) error {
	if err := exec(ctx, s.w, SetAgentMemory, bytes, agentID); err != nil {
		return fmt.Errorf("set agent %s memory: %w", agentID, err)
	}
	return nil
}

// AgentMemory returns an agent's recorded physical memory.
func (s *Store) AgentMemory(ctx context.Context, agentID string) (int64, error) {
	var n int64
	if err := s.r.QueryRow(ctx, AgentMemory, agentID).Scan(&n); err != nil {
		return 0, fmt.Errorf("agent %s memory: %w", agentID, NotFound(err))
	}
	return n, nil
}
