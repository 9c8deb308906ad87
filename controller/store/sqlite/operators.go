package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// RecordOperatorCert inserts an operator certificate or updates when it
// was seen (sqlstore.RecordOperatorCert), never its revocation.
func (s *Store) RecordOperatorCert(ctx context.Context, c store.OperatorCert) error {
	_, err := s.w.ExecContext(ctx, sqlstore.RecordOperatorCert,
		c.Serial, c.Role, c.Name, sqlstore.TimeArg(c.Issued), sqlstore.TimeArg(c.NotBefore), sqlstore.TimeArg(c.NotAfter),
		sqlstore.TimeArg(c.FirstSeen), sqlstore.TimeArg(c.LastSeen))
	if err != nil {
		return fmt.Errorf("record operator certificate %s: %w", c.Serial, err)
	}
	return nil
}

// ListOperatorCerts returns recorded operator certificates, newest issued
// first, serials never seen last.
func (s *Store) ListOperatorCerts(ctx context.Context, limit int) ([]store.OperatorCert, error) {
	return list(ctx, s.r, "list operator certificates", sqlstore.ScanOperatorCert, sqlstore.ListOperatorCerts, store.OperatorCertLimit(limit))
}

// RevokeOperatorCert revokes one serial, seen or not; the first revocation
// keeps its time and author.
func (s *Store) RevokeOperatorCert(ctx context.Context, serial string, at time.Time, by string) (store.OperatorCert, error) {
	c, err := sqlstore.ScanOperatorCert(s.w.QueryRowContext(ctx, sqlstore.RevokeOperatorCert, serial, sqlstore.TimeArg(at), by))
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
	r, ok, err := sqlstore.ScanOperatorRevocation(s.r.QueryRowContext(ctx, sqlstore.OperatorCertRevocation, serial, name, issued.UnixMilli()), serial, name)
	if err != nil {
		return store.OperatorRevocation{}, false, fmt.Errorf("operator certificate %s of %s: %w", serial, name, err)
	}
	return r, ok, nil
}
