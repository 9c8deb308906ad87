package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPutOpenDedup(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	content := strings.Repeat("dtrace msi ", 1000)
	h := sha256.Sum256([]byte(content))
	want := hex.EncodeToString(h[:])

	sum, size, err := s.Put(strings.NewReader(content), "", 1<<20)
	if err != nil || sum != want || size != int64(len(content)) {
		t.Fatalf("Put = %s %d %v", sum, size, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sha256", want[:2], want[2:])); err != nil {
		t.Fatalf("blob not at its content address: %v", err)
	}
	// Same content with the hash promised: stored once.
	if sum2, _, err := s.Put(strings.NewReader(content), want, 1<<20); err != nil || sum2 != want {
		t.Fatalf("second Put = %s %v", sum2, err)
	}
	f, err := s.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != content {
		t.Fatal("content changed")
	}
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

func TestPutRejects(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("0", 64)
	if _, _, err := s.Put(strings.NewReader("x"), wrong, 10); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := s.Open(wrong); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a mismatched upload was stored: %v", err)
	}
	if _, _, err := s.Put(strings.NewReader("12345678901"), "", 10); err == nil {
		t.Fatal("over-limit content accepted")
	}
	for _, bad := range []string{"../../etc/passwd", strings.Repeat("A", 64), "abc"} {
		if _, err := s.Open(bad); err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("Open(%q) = %v, want a validation error", bad, err)
		}
	}
}
