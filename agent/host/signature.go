package host

import (
	"fmt"
	"strings"
)

// The WinVerifyTrust results the agent names (winerror.h). Codes not here
// are shown in hex.
var trustErrors = map[uint32]string{
	0x800B0100: "TRUST_E_NOSIGNATURE",
	0x800B0003: "TRUST_E_SUBJECT_FORM_UNKNOWN",
	0x800B0001: "TRUST_E_PROVIDER_UNKNOWN",
	0x800B0002: "TRUST_E_ACTION_UNKNOWN",
	0x800B0004: "TRUST_E_SUBJECT_NOT_TRUSTED",
	0x80096010: "TRUST_E_BAD_DIGEST",
	0x80096004: "TRUST_E_CERT_SIGNATURE",
	0x80096002: "TRUST_E_NO_SIGNER_CERT",
	0x800B0111: "TRUST_E_EXPLICIT_DISTRUST",
	0x800B0101: "CERT_E_EXPIRED",
	0x800B0109: "CERT_E_UNTRUSTEDROOT",
	0x800B010A: "CERT_E_CHAINING",
	0x800B010C: "CERT_E_REVOKED",
	0x800B010D: "CERT_E_UNTRUSTEDTESTROOT",
	0x800B010E: "CERT_E_REVOCATION_FAILURE",
	0x800B0110: "CERT_E_WRONG_USAGE",
	0x80092010: "CRYPT_E_REVOKED",
	0x80092012: "CRYPT_E_NO_REVOCATION_CHECK",
	0x80092013: "CRYPT_E_REVOCATION_OFFLINE",
	0x80092009: "CRYPT_E_NO_MATCH",
	0x8009200D: "CRYPT_E_FILE_ERROR",
}

// TrustResult turns a failed WinVerifyTrust (its HRESULT and the system's
// text for it) into a Signature: no signature at all, or a subject
// Authenticode cannot hold one in, is "not signed"; any other failure is a
// signature that is not valid. Pure, so it is tested on every OS.
func TrustResult(code uint32, text string) Signature {
	name, ok := trustErrors[code]
	if !ok {
		name = fmt.Sprintf("0x%08X", code)
	}
	text = strings.Join(strings.Fields(text), " ")
	problem := name
	if text != "" {
		problem += ": " + text
	}
	switch code {
	case 0x800B0100, 0x800B0003, 0x800B0001:
		return Signature{Problem: problem}
	}
	return Signature{Signed: true, Problem: problem}
}
