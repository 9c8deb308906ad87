package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/ids"
)

// InstallerPolicy is the agent's own rule for which installers it runs as
// SYSTEM. It comes from the agent's local configuration (installer_publishers,
// installer_sha256), never from the controller: a controller that is
// compromised or impersonated can send any MSI, and the SHA-256 it sends
// along only proves the download arrived whole.
type InstallerPolicy struct {
	// Publishers are the signers whose installers run: a valid
	// Authenticode signature whose leaf certificate's subject CN or O is
	// one of these (compared case-insensitively). Nil means
	// DefaultInstallerPublishers; empty means none.
	Publishers []string
	// SHA256 are installers that run whatever their signature, by the
	// lower-case hex SHA-256 of their content (set at install time from
	// the agent MSI's INSTALLER_SHA256 property).
	SHA256 []string
}

// DefaultInstallerPublishers is who may sign the DTrace MSI unless the
// agent's configuration says otherwise.
var DefaultInstallerPublishers = []string{host.DTracePublisher}

// MaxInstallerPublisher bounds one publisher name.
const MaxInstallerPublisher = 256

// withDefaults fills a nil publisher list.
func (p InstallerPolicy) withDefaults() InstallerPolicy {
	if p.Publishers == nil {
		p.Publishers = slices.Clone(DefaultInstallerPublishers)
	}
	return p
}

// Validate checks the policy the way the configuration keys are named.
func (p InstallerPolicy) Validate() error {
	for _, name := range p.Publishers {
		if strings.TrimSpace(name) == "" || len(name) > MaxInstallerPublisher || strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return fmt.Errorf("installer_publishers: %s: want 1 to %d printable characters", host.Quote(name), MaxInstallerPublisher)
		}
	}
	for _, sum := range p.SHA256 {
		if err := ids.SHA256(sum); err != nil {
			return fmt.Errorf("installer_sha256: %w", err)
		}
	}
	return nil
}

func (p InstallerPolicy) publisherAllowed(s host.Signature) bool {
	for _, name := range p.Publishers {
		name = strings.TrimSpace(name)
		if strings.EqualFold(name, s.Publisher) || (s.Organization != "" && strings.EqualFold(name, s.Organization)) {
			return true
		}
	}
	return false
}

// Why an installer was refused: the label values of
// livedump_agent_installer_refused_total.
const (
	refusedUnsigned     = "unsigned"
	refusedInvalid      = "invalid_signature"
	refusedPublisher    = "publisher"
	refusedUnverifiable = "unverifiable"
)

// InstallerRefusedError says why the agent would not run an installer.
type InstallerRefusedError struct {
	Path, SHA256 string
	Reason       string // one of the refused* values
	Signature    host.Signature
	Err          error // set when the signature could not be checked
}

func (e *InstallerRefusedError) Error() string {
	var what string
	switch e.Reason {
	case refusedUnsigned:
		what = fmt.Sprintf("%s is not signed (%s)", e.Path, e.Signature.Problem)
	case refusedInvalid:
		what = fmt.Sprintf("the signature of %s is not valid (%s)", e.Path, e.Signature.Problem)
	case refusedPublisher:
		what = fmt.Sprintf("%s is %s, not on installer_publishers", e.Path, e.Signature)
	default:
		what = fmt.Sprintf("the signature of %s could not be checked (%v)", e.Path, e.Err)
	}
	return fmt.Sprintf("installer refused: %s; and its sha256 %s is not on installer_sha256 (the agent's local allow-lists decide, not the controller)", what, e.SHA256)
}

func (e *InstallerRefusedError) Unwrap() error { return e.Err }

// installerMetrics counts refusals by reason.
type installerMetrics struct {
	refused *prometheus.CounterVec
}

func newInstallerMetrics(reg prometheus.Registerer) installerMetrics {
	m := installerMetrics{refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livedump_agent_installer_refused_total",
		Help: "Installers the agent refused to run: not signed, signature not valid, publisher not on installer_publishers (and SHA-256 not on installer_sha256), or the signature could not be checked.",
	}, []string{"reason"})}
	for _, r := range []string{refusedUnsigned, refusedInvalid, refusedPublisher, refusedUnverifiable} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.refused)
	}
	return m
}

// checkInstaller decides whether msi may run: its SHA-256 is on the local
// allow-list, or it carries a valid Authenticode signature by an allowed
// publisher. A refusal is logged and counted; the error says why and
// reaches the controller in the provisioning report.
func (p *Provisioner) checkInstaller(ctx context.Context, msi string) error {
	sum, err := fileSHA256(msi)
	if err != nil {
		return fmt.Errorf("installer %s: %w", msi, err)
	}
	pol := p.cfg.Installers
	if slices.Contains(pol.SHA256, sum) {
		p.cfg.Logger.Info("installer allowed by installer_sha256", "path", msi, "sha256", sum)
		return nil
	}
	sig, err := p.cfg.Host.VerifySignature(ctx, msi)
	var refused *InstallerRefusedError
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return err
		}
		refused = &InstallerRefusedError{Reason: refusedUnverifiable, Err: err}
	case !sig.Signed:
		refused = &InstallerRefusedError{Reason: refusedUnsigned}
	case !sig.Valid:
		refused = &InstallerRefusedError{Reason: refusedInvalid}
	case !pol.publisherAllowed(sig):
		refused = &InstallerRefusedError{Reason: refusedPublisher}
	default:
		p.cfg.Logger.Info("installer allowed by installer_publishers", "path", msi, "sha256", sum, "publisher", sig.Publisher, "organization", sig.Organization)
		return nil
	}
	refused.Path, refused.SHA256, refused.Signature = msi, sum, sig
	p.metrics.refused.WithLabelValues(refused.Reason).Inc()
	p.cfg.Logger.Warn("installer refused", "path", msi, "sha256", sum, "reason", refused.Reason,
		"signature", sig.String(), "installer_publishers", strings.Join(pol.Publishers, ","))
	return refused
}

// fileSHA256 is the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
