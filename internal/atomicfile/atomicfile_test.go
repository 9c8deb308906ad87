package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "file.pem")

	if err := Write(path, []byte("one"), 0o600); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if err := Write(path, []byte("two"), 0o644); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "two" {
		t.Fatalf("content = %q, %v; want two", got, err)
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, path); m != 0o644 {
			t.Errorf("mode after overwrite = %v, want 0644", m)
		}
		if m := fileMode(t, filepath.Dir(path)); m != 0o700 {
			t.Errorf("created dir mode = %v, want 0700", m)
		}
	}
	if names := dirNames(t, filepath.Dir(path)); len(names) != 1 || names[0] != "file.pem" {
		t.Errorf("dir holds %v, want only file.pem (temp files left behind?)", names)
	}

	// Many writes in a row still leave exactly one file.
	for i := range 20 {
		if err := Write(path, bytes.Repeat([]byte{byte('a' + i)}, 1000), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if names := dirNames(t, filepath.Dir(path)); len(names) != 1 {
		t.Errorf("dir holds %v after repeated writes", names)
	}

	// A failing rename (target is a non-empty directory) cleans up its temp file.
	target := filepath.Join(dir, "busy")
	if err := os.MkdirAll(filepath.Join(target, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("x"), 0o600); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	for _, n := range dirNames(t, dir) {
		if strings.HasPrefix(n, ".") {
			t.Errorf("temp file %q left behind after failed write", n)
		}
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
