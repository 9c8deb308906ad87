package enroll

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// A token reads "ldt_<id>_<secret>": the ID is public (it names the token in
// lists, revocations and the audit log), the secret is 160 random bits and
// only its SHA-256 is stored. A fast hash is enough because the secret is
// random, not a password.
const tokenPrefix = "ldt_"

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return strings.ToLower(b32.EncodeToString(b)), nil
}

// HashSecret returns the stored form of a token secret.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// ErrMalformedToken is returned for strings that are not livedump tokens.
var ErrMalformedToken = errors.New("malformed enrollment token")

// ParseToken splits a token into its ID and secret.
func ParseToken(tok string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), tokenPrefix)
	if !ok {
		return "", "", ErrMalformedToken
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 8 || len(secret) != 32 || !isBase32Lower(id) || !isBase32Lower(secret) {
		return "", "", ErrMalformedToken
	}
	return id, secret, nil
}

func isBase32Lower(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// newToken returns a fresh token ID, secret and the full token string.
func newToken() (id, secret, full string, err error) {
	if id, err = randomString(5); err != nil { // 8 chars
		return "", "", "", err
	}
	if secret, err = randomString(20); err != nil { // 32 chars
		return "", "", "", err
	}
	return id, secret, fmt.Sprintf("%s%s_%s", tokenPrefix, id, secret), nil
}
