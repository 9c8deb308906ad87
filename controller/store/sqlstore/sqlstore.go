// Package sqlstore is the one implementation of store.Store for SQL
// databases: Store runs every method over a DB (statements with ?
// placeholders, rows affected, transactions) and asks a Dialect for what
// the database does its own way (locking, batching, the few statements
// worded differently). It also holds the statements both databases run,
// with their column lists and the rules they encode, one scan function per
// row type, Collect, the "no row" mapping, and the encodings of time and
// JSON columns. The sqlite and postgres packages keep Open and Close,
// their migrations, the adapter of their driver to DB, and their Dialect.
package sqlstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Rebind turns the ? placeholders of q into PostgreSQL's $1, $2, ... in
// order, leaving ? inside quoted strings and identifiers alone.
func Rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte // the quote character we are inside, or 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote closes and reopens: same result
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// BlobArg keeps NOT NULL blob columns from receiving NULL, which is what
// both drivers send for a nil slice.
func BlobArg(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// EncodeLabels encodes labels as a JSON object; nil becomes "{}" so the
// column never holds JSON null.
func EncodeLabels(m map[string]string) (string, error) {
	if m == nil {
		m = map[string]string{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode labels: %w", err)
	}
	return string(b), nil
}

// DecodeLabels decodes a labels column. It always returns a non-nil map so
// callers can add to it without a nil check.
func DecodeLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	if s == "" {
		return m, nil
	}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode labels: %w", err)
	}
	if m == nil { // the text was JSON null
		m = map[string]string{}
	}
	return m, nil
}

// EncodeWarnings encodes a capture's warnings as a JSON array, never null.
func EncodeWarnings(w []string) (string, error) {
	b, err := json.Marshal(append([]string{}, w...))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// DecodeWarnings decodes the warnings column of capture id.
func DecodeWarnings(id, s string) ([]string, error) {
	var w []string
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return nil, fmt.Errorf("capture %s warnings: %w", id, err)
	}
	return w, nil
}

// Revocation is the store.OperatorRevocation a row of
// OperatorCertRevocation describes.
func Revocation(bySerial bool, serial, name string, at time.Time, by string) store.OperatorRevocation {
	if bySerial {
		return store.OperatorRevocation{Serial: serial, At: at, By: by}
	}
	return store.OperatorRevocation{Name: name, At: at, By: by}
}
