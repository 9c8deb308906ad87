package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Token statements only Store runs; the rest are in statements.go.
const (
	revokeToken = `UPDATE tokens SET revoked = TRUE WHERE id = ? RETURNING ` + TokenColumns
	// takeTokenUse re-asserts a use is left, so even without a row lock
	// a token can never go below zero.
	takeTokenUse = `UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0`
)

// CreateToken inserts a token, or returns store.ErrConflict if the ID is
// already taken. A zero Expires is stored as "never expires".
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	labels, err := EncodeLabels(t.Labels)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	err = s.insert(ctx, s.w, CreateToken,
		t.ID, BlobArg(t.SecretHash), int64(t.Uses), int64(t.UsesLeft), labels,
		TimeArg(t.Created), TimeArg(t.Expires), t.CreatedBy, t.Revoked)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

// ListTokens returns all tokens, newest first. Ties on Created fall back to
// ID so the order is stable across calls and implementations.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	return list(ctx, s.r, "list tokens", ScanToken, ListTokens)
}

// RevokeToken marks a token revoked and returns it, or store.ErrNotFound.
// Revoking an already revoked token succeeds.
func (s *Store) RevokeToken(ctx context.Context, id string) (store.Token, error) {
	t, err := ScanToken(s.w.QueryRow(ctx, revokeToken, id))
	if err != nil {
		return store.Token{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return t, nil
}

// ConsumeToken atomically validates the token (store.CheckToken) and takes
// one use from it. The read, the check and the decrement share one write
// transaction, in which the read locks the token's row (Dialect.ForUpdate)
// where the database does not serialise writers anyway, so concurrent
// enrollments, from this process or another controller, can never take
// more uses than the token has.
func (s *Store) ConsumeToken(ctx context.Context, id string, secretHash []byte, now time.Time) (store.Token, error) {
	var t store.Token
	err := s.w.InTx(ctx, func(tx DB) error {
		var err error
		t, err = ScanToken(tx.QueryRow(ctx, GetToken+s.d.ForUpdate(), id))
		if err != nil {
			return err
		}
		if err := store.CheckToken(t, secretHash, now); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, takeTokenUse, id)
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
