package dtracesim

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/windows"
)

// TestDumpOpensWithoutSharing checks what the agent relies on to tell a
// complete dump: while it is written, nobody else can open it.
func TestDumpOpensWithoutSharing(t *testing.T) {
	// Not t.TempDir: its cleanup fails under Wine 8.
	dir, err := os.MkdirTemp("", "dtracesim")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "DTRACE-20250102-0304.dmp")
	f, err := createExclusive(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("PAGEDU64")); err != nil {
		t.Fatal(err)
	}
	if g, err := os.Open(path); !errors.Is(err, windows.ERROR_SHARING_VIOLATION) {
		if g != nil {
			g.Close()
		}
		t.Errorf("opening a dump being written: %v; want a sharing violation", err)
	}
	if _, err := createExclusive(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("creating it again: %v; want ErrExist", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening a complete dump: %v", err)
	}
	g.Close()
}
