package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// CreateAgent inserts a new agent, or returns store.ErrConflict if the ID is
// already taken.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	labels, err := sqlstore.EncodeLabels(a.Labels)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	err = conflictIfNone(s.pool.Exec(ctx, createAgentSQL,
		a.ID, labels, a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition,
		a.OSProductName, a.OSInstallationType, a.Arch, a.AgentVersion,
		sqlstore.TimeArg(a.FirstSeen), sqlstore.TimeArg(a.LastSeen), a.CertSerial, sqlstore.TimeArg(a.CertExpiry),
		a.Revoked, sqlstore.TimeArg(a.RevokedAt),
		a.ProvisionState, a.ProvisionDetail, sqlstore.TimeArg(a.ProvisionUpdated), a.PrevSerial, sqlstore.TimeArg(a.PrevUntil)))
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	return nil
}

// GetAgent returns one agent, or store.ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := sqlstore.ScanAgent(s.pool.QueryRow(ctx, getAgentSQL, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns every agent ordered by hostname, then ID.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	return list(ctx, s.pool, "list agents", sqlstore.ScanAgent, sqlstore.ListAgents)
}

// ListAgentsPage returns at most limit agents ordered by hostname, then ID,
// after the position (afterHostname, afterID), or from the first when
// afterID is empty.
func (s *Store) ListAgentsPage(ctx context.Context, afterHostname, afterID string, limit int) ([]store.Agent, error) {
	if limit <= 0 {
		return []store.Agent{}, nil
	}
	return list(ctx, s.pool, "list agents", sqlstore.ScanAgent, `SELECT `+sqlstore.AgentColumns+` FROM agents
		WHERE $1 = '' OR (hostname, id) > ($2, $1)
		ORDER BY hostname, id LIMIT $3`, afterID, afterHostname, limit)
}

// UpdateInventory overwrites the inventory fields reported by the agent and
// sets LastSeen; controller-owned fields are left alone.
func (s *Store) UpdateInventory(ctx context.Context, a store.Agent) error {
	err := expectOne(s.pool.Exec(ctx, updateInventorySQL,
		a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition, a.OSProductName,
		a.OSInstallationType, a.Arch, a.AgentVersion, sqlstore.TimeArg(a.LastSeen), a.ID))
	if err != nil {
		return fmt.Errorf("update inventory of agent %s: %w", a.ID, err)
	}
	return nil
}

// TouchAgent sets LastSeen, or returns store.ErrNotFound.
func (s *Store) TouchAgent(ctx context.Context, id string, seen time.Time) error {
	if err := expectOne(s.pool.Exec(ctx, touchAgentSQL, sqlstore.TimeArg(seen), id)); err != nil {
		return fmt.Errorf("touch agent %s: %w", id, err)
	}
	return nil
}

// SetLabels replaces the agent's user labels and returns the updated row,
// read by the same statement so the caller sees its own write.
func (s *Store) SetLabels(ctx context.Context, id string, labels map[string]string) (store.Agent, error) {
	enc, err := sqlstore.EncodeLabels(labels)
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	a, err := sqlstore.ScanAgent(s.pool.QueryRow(ctx, setLabelsSQL, enc, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	return a, nil
}

// SetCertificate records the newest certificate issued to the agent and
// the one it replaces as accepted until graceUntil.
func (s *Store) SetCertificate(ctx context.Context, id, serial string, expiry, graceUntil time.Time) error {
	if err := expectOne(s.pool.Exec(ctx, setCertificateSQL, sqlstore.TimeArg(graceUntil), serial, sqlstore.TimeArg(expiry), id)); err != nil {
		return fmt.Errorf("set certificate of agent %s: %w", id, err)
	}
	return nil
}

// RevokeAgent marks the agent revoked and returns it. Revoking again keeps
// the original RevokedAt.
func (s *Store) RevokeAgent(ctx context.Context, id string, at time.Time) (store.Agent, error) {
	a, err := sqlstore.ScanAgent(s.pool.QueryRow(ctx, `UPDATE agents
		SET revoked = true, revoked_at = CASE WHEN revoked THEN revoked_at ELSE $1 END
		WHERE id = $2 RETURNING `+sqlstore.AgentColumns, sqlstore.TimeArg(at), id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("revoke agent %s: %w", id, err)
	}
	return a, nil
}

// SetProvisionState records the provisioning state an agent reported.
func (s *Store) SetProvisionState(ctx context.Context, id, state, detail string, at time.Time) error {
	if err := expectOne(s.pool.Exec(ctx, setProvisionStateSQL, state, detail, sqlstore.TimeArg(at), id)); err != nil {
		return fmt.Errorf("set provision state of %s: %w", id, err)
	}
	return nil
}
