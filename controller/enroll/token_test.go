package enroll

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

const (
	goodID     = "abcdefgh"
	goodSecret = "abcdefghijklmnopqrstuvwxyz234567" // every base32 character once
)

func TestParseTokenGenerated(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		id, secret, full, err := newToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 8 || len(secret) != 32 {
			t.Fatalf("newToken: id %q (%d), secret %q (%d)", id, len(id), secret, len(secret))
		}
		if want := "ldt_" + id + "_" + secret; full != want {
			t.Fatalf("full token = %q, want %q", full, want)
		}
		gotID, gotSecret, err := ParseToken(full)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", full, err)
		}
		if gotID != id || gotSecret != secret {
			t.Fatalf("ParseToken(%q) = %q, %q; want %q, %q", full, gotID, gotSecret, id, secret)
		}
		if TokenID(full) != id {
			t.Fatalf("TokenID(%q) = %q, want %q", full, TokenID(full), id)
		}
		if seen[secret] {
			t.Fatalf("secret %q generated twice", secret)
		}
		seen[secret] = true
	}
}

func TestParseToken(t *testing.T) {
	good := "ldt_" + goodID + "_" + goodSecret
	tests := []struct {
		name string
		tok  string
		ok   bool
	}{
		{"good", good, true},
		{"surrounding whitespace", "  " + good + "\n", true},
		{"empty", "", false},
		{"prefix only", "ldt_", false},
		{"no prefix", goodID + "_" + goodSecret, false},
		{"wrong prefix", "ldx_" + goodID + "_" + goodSecret, false},
		{"uppercase prefix", "LDT_" + goodID + "_" + goodSecret, false},
		{"prefix without underscore", "ldt" + goodID + "_" + goodSecret, false},
		{"no separator", "ldt_" + goodID + goodSecret, false},
		{"dash separator", "ldt_" + goodID + "-" + goodSecret, false},
		{"id 7", "ldt_" + goodID[:7] + "_" + goodSecret, false},
		{"id 9", "ldt_" + goodID + "a_" + goodSecret, false},
		{"secret 31", "ldt_" + goodID + "_" + goodSecret[:31], false},
		{"secret 33", "ldt_" + goodID + "_" + goodSecret + "a", false},
		{"empty id", "ldt__" + goodSecret, false},
		{"empty secret", "ldt_" + goodID + "_", false},
		{"uppercase id", "ldt_" + strings.ToUpper(goodID) + "_" + goodSecret, false},
		{"uppercase secret", "ldt_" + goodID + "_" + strings.ToUpper(goodSecret), false},
		{"one uppercase char", "ldt_" + goodID + "_" + "A" + goodSecret[1:], false},
		{"digit 0", "ldt_" + "abcdefg0" + "_" + goodSecret, false},
		{"digit 1", "ldt_" + goodID + "_" + "1" + goodSecret[1:], false},
		{"digit 8", "ldt_" + goodID + "_" + goodSecret[:31] + "8", false},
		{"digit 9", "ldt_" + "9bcdefgh" + "_" + goodSecret, false},
		{"padding", "ldt_" + "abcdefg=" + "_" + goodSecret, false},
		{"extra underscore in secret", "ldt_" + goodID + "_" + goodSecret[:16] + "_" + goodSecret[17:], false},
		{"trailing underscore", "ldt_" + goodID + "_" + goodSecret[:31] + "_", false},
		{"three parts", "ldt_" + goodID + "_" + goodSecret + "_" + goodSecret, false},
		{"double prefix", "ldt_ldt_" + goodID + "_" + goodSecret, false},
		{"inner space", "ldt_" + goodID + "_" + goodSecret[:16] + " " + goodSecret[17:], false},
		{"non-ascii", "ldt_" + "abcdefgé"[:8] + "_" + goodSecret, false},
		{"multibyte same byte length", "ldt_" + "abcdefé" + "_" + goodSecret, false},
		{"nul", "ldt_" + goodID + "_" + goodSecret[:31] + "\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, secret, err := ParseToken(tt.tok)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseToken(%q): %v", tt.tok, err)
				}
				if id != goodID || secret != goodSecret {
					t.Fatalf("ParseToken(%q) = %q, %q", tt.tok, id, secret)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseToken(%q) = %q, %q; want error", tt.tok, id, secret)
			}
			if !errors.Is(err, ErrMalformedToken) {
				t.Errorf("error %v is not ErrMalformedToken", err)
			}
			if id != "" || secret != "" {
				t.Errorf("on error returned id %q secret %q", id, secret)
			}
			if TokenID(tt.tok) != "" {
				t.Errorf("TokenID(%q) = %q, want empty", tt.tok, TokenID(tt.tok))
			}
			// The error must not echo the token: it may hold a real secret.
			if tt.tok != "" && strings.Contains(err.Error(), tt.tok) {
				t.Errorf("error %q echoes the token", err)
			}
		})
	}
}

func TestHashSecret(t *testing.T) {
	a := HashSecret(goodSecret)
	if len(a) != sha256.Size {
		t.Fatalf("len = %d, want %d", len(a), sha256.Size)
	}
	if !bytes.Equal(a, HashSecret(goodSecret)) {
		t.Error("HashSecret is not stable")
	}
	want := sha256.Sum256([]byte(goodSecret))
	if !bytes.Equal(a, want[:]) {
		t.Error("HashSecret is not SHA-256 of the secret: stored hashes would no longer match")
	}
	if bytes.Equal(a, HashSecret(goodSecret[:31]+"a")) {
		t.Error("different secrets hash equally")
	}
	// The result is a fresh slice; callers may keep or modify it.
	a[0] ^= 0xff
	if bytes.Equal(a, HashSecret(goodSecret)) {
		t.Error("HashSecret returns shared memory")
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("ldt_" + goodID + "_" + goodSecret)
	f.Add(" ldt_" + goodID + "_" + goodSecret + "\t")
	f.Add("ldt_" + goodID + "_" + goodSecret[:31])
	f.Add("ldt_ABCDEFGH_" + goodSecret)
	f.Add("ldt_" + goodID + "__" + goodSecret[1:])
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		id, secret, err := ParseToken(tok)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("ParseToken(%q) error %v is not ErrMalformedToken", tok, err)
			}
			if id != "" || secret != "" {
				t.Fatalf("ParseToken(%q) returned %q, %q with an error", tok, id, secret)
			}
			return
		}
		if len(id) != 8 || len(secret) != 32 {
			t.Fatalf("ParseToken(%q) accepted id %q (%d) secret %q (%d)", tok, id, len(id), secret, len(secret))
		}
		for _, s := range []string{id, secret} {
			for _, c := range []byte(s) {
				if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
					t.Fatalf("ParseToken(%q) accepted non-base32 byte %q", tok, c)
				}
			}
		}
		// The canonical form of an accepted token parses to the same parts.
		canon := tokenPrefix + id + "_" + secret
		id2, secret2, err := ParseToken(canon)
		if err != nil || id2 != id || secret2 != secret {
			t.Fatalf("canonical %q of %q = %q, %q, %v", canon, tok, id2, secret2, err)
		}
		if strings.TrimSpace(tok) != canon {
			t.Fatalf("ParseToken(%q) accepted a token that is not its canonical form %q", tok, canon)
		}
	})
}
