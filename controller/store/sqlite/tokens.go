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

const tokenColumns = `id, secret_hash, uses, uses_left, labels, created, expires, created_by, revoked`

func scanToken(sc rowScanner) (store.Token, error) {
	var (
		t                store.Token
		labels           string
		uses, usesLeft   int64
		created, expires sql.NullInt64
		revoked          int64
	)
	if err := sc.Scan(&t.ID, &t.SecretHash, &uses, &usesLeft, &labels, &created, &expires, &t.CreatedBy, &revoked); err != nil {
		return store.Token{}, err
	}
	var err error
	if t.Labels, err = sqlstore.DecodeLabels(labels); err != nil {
		return store.Token{}, err
	}
	t.Uses = int(uses)
	t.UsesLeft = int(usesLeft)
	t.Created = timeVal(created)
	t.Expires = timeVal(expires)
	t.Revoked = revoked != 0
	return t, nil
}

func getToken(ctx context.Context, tx *sql.Tx, id string) (store.Token, error) {
	t, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Token{}, store.ErrNotFound
	}
	return t, err
}

// CreateToken inserts a token, or returns store.ErrConflict if the ID is
// already taken. A zero Expires is stored as "never expires".
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	labels, err := sqlstore.EncodeLabels(t.Labels)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO tokens (`+tokenColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		t.ID, sqlstore.BlobArg(t.SecretHash), int64(t.Uses), int64(t.UsesLeft), labels,
		timeArg(t.Created), timeArg(t.Expires), t.CreatedBy, boolArg(t.Revoked))
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
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+tokenColumns+` FROM tokens ORDER BY created DESC NULLS LAST, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []store.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
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
