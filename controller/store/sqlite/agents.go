package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// queryRower is what *sql.DB and *sql.Tx have in common for one-row reads.
type queryRower interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// getAgent reads one agent through q, which is the read pool for plain
// lookups or the current transaction when returning the row just updated.
func getAgent(ctx context.Context, q queryRower, id string) (store.Agent, error) {
	return sqlstore.ScanAgent(q.QueryRowContext(ctx, sqlstore.GetAgent, id))
}

// CreateAgent inserts a new agent, or returns store.ErrConflict if the ID is
// already taken.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	labels, err := sqlstore.EncodeLabels(a.Labels)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	// The driver binds a bool as the integer 0 or 1 the schema holds.
	res, err := s.w.ExecContext(ctx, sqlstore.CreateAgent,
		a.ID, labels, a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition,
		a.OSProductName, a.OSInstallationType, a.Arch, a.AgentVersion,
		sqlstore.TimeArg(a.FirstSeen), sqlstore.TimeArg(a.LastSeen), a.CertSerial, sqlstore.TimeArg(a.CertExpiry),
		a.Revoked, sqlstore.TimeArg(a.RevokedAt),
		a.ProvisionState, a.ProvisionDetail, sqlstore.TimeArg(a.ProvisionUpdated), a.PrevSerial, sqlstore.TimeArg(a.PrevUntil))
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
	return list(ctx, s.r, "list agents", sqlstore.ScanAgent, sqlstore.ListAgents)
}

// ListAgentsPage returns at most limit agents ordered by hostname, then ID,
// after the position (afterHostname, afterID), or from the first when
// afterID is empty. The (hostname, id) index serves it.
func (s *Store) ListAgentsPage(ctx context.Context, afterHostname, afterID string, limit int) ([]store.Agent, error) {
	if limit <= 0 {
		return []store.Agent{}, nil
	}
	return list(ctx, s.r, "list agents", sqlstore.ScanAgent, `SELECT `+sqlstore.AgentColumns+` FROM agents
		WHERE ? = '' OR hostname > ? OR (hostname = ? AND id > ?)
		ORDER BY hostname, id LIMIT ?`, afterID, afterHostname, afterHostname, afterID, limit)
}

// exec runs a write that must change exactly one row: none is
// store.ErrNotFound.
func (s *Store) exec(ctx context.Context, q string, args ...any) error {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	return expectOne(res)
}

// UpdateInventory overwrites the inventory fields reported by the agent and
// sets LastSeen to a.LastSeen. Labels, certificate and revocation state are
// left alone because they are owned by the controller, not the agent.
func (s *Store) UpdateInventory(ctx context.Context, a store.Agent) error {
	err := s.exec(ctx, sqlstore.UpdateInventory,
		a.Hostname, a.OSBuild, int64(a.OSUBR), a.OSEdition, a.OSProductName,
		a.OSInstallationType, a.Arch, a.AgentVersion, sqlstore.TimeArg(a.LastSeen), a.ID)
	if err != nil {
		return fmt.Errorf("update inventory of agent %s: %w", a.ID, err)
	}
	return nil
}

// TouchAgent sets LastSeen, or returns store.ErrNotFound.
func (s *Store) TouchAgent(ctx context.Context, id string, seen time.Time) error {
	if err := s.exec(ctx, sqlstore.TouchAgent, sqlstore.TimeArg(seen), id); err != nil {
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
		res, err := tx.ExecContext(ctx, sqlstore.SetLabels, enc, id)
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
// store.ErrNotFound.
func (s *Store) SetCertificate(ctx context.Context, id, serial string, expiry, graceUntil time.Time) error {
	if err := s.exec(ctx, sqlstore.SetCertificate, sqlstore.TimeArg(graceUntil), serial, sqlstore.TimeArg(expiry), id); err != nil {
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
			sqlstore.TimeArg(at), id); err != nil {
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
	if err := s.exec(ctx, sqlstore.SetProvisionState, state, detail, sqlstore.TimeArg(at), id); err != nil {
		return fmt.Errorf("set provision state of %s: %w", id, err)
	}
	return nil
}
