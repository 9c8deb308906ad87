package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/livedump/livedump/agent/host"
)

// sigStream starts the signature of a simulated package, after the
// manifest, as a signed .msi holds its signature in a stream named
// "\x05DigitalSignature". The manifest is JSON, in which a raw 0x05 byte
// cannot occur, so the split is unambiguous.
var sigStream = []byte("\x05DigitalSignature")

// MSISigner is who signs a simulated package and how far Windows trusts
// the certificate. The simulation has no cryptography: a signature is a
// record of the signer and a digest of the signed bytes, so changing a
// signed package after signing is caught (TRUST_E_BAD_DIGEST) but anyone
// can write one. What it models is the agent's decision, not the
// strength of Authenticode.
type MSISigner struct {
	// Publisher is the subject CN of the signing certificate.
	Publisher string `json:"publisher"`
	// Organization is its subject O; empty for none.
	Organization string `json:"organization,omitempty"`
	// Untrusted makes the chain end at a root the machine does not trust,
	// as with a self-signed certificate: CERT_E_UNTRUSTEDROOT.
	Untrusted bool `json:"untrusted,omitempty"`
	// Revoked makes the signing certificate revoked: CERT_E_REVOKED.
	Revoked bool `json:"revoked,omitempty"`
}

// DTraceSigner signs the simulated DTrace packages of development mode and
// the tests, as Microsoft signs the real one.
var DTraceSigner = MSISigner{Publisher: host.DTracePublisher, Organization: host.DTracePublisher}

// simSignature is the stored signature: the signer and the digest of
// everything before the signature stream together with the signer.
type simSignature struct {
	MSISigner
	Digest string `json:"digest"`
}

func sigDigest(signed []byte, s MSISigner) string {
	js, _ := json.Marshal(s)
	h := sha256.New()
	h.Write(signed)
	h.Write(js)
	return hex.EncodeToString(h.Sum(nil))
}

// SignMSI returns a copy of the unsigned simulated package pkg (from
// BuildMSI) with a simulated Authenticode signature by s.
func SignMSI(pkg []byte, s MSISigner) ([]byte, error) {
	if s.Publisher == "" || len(s.Publisher) > 256 || len(s.Organization) > 256 {
		return nil, errors.New("sim: sign MSI: publisher must have 1 to 256 characters, organization at most 256")
	}
	if bytes.Contains(pkg, sigStream) {
		return nil, errors.New("sim: sign MSI: the package is already signed")
	}
	if _, err := parseMSI(pkg); err != nil {
		return nil, fmt.Errorf("sim: sign MSI: %w", err)
	}
	js, err := json.Marshal(simSignature{MSISigner: s, Digest: sigDigest(pkg, s)})
	if err != nil {
		return nil, err
	}
	out := slices.Concat(pkg, sigStream, js)
	return out, nil
}

// BuildSignedMSI is BuildMSI followed by SignMSI.
func BuildSignedMSI(m MSIManifest, s MSISigner) ([]byte, error) {
	pkg, err := BuildMSI(m)
	if err != nil {
		return nil, err
	}
	return SignMSI(pkg, s)
}

// The WinVerifyTrust results the simulation gives, worded as Windows
// words them.
const (
	problemFormUnknown = "TRUST_E_SUBJECT_FORM_UNKNOWN: The form specified for the subject is not one supported or known by the specified trust provider."
	problemNoSignature = "TRUST_E_NOSIGNATURE: No signature was present in the subject."
	problemBadDigest   = "TRUST_E_BAD_DIGEST: The digital signature of the object did not verify."
	problemUntrusted   = "CERT_E_UNTRUSTEDROOT: A certificate chain processed, but terminated in a root certificate which is not trusted by the trust provider."
	problemRevoked     = "CERT_E_REVOKED: A certificate was explicitly revoked by its issuer."
)

// VerifySignature plays WinVerifyTrust on a file of the agent's own file
// system (as InstallMSI, in development a Linux path): a file that is not a
// package is of an unknown form, a package without a signature stream is
// unsigned, a signature whose digest does not match the content (the
// package or the signer changed after signing) is not valid, nor is one
// whose certificate is untrusted or revoked. Only a valid signature names
// its publisher.
func (h *Host) VerifySignature(ctx context.Context, path string) (host.Signature, error) {
	if err := ctxErr(ctx); err != nil {
		return host.Signature{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return host.Signature{}, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxMSISize {
		return host.Signature{}, fmt.Errorf("%s: not a regular file of at most %d bytes", path, maxMSISize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return host.Signature{}, err
	}
	if !bytes.HasPrefix(data, msiMagic) {
		return host.Signature{Problem: problemFormUnknown}, nil
	}
	i := bytes.Index(data, sigStream)
	if i < 0 {
		return host.Signature{Problem: problemNoSignature}, nil
	}
	signed, raw := data[:i], data[i+len(sigStream):]
	var sig simSignature
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sig); err != nil || dec.More() || sig.Digest != sigDigest(signed, sig.MSISigner) {
		return host.Signature{Signed: true, Problem: problemBadDigest}, nil
	}
	switch {
	case sig.Untrusted:
		return host.Signature{Signed: true, Problem: problemUntrusted}, nil
	case sig.Revoked:
		return host.Signature{Signed: true, Problem: problemRevoked}, nil
	}
	return host.Signature{Signed: true, Valid: true, Publisher: sig.Publisher, Organization: sig.Organization}, nil
}
