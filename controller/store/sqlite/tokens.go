package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

func getToken(ctx context.Context, tx *sql.Tx, id string) (store.Token, error) {
	return sqlstore.ScanToken(tx.QueryRowContext(ctx, sqlstore.GetToken, id))
}

// CreateToken inserts a token, or returns store.ErrConflict if the ID is
// already taken. A zero Expires is stored as "never expires".
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	labels, err := sqlstore.EncodeLabels(t.Labels)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	res, err := s.w.ExecContext(ctx, sqlstore.CreateToken,
		t.ID, sqlstore.BlobArg(t.SecretHash), int64(t.Uses), int64(t.UsesLeft), labels,
		sqlstore.TimeArg(t.Created), sqlstore.TimeArg(t.Expires), t.CreatedBy, t.Revoked)
	if err == nil {
		err = conflictIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

// ListTokens returns all tokens, newest first. Ties on Created fall back to
// ID so the order is stable across calls and implementations.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	return list(ctx, s.r, "list tokens", sqlstore.ScanToken, sqlstore.ListTokens)
}

// RevokeToken marks a token revoked and returns it, or store.ErrNotFound.
// Revoking an already revoked token succeeds.
func (s *Store) RevokeToken(ctx context.Context, id string) (store.Token, error) {
	var t store.Token
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked = 1 WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if err := expectOne(res); err != nil {
			return err
		}
		t, err = getToken(ctx, tx, id)
		return err
	})
	if err != nil {
		return store.Token{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return t, nil
}

// ConsumeToken atomically validates the token (store.CheckToken) and takes
// one use from it. The read, the check and the decrement share one write
// transaction, and the UPDATE re-asserts uses_left > 0, so concurrent
// enrollments can never take more uses than the token has.
func (s *Store) ConsumeToken(ctx context.Context, id string, secretHash []byte, now time.Time) (store.Token, error) {
	var t store.Token
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = getToken(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := store.CheckToken(t, secretHash, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx,
			`UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0`, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrTokenExhausted
		}
		return nil
	})
	if err != nil {
		return store.Token{}, fmt.Errorf("consume token %s: %w", id, err)
	}
	return t, nil
}
