package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
)

const operatorCertColumns = `serial, role, name, issued, not_before, not_after,
	first_seen, last_seen, revoked_at, revoked_by`

func scanOperatorCert(sc pgx.Row) (store.OperatorCert, error) {
	var (
		c                                    store.OperatorCert
		issued, nb, na, first, last, revoked *int64
	)
	if err := sc.Scan(&c.Serial, &c.Role, &c.Name, &issued, &nb, &na, &first, &last, &revoked, &c.RevokedBy); err != nil {
		return store.OperatorCert{}, err
	}
	c.Issued, c.NotBefore, c.NotAfter = timeVal(issued), timeVal(nb), timeVal(na)
	c.FirstSeen, c.LastSeen, c.RevokedAt = timeVal(first), timeVal(last), timeVal(revoked)
	return c, nil
}

// RecordOperatorCert inserts an operator certificate or updates when it
// was seen, never its revocation.
func (s *Store) RecordOperatorCert(ctx context.Context, c store.OperatorCert) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO operator_certs
		(serial, role, name, issued, not_before, not_after, first_seen, last_seen)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (serial) DO UPDATE SET
			role = CASE WHEN operator_certs.role = '' THEN excluded.role ELSE operator_certs.role END,
			name = CASE WHEN operator_certs.name = '' THEN excluded.name ELSE operator_certs.name END,
			issued = COALESCE(operator_certs.issued, excluded.issued),
			not_before = COALESCE(operator_certs.not_before, excluded.not_before),
			not_after = COALESCE(operator_certs.not_after, excluded.not_after),
			first_seen = COALESCE(operator_certs.first_seen, excluded.first_seen),
			last_seen = CASE WHEN excluded.last_seen IS NOT NULL
				AND (operator_certs.last_seen IS NULL OR excluded.last_seen > operator_certs.last_seen)
				THEN excluded.last_seen ELSE operator_certs.last_seen END`,
		c.Serial, c.Role, c.Name, timeArg(c.Issued), timeArg(c.NotBefore), timeArg(c.NotAfter),
		timeArg(c.FirstSeen), timeArg(c.LastSeen))
	if err != nil {
		return fmt.Errorf("record operator certificate %s: %w", c.Serial, err)
	}
	return nil
}

// ListOperatorCerts returns recorded operator certificates, newest issued
// first, serials never seen last.
func (s *Store) ListOperatorCerts(ctx context.Context, limit int) ([]store.OperatorCert, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT `+operatorCertColumns+` FROM operator_certs
		ORDER BY issued DESC NULLS LAST, serial LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list operator certificates: %w", err)
	}
	out, err := collect(rows, scanOperatorCert)
	if err != nil {
		return nil, fmt.Errorf("list operator certificates: %w", err)
	}
	return out, nil
}

// RevokeOperatorCert revokes one serial, seen or not; the first revocation
// keeps its time and author.
func (s *Store) RevokeOperatorCert(ctx context.Context, serial string, at time.Time, by string) (store.OperatorCert, error) {
	c, err := scanOperatorCert(s.pool.QueryRow(ctx, `INSERT INTO operator_certs (serial, revoked_at, revoked_by)
		VALUES ($1, $2, $3)
		ON CONFLICT (serial) DO UPDATE SET
			revoked_by = CASE WHEN operator_certs.revoked_at IS NULL THEN excluded.revoked_by ELSE operator_certs.revoked_by END,
			revoked_at = COALESCE(operator_certs.revoked_at, excluded.revoked_at)
		RETURNING `+operatorCertColumns, serial, timeArg(at), by))
	if err != nil {
		return store.OperatorCert{}, fmt.Errorf("revoke operator certificate %s: %w", serial, err)
	}
	return c, nil
}

// RevokeOperatorName refuses every certificate of name issued before at.
func (s *Store) RevokeOperatorName(ctx context.Context, name string, at time.Time, by string) (int, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO operator_name_revocations (name, revoked_before, revoked_by)
			VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET
				revoked_by = CASE WHEN excluded.revoked_before > operator_name_revocations.revoked_before
					THEN excluded.revoked_by ELSE operator_name_revocations.revoked_by END,
				revoked_before = CASE WHEN excluded.revoked_before > operator_name_revocations.revoked_before
					THEN excluded.revoked_before ELSE operator_name_revocations.revoked_before END`,
			name, at.UnixMilli(), by); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE operator_certs SET revoked_at = $1, revoked_by = $2
			WHERE name = $3 AND revoked_at IS NULL AND issued IS NOT NULL AND issued < $4`,
			at.UnixMilli(), by, name, at.UnixMilli())
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("revoke operator %s: %w", name, err)
	}
	return int(n), nil
}

// OperatorCertRevocation reports the revocation, by serial or by name,
// that refuses a certificate.
func (s *Store) OperatorCertRevocation(ctx context.Context, serial, name string, issued time.Time) (store.OperatorRevocation, bool, error) {
	var (
		at *int64
		by string
	)
	err := s.pool.QueryRow(ctx, `SELECT revoked_at, revoked_by FROM operator_certs
		WHERE serial = $1 AND revoked_at IS NOT NULL`, serial).Scan(&at, &by)
	switch {
	case err == nil:
		return store.OperatorRevocation{Serial: serial, At: timeVal(at), By: by}, true, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return store.OperatorRevocation{}, false, fmt.Errorf("operator certificate %s: %w", serial, err)
	}
	err = s.pool.QueryRow(ctx, `SELECT revoked_before, revoked_by FROM operator_name_revocations
		WHERE name = $1 AND revoked_before > $2`, name, issued.UnixMilli()).Scan(&at, &by)
	switch {
	case err == nil:
		return store.OperatorRevocation{Name: name, At: timeVal(at), By: by}, true, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return store.OperatorRevocation{}, false, fmt.Errorf("operator %s: %w", name, err)
	}
	return store.OperatorRevocation{}, false, nil
}
