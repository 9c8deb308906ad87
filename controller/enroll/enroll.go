// Package enroll turns enrollment tokens into agent identities: it creates
// and checks tokens and signs the CSRs of new and renewing agents.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/selector"
)

// Limits on what an admin may ask of a token.
const (
	MaxTokenUses = 100000
	MinTokenTTL  = time.Minute
	MaxTokenTTL  = 30 * 24 * time.Hour
	// DefaultTokenTTL applies when the request leaves the TTL unset.
	DefaultTokenTTL = 24 * time.Hour
	// DefaultCertTTL is the lifetime of agent certificates.
	DefaultCertTTL = 30 * 24 * time.Hour
	// DefaultRenewGrace is how long the certificate a renewal replaced is
	// still accepted: long enough for an upload under way on the old
	// connection to finish, short enough that a stolen key is worth little
	// once its agent has renewed.
	DefaultRenewGrace = 10 * time.Minute
	// MaxRenewGrace bounds the grace window.
	MaxRenewGrace = 24 * time.Hour
)

// InvalidArgumentError names the request field that was rejected and why.
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string { return e.Field + ": " + e.Reason }

// ErrDenied is returned for every token or identity problem an unauthenticated
// caller could learn from (unknown, expired, used up, revoked). The reason is
// logged and audited, never returned, so tokens cannot be probed.
var ErrDenied = errors.New("enrollment denied")

// Config configures an Enroller.
type Config struct {
	Store   store.Store
	CA      *pki.CA
	Clock   clockwork.Clock // default: real clock
	CertTTL time.Duration   // default: DefaultCertTTL
	// RenewGrace is how long a renewed agent's previous certificate is
	// still accepted (never for another renewal); 0 means
	// DefaultRenewGrace, negative means not at all.
	RenewGrace time.Duration
	// Renewed, if set, is told of every renewal: the streams still open
	// with the replaced certificate must end when graceUntil passes.
	Renewed func(ctx context.Context, agentID, oldSerial string, graceUntil time.Time)
}

// Enroller creates tokens, enrolls agents and renews their certificates.
type Enroller struct {
	cfg Config
}

// New returns an Enroller, filling defaults.
func New(cfg Config) *Enroller {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = DefaultCertTTL
	}
	if cfg.RenewGrace == 0 {
		cfg.RenewGrace = DefaultRenewGrace
	}
	cfg.RenewGrace = min(cfg.RenewGrace, MaxRenewGrace)
	return &Enroller{cfg: cfg}
}

// CertTTL is the lifetime of the certificates this Enroller issues.
func (e *Enroller) CertTTL() time.Duration { return e.cfg.CertTTL }

// RenewGrace is how long a replaced agent certificate is still accepted
// after a renewal; zero when it is not accepted at all.
func (e *Enroller) RenewGrace() time.Duration { return max(e.cfg.RenewGrace, 0) }

// TokenRequest is what an admin asks for when creating a token.
type TokenRequest struct {
	Uses      int
	TTL       time.Duration
	Labels    map[string]string
	CreatedBy string
}

// CreateToken validates req, stores the hashed token and returns it with the
// full token string, which is never stored and cannot be shown again.
func (e *Enroller) CreateToken(ctx context.Context, req TokenRequest) (store.Token, string, error) {
	if req.Uses == 0 {
		req.Uses = 1
	}
	if req.Uses < 1 || req.Uses > MaxTokenUses {
		return store.Token{}, "", &InvalidArgumentError{"uses", fmt.Sprintf("must be between 1 and %d, got %d", MaxTokenUses, req.Uses)}
	}
	if req.TTL == 0 {
		req.TTL = DefaultTokenTTL
	}
	if req.TTL < MinTokenTTL || req.TTL > MaxTokenTTL {
		return store.Token{}, "", &InvalidArgumentError{"ttl", fmt.Sprintf("must be between %s and %s, got %s", MinTokenTTL, MaxTokenTTL, req.TTL)}
	}
	if err := selector.ValidateUserLabels(req.Labels); err != nil {
		return store.Token{}, "", &InvalidArgumentError{"labels", err.Error()}
	}
	now := e.cfg.Clock.Now().UTC()
	for range 3 { // token IDs are 40 random bits; retry the rare collision
		id, secret, full, err := newToken()
		if err != nil {
			return store.Token{}, "", err
		}
		t := store.Token{
			ID:         id,
			SecretHash: HashSecret(secret),
			Uses:       req.Uses,
			UsesLeft:   req.Uses,
			Labels:     maps.Clone(req.Labels),
			Created:    now,
			Expires:    now.Add(req.TTL),
			CreatedBy:  req.CreatedBy,
		}
		if t.Labels == nil {
			t.Labels = map[string]string{}
		}
		err = e.cfg.Store.CreateToken(ctx, t)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return store.Token{}, "", fmt.Errorf("create token: %w", err)
		}
		return t, full, nil
	}
	return store.Token{}, "", errors.New("create token: could not find a free token ID")
}

// EnrollRequest is an agent's first contact.
type EnrollRequest struct {
	Token     string
	CSR       []byte
	Labels    map[string]string // asked for by the installer; token labels win
	Inventory store.Agent       // inventory fields only
}

// Enrollment is the result of a successful enrollment.
type Enrollment struct {
	AgentID string
	TokenID string
	Cert    *x509.Certificate
}

// TokenID returns the public ID of a token string, or "" if it is malformed.
// It lets the audit log name the token without its secret.
func TokenID(tok string) string {
	id, _, err := ParseToken(tok)
	if err != nil {
		return ""
	}
	return id
}

// Enroll consumes one use of the token, creates the agent and signs its CSR.
// Token problems return an error wrapping ErrDenied with the precise reason.
func (e *Enroller) Enroll(ctx context.Context, req EnrollRequest) (Enrollment, error) {
	id, secret, err := ParseToken(req.Token)
	if err != nil {
		return Enrollment{}, &InvalidArgumentError{"token", err.Error()}
	}
	csr, err := pki.ParseCSR(req.CSR)
	if err != nil {
		return Enrollment{}, &InvalidArgumentError{"csr", err.Error()}
	}
	if err := selector.ValidateUserLabels(req.Labels); err != nil {
		return Enrollment{}, &InvalidArgumentError{"labels", err.Error()}
	}
	now := e.cfg.Clock.Now().UTC()
	tok, err := e.cfg.Store.ConsumeToken(ctx, id, HashSecret(secret), now)
	if err != nil {
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenExpired),
			errors.Is(err, store.ErrTokenExhausted), errors.Is(err, store.ErrTokenRevoked):
			return Enrollment{}, fmt.Errorf("%w: token %s: %w", ErrDenied, id, err)
		}
		return Enrollment{}, fmt.Errorf("consume token %s: %w", id, err)
	}
	labels := maps.Clone(req.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, tok.Labels)

	// Only the inventory fields come from the request; identity, revocation
	// and certificate fields are the controller's to set.
	inv := req.Inventory
	a := store.Agent{
		Hostname: inv.Hostname, OSBuild: inv.OSBuild, OSUBR: inv.OSUBR, OSEdition: inv.OSEdition,
		OSProductName: inv.OSProductName, OSInstallationType: inv.OSInstallationType, Arch: inv.Arch,
		AgentVersion: inv.AgentVersion,
	}
	a.Labels = labels
	a.FirstSeen, a.LastSeen = now, now
	for range 3 { // IDs are 64 random bits; a retry only guards against the impossible.
		a.ID, err = newAgentID()
		if err != nil {
			return Enrollment{}, err
		}
		cert, err := e.cfg.CA.SignClient(csr, pki.AgentIdentity(a.ID), now, e.cfg.CertTTL)
		if err != nil {
			return Enrollment{}, err
		}
		a.CertSerial, a.CertExpiry = pki.SerialHex(cert), cert.NotAfter
		err = e.cfg.Store.CreateAgent(ctx, a)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return Enrollment{}, fmt.Errorf("create agent: %w", err)
		}
		return Enrollment{AgentID: a.ID, TokenID: id, Cert: cert}, nil
	}
	return Enrollment{}, errors.New("create agent: could not find a free agent ID")
}

// Renew signs a new certificate for an enrolled, unrevoked agent. The
// certificate it replaces stays accepted for RenewGrace; the caller
// (AgentServer.Renew) ends the streams still using it once that has passed.
func (e *Enroller) Renew(ctx context.Context, agentID string, csrDER []byte) (*x509.Certificate, error) {
	csr, err := pki.ParseCSR(csrDER)
	if err != nil {
		return nil, &InvalidArgumentError{"csr", err.Error()}
	}
	a, err := e.cfg.Store.GetAgent(ctx, agentID)
	if err != nil {
		return nil, fmt.Errorf("renew %s: %w", agentID, err)
	}
	if a.Revoked {
		return nil, fmt.Errorf("%w: agent %s is revoked", ErrDenied, agentID)
	}
	now := e.cfg.Clock.Now().UTC()
	cert, err := e.cfg.CA.SignClient(csr, pki.AgentIdentity(agentID), now, e.cfg.CertTTL)
	if err != nil {
		return nil, err
	}
	var graceUntil time.Time
	if g := e.RenewGrace(); g > 0 {
		graceUntil = now.Add(g)
	}
	if err := e.cfg.Store.SetCertificate(ctx, agentID, pki.SerialHex(cert), cert.NotAfter, graceUntil); err != nil {
		return nil, fmt.Errorf("renew %s: %w", agentID, err)
	}
	if e.cfg.Renewed != nil && a.CertSerial != "" {
		until := graceUntil
		if until.IsZero() {
			until = now // no grace: the replaced certificate's streams end now
		}
		e.cfg.Renewed(ctx, agentID, a.CertSerial, until)
	}
	return cert, nil
}

func newAgentID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
