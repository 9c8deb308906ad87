//go:build windows

package dumps

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/windows"
)

// TestOpensExclusively checks the completion signal on Windows: a file held
// open without sharing (as Windows holds a dump it is writing) does not
// open exclusively; once closed, it does.
func TestOpensExclusively(t *testing.T) {
	p := filepath.Join(tempDir(t), "DTRACE-20261126-1405.dmp")
	u, err := windows.UTF16PtrFromString(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := windows.CreateFile(u, windows.GENERIC_WRITE, 0, nil, windows.CREATE_NEW, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if OpensExclusively(p) {
		t.Error("a file open for writing without sharing opened exclusively")
	}
	windows.CloseHandle(h)
	if !OpensExclusively(p) {
		t.Error("a closed file did not open exclusively")
	}
	// A reader with sharing (the hasher, a virus scanner) also blocks it.
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if OpensExclusively(p) {
		t.Error("opened exclusively while another handle is open")
	}
	f.Close()
}

func TestBirthTime(t *testing.T) {
	p := filepath.Join(tempDir(t), "f")
	before := time.Now().Add(-time.Minute)
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	bt, ok := birthTime(fi)
	if !ok || bt.Before(before) || bt.After(time.Now().Add(time.Minute)) {
		t.Fatalf("birthTime = %v, %v", bt, ok)
	}
}
