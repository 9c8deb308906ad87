package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// agentColumns is shared by every agent SELECT so scanAgent stays in step.
const agentColumns = `id, labels, hostname, os_build, os_ubr, os_edition, os_product_name,
	os_installation_type, arch, agent_version, first_seen, last_seen,
	cert_serial, cert_expiry, revoked, revoked_at,
	provision_state, provision_detail, provision_updated, prev_serial, prev_until`

// rowScanner is the common part of *sql.Row and *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

func scanAgent(sc rowScanner) (store.Agent, error) {
	var (
		a                                   store.Agent
		labels                              string
		ubr                                 int64
		firstSeen, lastSeen, certExp, revAt sql.NullInt64
		provUpdated, prevUntil              sql.NullInt64
		revoked                             int64
	)
	err := sc.Scan(&a.ID, &labels, &a.Hostname, &a.OSBuild, &ubr, &a.OSEdition,
		&a.OSProductName, &a.OSInstallationType, &a.Arch, &a.AgentVersion,
		&firstSeen, &lastSeen, &a.CertSerial, &certExp, &revoked, &revAt,
		&a.ProvisionState, &a.ProvisionDetail, &provUpdated, &a.PrevSerial, &prevUntil)
	if err != nil {
		return store.Agent{}, err
	}
	if a.Labels, err = sqlstore.DecodeLabels(labels); err != nil {
		return store.Agent{}, err
	}
	a.OSUBR = uint32(ubr)
	a.FirstSeen = timeVal(firstSeen)
	a.LastSeen = timeVal(lastSeen)
	a.CertExpiry = timeVal(certExp)
	a.Revoked = revoked != 0
	a.RevokedAt = timeVal(revAt)
	a.ProvisionUpdated = timeVal(provUpdated)
	a.PrevUntil = timeVal(prevUntil)
	return a, nil
}

// getAgent reads one agent through q, which is the read pool for plain
// lookups or the current transaction when returning the row just updated.
func getAgent(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (store.Agent, error) {
	a, err := scanAgent(q.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Agent{}, store.ErrNotFound
	}
	return a, err
}

// CreateAgent inserts a new agent, or returns store.ErrConflict if the ID is
// already taken.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	labels, err := sqlstore.EncodeLabels(a.Labels)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO agents (`+agentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		a.ID, labels, a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition,
		a.OSProductName, a.OSInstallationType, a.Arch, a.AgentVersion,
		timeArg(a.FirstSeen), timeArg(a.LastSeen), a.CertSerial, timeArg(a.CertExpiry),
		boolArg(a.Revoked), timeArg(a.RevokedAt),
		a.ProvisionState, a.ProvisionDetail, timeArg(a.ProvisionUpdated), a.PrevSerial, timeArg(a.PrevUntil))
	if err == nil {
		err = conflictIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	return nil
}

// GetAgent returns one agent, or store.ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := getAgent(ctx, s.r, id)
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns every agent ordered by hostname, then ID. The result is
// never nil so that it encodes as an empty JSON array.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY hostname, id`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	out := []store.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("list agents: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
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
	rows, err := s.r.QueryContext(ctx, `SELECT `+agentColumns+` FROM agents
		WHERE ? = '' OR hostname > ? OR (hostname = ? AND id > ?)
		ORDER BY hostname, id LIMIT ?`, afterID, afterHostname, afterHostname, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	out := []store.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("list agents: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// UpdateInventory overwrites the inventory fields reported by the agent and
// sets LastSeen to a.LastSeen. Labels, certificate and revocation state are
// left alone because they are owned by the controller, not the agent.
func (s *Store) UpdateInventory(ctx context.Context, a store.Agent) error {
	res, err := s.w.ExecContext(ctx, `UPDATE agents SET
		hostname = ?, os_build = ?, os_ubr = ?, os_edition = ?, os_product_name = ?,
		os_installation_type = ?, arch = ?, agent_version = ?, last_seen = ?
		WHERE id = ?`,
		a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition, a.OSProductName,
		a.OSInstallationType, a.Arch, a.AgentVersion, timeArg(a.LastSeen), a.ID)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("update inventory of agent %s: %w", a.ID, err)
	}
	return nil
}

// TouchAgent sets LastSeen, or returns store.ErrNotFound.
func (s *Store) TouchAgent(ctx context.Context, id string, seen time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE agents SET last_seen = ? WHERE id = ?`, timeArg(seen), id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("touch agent %s: %w", id, err)
	}
	return nil
}

// SetLabels replaces the agent's user labels and returns the updated agent.
// The update and the read happen in one transaction so the caller sees its
// own write, not one racing in after it.
func (s *Store) SetLabels(ctx context.Context, id string, labels map[string]string) (store.Agent, error) {
	enc, err := sqlstore.EncodeLabels(labels)
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	var a store.Agent
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET labels = ? WHERE id = ?`, enc, id)
		if err != nil {
			return err
		}
		if err := expectOne(res); err != nil {
			return err
		}
		a, err = getAgent(ctx, tx, id)
		return err
	})
	if err != nil {
		return store.Agent{}, fmt.Errorf("set labels of agent %s: %w", id, err)
	}
	return a, nil
}

// SetCertificate records the newest certificate issued to the agent, the
// one it replaces as accepted until graceUntil, or returns
// store.ErrNotFound. The right-hand sides read the row as it was, so the
// move from current to previous is one statement.
func (s *Store) SetCertificate(ctx context.Context, id, serial string, expiry, graceUntil time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE agents SET prev_serial = cert_serial, prev_until = ?,
		cert_serial = ?, cert_expiry = ? WHERE id = ?`,
		timeArg(graceUntil), serial, timeArg(expiry), id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set certificate of agent %s: %w", id, err)
	}
	return nil
}

// RevokeAgent marks the agent revoked and returns it. Revoking again is a
// no-op that keeps the original RevokedAt, so retries cannot rewrite when the
// revocation really happened.
func (s *Store) RevokeAgent(ctx context.Context, id string, at time.Time) (store.Agent, error) {
	var a store.Agent
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`UPDATE agents SET revoked = 1, revoked_at = ? WHERE id = ? AND revoked = 0`,
			timeArg(at), id); err != nil {
			return err
		}
		var err error
		a, err = getAgent(ctx, tx, id)
		return err
	})
	if err != nil {
		return store.Agent{}, fmt.Errorf("revoke agent %s: %w", id, err)
	}
	return a, nil
}

// SetProvisionState records the provisioning state an agent reported.
func (s *Store) SetProvisionState(ctx context.Context, id, state, detail string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE agents SET provision_state = ?, provision_detail = ?, provision_updated = ? WHERE id = ?`,
		state, detail, timeArg(at), id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return fmt.Errorf("set provision state of %s: %w", id, err)
	}
	return nil
}
