package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/atomicfile"
	"github.com/livedump/livedump/internal/pki"
)

// Operator certificate lifetimes. Operator certificates can be revoked
// (livedumpctl operators revoke), but a short life still bounds what a
// lost laptop is worth when nobody notices.
const (
	DefaultOperatorCertTTL = 30 * 24 * time.Hour
	MaxOperatorCertTTL     = 365 * 24 * time.Hour
)

// OperatorConfig describes an operator credential written to disk.
type OperatorConfig struct {
	Role       pki.Role
	Name       string
	Dir        string        // where key, certificate, CA and livedumpctl.yaml go
	Controller string        // address livedumpctl should dial
	TTL        time.Duration // certificate lifetime; 0: DefaultOperatorCertTTL
	// Store, when set, records the issued certificate so that it is listed
	// (livedumpctl operators list) before its first use.
	Store store.Store
}

// WriteOperatorCredentials issues an operator certificate from ca and writes
// <name>.key (0600), <name>.crt, ca.crt and a livedumpctl.yaml that points at
// them with paths relative to the file. It returns the config file's path.
func WriteOperatorCredentials(ca *pki.CA, cfg OperatorConfig, now time.Time) (string, error) {
	id := pki.OperatorIdentity(cfg.Role, cfg.Name)
	if err := id.Validate(); err != nil {
		return "", err
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultOperatorCertTTL
	}
	if cfg.TTL < time.Hour || cfg.TTL > MaxOperatorCertTTL {
		return "", fmt.Errorf("ttl: %s is outside 1h-%s", cfg.TTL, MaxOperatorCertTTL)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return "", err
	}
	csrDER, err := pki.CreateCSR(key)
	if err != nil {
		return "", err
	}
	csr, err := pki.ParseCSR(csrDER)
	if err != nil {
		return "", err
	}
	cert, err := ca.SignClient(csr, id, now, cfg.TTL)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return "", err
	}
	keyFile, certFile := cfg.Name+".key", cfg.Name+".crt"
	if err := pki.WriteKey(filepath.Join(cfg.Dir, keyFile), key); err != nil {
		return "", err
	}
	if err := pki.WriteCerts(filepath.Join(cfg.Dir, certFile), cert); err != nil {
		return "", err
	}
	if err := pki.WriteCerts(filepath.Join(cfg.Dir, pki.CACertFile), ca.Cert); err != nil {
		return "", err
	}
	conf := fmt.Sprintf("# livedumpctl credentials for %s, valid until %s.\ncontroller: %s\nca: %s\ncert: %s\nkey: %s\n",
		id, cert.NotAfter.UTC().Format(time.RFC3339), cfg.Controller, pki.CACertFile, certFile, keyFile)
	path := filepath.Join(cfg.Dir, "livedumpctl.yaml")
	if err := atomicfile.Write(path, []byte(conf), 0o600); err != nil {
		return "", err
	}
	if cfg.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := cfg.Store.RecordOperatorCert(ctx, store.OperatorCert{
			Serial: pki.SerialHex(cert), Role: string(cfg.Role), Name: cfg.Name,
			Issued: pki.IssuedAt(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		})
		if err != nil {
			return path, fmt.Errorf("record the certificate (it was written and works): %w", err)
		}
	}
	return path, nil
}
