package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// CreateToken inserts a token, or returns store.ErrConflict if the ID is
// already taken. A zero Expires is stored as "never expires".
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	labels, err := sqlstore.EncodeLabels(t.Labels)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	err = conflictIfNone(s.pool.Exec(ctx, createTokenSQL,
		t.ID, sqlstore.BlobArg(t.SecretHash), int32(t.Uses), int32(t.UsesLeft), labels,
		sqlstore.TimeArg(t.Created), sqlstore.TimeArg(t.Expires), t.CreatedBy, t.Revoked))
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

// ListTokens returns all tokens, newest first, ties broken by ID.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	return list(ctx, s.pool, "list tokens", sqlstore.ScanToken, sqlstore.ListTokens)
}

// RevokeToken marks a token revoked and returns it, or store.ErrNotFound.
func (s *Store) RevokeToken(ctx context.Context, id string) (store.Token, error) {
	t, err := sqlstore.ScanToken(s.pool.QueryRow(ctx, `UPDATE tokens SET revoked = true WHERE id = $1 RETURNING `+sqlstore.TokenColumns, id))
	if err != nil {
		return store.Token{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return t, nil
}

// ConsumeToken atomically validates the token (store.CheckToken) and takes
// one use from it. SELECT ... FOR UPDATE locks the token row, so concurrent
// enrollments, from this process or another controller, check and
// decrement one at a time and can never take more uses than the token has.
func (s *Store) ConsumeToken(ctx context.Context, id string, secretHash []byte, now time.Time) (store.Token, error) {
	var t store.Token
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		t, err = sqlstore.ScanToken(tx.QueryRow(ctx, lockTokenSQL, id))
		if err != nil {
			return err
		}
		if err := store.CheckToken(t, secretHash, now); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE tokens SET uses_left = uses_left - 1 WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return store.Token{}, fmt.Errorf("consume token %s: %w", id, err)
	}
	return t, nil
}
