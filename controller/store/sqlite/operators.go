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

func scanOperatorCert(sc rowScanner) (store.OperatorCert, error) {
	var (
		c                                    store.OperatorCert
		issued, nb, na, first, last, revoked sql.NullInt64
	)
	if err := sc.Scan(&c.Serial, &c.Role, &c.Name, &issued, &nb, &na, &first, &last, &revoked, &c.RevokedBy); err != nil {
		return store.OperatorCert{}, err
	}
	c.Issued, c.NotBefore, c.NotAfter = timeVal(issued), timeVal(nb), timeVal(na)
	c.FirstSeen, c.LastSeen, c.RevokedAt = timeVal(first), timeVal(last), timeVal(revoked)
	return c, nil
}

// RecordOperatorCert inserts an operator certificate or updates when it
// was seen (sqlstore.RecordOperatorCert), never its revocation.
func (s *Store) RecordOperatorCert(ctx context.Context, c store.OperatorCert) error {
	_, err := s.w.ExecContext(ctx, sqlstore.RecordOperatorCert,
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
	rows, err := s.r.QueryContext(ctx, sqlstore.ListOperatorCerts, store.OperatorCertLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list operator certificates: %w", err)
	}
	defer rows.Close()
	out := []store.OperatorCert{}
	for rows.Next() {
		c, err := scanOperatorCert(rows)
		if err != nil {
			return nil, fmt.Errorf("list operator certificates: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list operator certificates: %w", err)
	}
	return out, nil
}

// RevokeOperatorCert revokes one serial, seen or not; the first revocation
// keeps its time and author.
func (s *Store) RevokeOperatorCert(ctx context.Context, serial string, at time.Time, by string) (store.OperatorCert, error) {
	c, err := scanOperatorCert(s.w.QueryRowContext(ctx, sqlstore.RevokeOperatorCert, serial, timeArg(at), by))
	if err != nil {
		return store.OperatorCert{}, fmt.Errorf("revoke operator certificate %s: %w", serial, err)
	}
	return c, nil
}

// RevokeOperatorName refuses every certificate of name issued before at.
func (s *Store) RevokeOperatorName(ctx context.Context, name string, at time.Time, by string) (int, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqlstore.RevokeOperatorName, name, at.UnixMilli(), by); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, sqlstore.MarkOperatorNameRevoked, at.UnixMilli(), by, name, at.UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
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
		bySerial bool
		at       sql.NullInt64
		by       string
	)
	err := s.r.QueryRowContext(ctx, sqlstore.OperatorCertRevocation, serial, name, issued.UnixMilli()).Scan(&bySerial, &at, &by)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.OperatorRevocation{}, false, nil
	case err != nil:
		return store.OperatorRevocation{}, false, fmt.Errorf("operator certificate %s of %s: %w", serial, name, err)
	}
	return sqlstore.Revocation(bySerial, serial, name, timeVal(at), by), true, nil
}
