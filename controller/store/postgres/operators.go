package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// The operator certificate statements, numbered for PostgreSQL.
var (
	recordOperatorCertSQL      = sqlstore.Rebind(sqlstore.RecordOperatorCert)
	listOperatorCertsSQL       = sqlstore.Rebind(sqlstore.ListOperatorCerts)
	revokeOperatorCertSQL      = sqlstore.Rebind(sqlstore.RevokeOperatorCert)
	revokeOperatorNameSQL      = sqlstore.Rebind(sqlstore.RevokeOperatorName)
	markOperatorNameRevokedSQL = sqlstore.Rebind(sqlstore.MarkOperatorNameRevoked)
	operatorCertRevocationSQL  = sqlstore.Rebind(sqlstore.OperatorCertRevocation)
)

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
// was seen (sqlstore.RecordOperatorCert), never its revocation.
func (s *Store) RecordOperatorCert(ctx context.Context, c store.OperatorCert) error {
	_, err := s.pool.Exec(ctx, recordOperatorCertSQL,
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
	rows, err := s.pool.Query(ctx, listOperatorCertsSQL, store.OperatorCertLimit(limit))
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
	c, err := scanOperatorCert(s.pool.QueryRow(ctx, revokeOperatorCertSQL, serial, timeArg(at), by))
	if err != nil {
		return store.OperatorCert{}, fmt.Errorf("revoke operator certificate %s: %w", serial, err)
	}
	return c, nil
}

// RevokeOperatorName refuses every certificate of name issued before at.
func (s *Store) RevokeOperatorName(ctx context.Context, name string, at time.Time, by string) (int, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, revokeOperatorNameSQL, name, at.UnixMilli(), by); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, markOperatorNameRevokedSQL, at.UnixMilli(), by, name, at.UnixMilli())
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
		bySerial bool
		at       *int64
		by       string
	)
	err := s.pool.QueryRow(ctx, operatorCertRevocationSQL, serial, name, issued.UnixMilli()).Scan(&bySerial, &at, &by)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.OperatorRevocation{}, false, nil
	case err != nil:
		return store.OperatorRevocation{}, false, fmt.Errorf("operator certificate %s of %s: %w", serial, name, err)
	}
	return sqlstore.Revocation(bySerial, serial, name, timeVal(at), by), true, nil
}
