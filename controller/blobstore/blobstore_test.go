package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFilesystemLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	content := strings.Repeat("dtrace msi ", 1000)
	h := sha256.Sum256([]byte(content))
	want := hex.EncodeToString(h[:])

	if _, _, err := s.Put(ctx, strings.NewReader(content), "", 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sha256", want[:2], want[2:])); err != nil {
		t.Fatalf("blob not at its content address: %v", err)
	}
	if _, _, err := s.Put(ctx, strings.NewReader(content), want, 1<<20); err != nil {
		t.Fatal(err)
	}
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}

	// A partial upload lives next to the blobs and goes once published.
	u, err := s.Upload(ctx, "dump1", want, int64(len(content)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(u, content); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "uploads", "dump1.part")); err != nil {
		t.Fatalf("partial upload: %v", err)
	}
	if err := u.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if parts, _ := os.ReadDir(filepath.Join(dir, "uploads")); len(parts) != 0 {
		t.Fatalf("partial uploads left: %v", parts)
	}
}

// A partial upload on another machine's disk cannot be resumed: the upload
// says so by starting at 0.
func TestFilesystemUploadWithoutItsPartialData(t *testing.T) {
	ctx := context.Background()
	a, _ := New(t.TempDir())
	b, _ := New(t.TempDir())
	content := []byte(strings.Repeat("x", 1000))
	sum := sha(content)
	u, err := a.Upload(ctx, "dump1", sum, int64(len(content)), 0)
	if err != nil {
		t.Fatal(err)
	}
	u.Write(content[:600])
	committed, err := u.Sync(ctx)
	u.Close()
	if err != nil || committed != 600 {
		t.Fatalf("Sync = %d %v", committed, err)
	}
	u, err = b.Upload(ctx, "dump1", sum, int64(len(content)), committed)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Offset() != 0 {
		t.Fatalf("Offset = %d on a store without the partial data, want 0", u.Offset())
	}
}

func TestPartSize(t *testing.T) {
	for _, size := range []int64{1, partSize, maxParts * partSize, maxParts*partSize + 1, 1 << 40} {
		n := partSizeFor(size)
		if n < partSize || n%(1<<20) != 0 || (size+n-1)/n > maxParts {
			t.Errorf("partSizeFor(%d) = %d: %d parts", size, n, (size+n-1)/n)
		}
		if size <= maxParts*partSize && n != partSize {
			t.Errorf("partSizeFor(%d) = %d, want %d", size, n, partSize)
		}
	}
}
