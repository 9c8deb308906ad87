package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotatingFileKeepsTheNewestFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "logs", "agent.log")
	r, err := openRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := func(c byte) []byte { return append(bytes.Repeat([]byte{c}, 39), '\n') } // 40 bytes
	for _, c := range []byte("abcdefgh") {
		if _, err := r.Write(line(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// 40-byte lines, 100-byte files: two lines per file, newest last.
	want := map[string]string{"agent.log": "gh", "agent.log.1": "ef", "agent.log.2": "cd"}
	for name, letters := range want {
		b, err := os.ReadFile(filepath.Join(dir, "logs", name))
		if err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			got.WriteByte(l[0])
		}
		if got.String() != letters {
			t.Errorf("%s holds lines %q, want %q", name, got.String(), letters)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "agent.log.3")); !os.IsNotExist(err) {
		t.Errorf("agent.log.3 exists beyond keep=2 (err %v)", err)
	}
}

func TestRotatingFileAppendsAcrossOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.log")
	for _, s := range []string{"one\n", "two\n"} {
		r, err := openRotating(path, logMaxBytes, logKeep)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	if b, _ := os.ReadFile(path); string(b) != "one\ntwo\n" {
		t.Errorf("file holds %q", b)
	}
}

func TestRotatingFileNeverSplitsAWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.log")
	r, err := openRotating(path, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	big := strings.Repeat("x", 25) + "\n"
	for range 2 {
		if _, err := r.Write([]byte(big)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{path, path + ".1"} {
		if b, _ := os.ReadFile(p); string(b) != big {
			t.Errorf("%s holds %q, want one whole write", filepath.Base(p), b)
		}
	}
}
