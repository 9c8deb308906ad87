package host

import (
	"strings"
	"testing"
)

func TestTrustResult(t *testing.T) {
	for _, tc := range []struct {
		code   uint32
		text   string
		signed bool
		prefix string
	}{
		{0x800B0100, "No signature was present in the subject.\r\n", false, "TRUST_E_NOSIGNATURE: No signature was present in the subject."},
		{0x800B0003, "", false, "TRUST_E_SUBJECT_FORM_UNKNOWN"},
		{0x80096010, "The digital signature of the object did not verify.", true, "TRUST_E_BAD_DIGEST: "},
		{0x800B0109, "", true, "CERT_E_UNTRUSTEDROOT"},
		{0x800B010E, "", true, "CERT_E_REVOCATION_FAILURE"},
		{0x80001234, "odd", true, "0x80001234: odd"},
	} {
		s := TrustResult(tc.code, tc.text)
		if s.Valid || s.Signed != tc.signed || !strings.HasPrefix(s.Problem, tc.prefix) || strings.ContainsAny(s.Problem, "\r\n") {
			t.Errorf("TrustResult(%#x) = %+v, want signed=%v, problem %q...", tc.code, s, tc.signed, tc.prefix)
		}
	}
}

func TestSignatureString(t *testing.T) {
	for s, want := range map[Signature]string{
		{Signed: true, Valid: true, Publisher: "Microsoft Corporation", Organization: "Microsoft Corporation"}: `signed by "Microsoft Corporation"`,
		{Signed: true, Valid: true, Publisher: "Contoso Signing", Organization: "Contoso Ltd"}:                 `signed by "Contoso Signing" (O="Contoso Ltd")`,
		{Signed: true, Problem: "CERT_E_REVOKED"}:                                                              "signature not valid: CERT_E_REVOKED",
		{Problem: "TRUST_E_NOSIGNATURE"}:                                                                       "not signed: TRUST_E_NOSIGNATURE",
	} {
		if got := s.String(); got != want {
			t.Errorf("%+v: %q, want %q", s, got, want)
		}
	}
}
