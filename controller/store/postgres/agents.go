package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// agentColumns is shared by every agent SELECT so scanAgent stays in step.
const agentColumns = `id, labels, hostname, os_build, os_ubr, os_edition, os_product_name,
	os_installation_type, arch, agent_version, first_seen, last_seen,
	cert_serial, cert_expiry, revoked, revoked_at,
	provision_state, provision_detail, provision_updated, prev_serial, prev_until`

func scanAgent(row pgx.Row) (store.Agent, error) {
	var (
		a                                   store.Agent
		labels                              string
		ubr                                 int64
		firstSeen, lastSeen, certExp, revAt *int64
		provUpdated, prevUntil              *int64
	)
	err := row.Scan(&a.ID, &labels, &a.Hostname, &a.OSBuild, &ubr, &a.OSEdition,
		&a.OSProductName, &a.OSInstallationType, &a.Arch, &a.AgentVersion,
		&firstSeen, &lastSeen, &a.CertSerial, &certExp, &a.Revoked, &revAt,
		&a.ProvisionState, &a.ProvisionDetail, &provUpdated, &a.PrevSerial, &prevUntil)
	if err != nil {
		return store.Agent{}, mapErr(err)
	}
	if a.Labels, err = sqlstore.DecodeLabels(labels); err != nil {
		return store.Agent{}, err
	}
	a.OSUBR = uint32(ubr)
	a.FirstSeen = timeVal(firstSeen)
	a.LastSeen = timeVal(lastSeen)
	a.CertExpiry = timeVal(certExp)
	a.RevokedAt = timeVal(revAt)
	a.ProvisionUpdated = timeVal(provUpdated)
	a.PrevUntil = timeVal(prevUntil)
	return a, nil
}

// CreateAgent inserts a new agent, or returns store.ErrConflict if the ID is
// already taken.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	labels, err := sqlstore.EncodeLabels(a.Labels)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	err = conflictIfNone(s.pool.Exec(ctx, `INSERT INTO agents (`+agentColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		ON CONFLICT (id) DO NOTHING`,
		a.ID, labels, a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition,
		a.OSProductName, a.OSInstallationType, a.Arch, a.AgentVersion,
		timeArg(a.FirstSeen), timeArg(a.LastSeen), a.CertSerial, timeArg(a.CertExpiry),
		a.Revoked, timeArg(a.RevokedAt),
		a.ProvisionState, a.ProvisionDetail, timeArg(a.ProvisionUpdated), a.PrevSerial, timeArg(a.PrevUntil)))
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	return nil
}

// GetAgent returns one agent, or store.ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := scanAgent(s.pool.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns every agent ordered by hostname, then ID.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY hostname, id`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	out, err := collect(rows, scanAgent)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// ListAgentsPage returns at most limit agents ordered by hostname, then ID,
// after the position (afterHostname, afterID), or from the first when
// afterID is empty.
func (s *Store) ListAgentsPage(ctx context.Context, afterHostname, afterID string, limit int) ([]store.Agent, error) {
	if limit <= 0 {
		return []store.Agent{}, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+agentColumns+` FROM agents
		WHERE $1 = '' OR (hostname, id) > ($2, $1)
		ORDER BY hostname, id LIMIT $3`, afterID, afterHostname, limit)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	out, err := collect(rows, scanAgent)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// UpdateInventory overwrites the inventory fields reported by the agent and
// sets LastSeen; controller-owned fields are left alone.
func (s *Store) UpdateInventory(ctx context.Context, a store.Agent) error {
	err := expectOne(s.pool.Exec(ctx, `UPDATE agents SET
		hostname = $1, os_build = $2, os_ubr = $3, os_edition = $4, os_product_name = $5,
		os_installation_type = $6, arch = $7, agent_version = $8, last_seen = $9
		WHERE id = $10`,
		a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition, a.OSProductName,
		a.OSInstallationType, a.Arch, a.AgentVersion, timeArg(a.LastSeen), a.ID))
	if err != nil {
		return fmt.Errorf("update inventory of agent %s: %w", a.ID, err)
	}
	return nil
}

// TouchAgent sets LastSeen, or returns store.ErrNotFound.
func (s *Store) TouchAgent(ctx context.Context, id string, seen time.Time) error {
	err := expectOne(s.pool.Exec(ctx, `UPDATE agents SET last_seen = $1 WHERE id = $2`, timeArg(seen), id))
	if err != nil {
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
	a, err := scanAgent(s.pool.QueryRow(ctx, `UPDATE agents SET labels = $1 WHERE id = $2 RETURNING `+agentColumns, enc, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	return a, nil
}

// SetCertificate records the newest certificate issued to the agent and
// the one it replaces as accepted until graceUntil. The right-hand sides
// read the row as it was, so the move is one statement.
func (s *Store) SetCertificate(ctx context.Context, id, serial string, expiry, graceUntil time.Time) error {
	err := expectOne(s.pool.Exec(ctx, `UPDATE agents SET prev_serial = cert_serial, prev_until = $1,
		cert_serial = $2, cert_expiry = $3 WHERE id = $4`,
		timeArg(graceUntil), serial, timeArg(expiry), id))
	if err != nil {
		return fmt.Errorf("set certificate of agent %s: %w", id, err)
	}
	return nil
}

// RevokeAgent marks the agent revoked and returns it. Revoking again keeps
// the original RevokedAt.
func (s *Store) RevokeAgent(ctx context.Context, id string, at time.Time) (store.Agent, error) {
	a, err := scanAgent(s.pool.QueryRow(ctx, `UPDATE agents
		SET revoked = true, revoked_at = CASE WHEN revoked THEN revoked_at ELSE $1 END
		WHERE id = $2 RETURNING `+agentColumns, timeArg(at), id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("revoke agent %s: %w", id, err)
	}
	return a, nil
}

// SetProvisionState records the provisioning state an agent reported.
func (s *Store) SetProvisionState(ctx context.Context, id, state, detail string, at time.Time) error {
	err := expectOne(s.pool.Exec(ctx, `UPDATE agents SET provision_state = $1, provision_detail = $2, provision_updated = $3 WHERE id = $4`,
		state, detail, timeArg(at), id))
	if err != nil {
		return fmt.Errorf("set provision state of %s: %w", id, err)
	}
	return nil
}
