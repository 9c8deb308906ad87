// Package blobstore keeps files content-addressed on the filesystem, under
// sha256/ab/cdef... by the hex SHA-256 of their content. A file enters the
// store only after its hash is known and checked, so a reader never sees a
// partial or corrupt blob, and identical content is stored once.
package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// ErrNotFound is returned for a hash the store does not hold.
var ErrNotFound = errors.New("blob not found")

// ErrHashMismatch is returned when content does not hash to what the writer
// promised.
var ErrHashMismatch = errors.New("content does not match its SHA-256")

var hexSHA = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSHA256 reports whether s is a lower-case hex SHA-256. Hashes become
// paths, so nothing else is accepted.
func ValidSHA256(s string) error {
	if !hexSHA.MatchString(s) {
		return fmt.Errorf("sha256 %q: want 64 lower-case hex digits", s)
	}
	return nil
}

// Store is a content-addressed directory.
type Store struct {
	dir string
}

// New opens (creating if needed) the store rooted at dir.
func New(dir string) (*Store, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir}, nil
}

// Path returns where the blob with hash sum lives (whether or not it exists).
func (s *Store) Path(sum string) (string, error) {
	if err := ValidSHA256(sum); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, "sha256", sum[:2], sum[2:]), nil
}

// Put streams r into the store, at most max bytes, and returns the content's
// hash and size. If want is not empty the content must hash to it. Content
// already present is not written twice.
func (s *Store) Put(r io.Reader, want string, max int64) (sum string, size int64, err error) {
	if want != "" {
		if err := ValidSHA256(want); err != nil {
			return "", 0, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err == nil && size > max {
		err = fmt.Errorf("content is larger than the %d-byte limit", max)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", 0, fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, sum, want)
	}
	dst, _ := s.Path(sum)
	if _, err := os.Stat(dst); err == nil {
		return sum, size, nil // deduplicated
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, err
	}
	return sum, size, nil
}

// Open opens the blob with hash sum for reading.
func (s *Store) Open(sum string) (*os.File, error) {
	p, err := s.Path(sum)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, sum)
	}
	return f, err
}

// Adopt moves a file whose content hashes to sum (checked by the caller)
// into the store. If the content is already stored the file is removed:
// identical dumps are kept once.
func (s *Store) Adopt(path, sum string) error {
	dst, err := s.Path(sum)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dst); err == nil {
		return os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.Rename(path, dst)
}

// Has reports whether the store holds content with hash sum.
func (s *Store) Has(sum string) bool {
	p, err := s.Path(sum)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}
