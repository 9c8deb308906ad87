package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// RecordOperatorCert inserts an operator certificate or updates when it
// was seen (the RecordOperatorCert statement), never its revocation.
func (s *Store) RecordOperatorCert(ctx context.Context, c store.OperatorCert) error {
	_, err := s.w.Exec(ctx, RecordOperatorCert,
		c.Serial, c.Role, c.Name, TimeArg(c.Issued), TimeArg(c.NotBefore), TimeArg(c.NotAfter),
		TimeArg(c.FirstSeen), TimeArg(c.LastSeen))
	if err != nil {
		return fmt.Errorf("record operator certificate %s: %w", c.Serial, err)
	}
	return nil
}

// ListOperatorCerts returns recorded operator certificates, newest issued
// first, serials never seen last.
func (s *Store) ListOperatorCerts(ctx context.Context, limit int) ([]store.OperatorCert, error) {
	return list(ctx, s.r, "list operator certificates", ScanOperatorCert, ListOperatorCerts, store.OperatorCertLimit(limit))
}

// RevokeOperatorCert revokes one serial, seen or not; the first revocation
// keeps its time and author.
func (s *Store) RevokeOperatorCert(ctx context.Context, serial string, at time.Time, by string) (store.OperatorCert, error) {
	c, err := ScanOperatorCert(s.w.QueryRow(ctx, RevokeOperatorCert, serial, TimeArg(at), by))
	if err != nil {
		return store.OperatorCert{}, fmt.Errorf("revoke operator certificate %s: %w", serial, err)
	}
	return c, nil
}

// RevokeOperatorName refuses every certificate of name issued before at.
func (s *Store) RevokeOperatorName(ctx context.Context, name string, at time.Time, by string) (int, error) {
	var n int64
	err := s.w.InTx(ctx, func(tx DB) error {
		if _, err := tx.Exec(ctx, RevokeOperatorName, name, at.UnixMilli(), by); err != nil {
			return err
		}
		var err error
		n, err = tx.Exec(ctx, MarkOperatorNameRevoked, at.UnixMilli(), by, name, at.UnixMilli())
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
	r, ok, err := ScanOperatorRevocation(s.r.QueryRow(ctx, OperatorCertRevocation, serial, name, issued.UnixMilli()), serial, name)
	if err != nil {
		return store.OperatorRevocation{}, false, fmt.Errorf("operator certificate %s of %s: %w", serial, name, err)
	}
	return r, ok, nil
}
