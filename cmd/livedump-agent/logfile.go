package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Log file rotation of the service: the current file and at most
// logKeep older ones, each about logMaxBytes.
const (
	logMaxBytes = 10 << 20
	logKeep     = 3
)

// rotatingFile is an io.Writer appending to path. When a write would take
// the file past max bytes, the file is renamed to path.1 (path.1 to
// path.2, ..., the oldest beyond keep deleted) and a new one started. A
// single write is never split across files. If rotating fails (another
// program holds an old file open, which Windows refuses to rename), the
// writer keeps appending to the current file and tries again after another
// max/8 bytes: logging never stops for want of a rotation.
type rotatingFile struct {
	mu    sync.Mutex
	path  string
	max   int64
	keep  int
	f     *os.File
	size  int64
	retry int64 // size at which to try rotating again after a failure
}

// openRotating opens (creating, with its directory) the log file at path.
func openRotating(path string, max int64, keep int) (*rotatingFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	r := &rotatingFile{path: path, max: max, keep: keep}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size, r.retry = f, st.Size(), 0
	return nil
}

func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	if r.size > 0 && r.size+int64(len(p)) > r.max && r.size >= r.retry {
		if err := r.rotate(); err != nil {
			r.retry = r.size + r.max/8
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

// rotate shifts the old files and starts a new current file. On failure
// the current file stays open for appending.
func (r *rotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return r.reopen(err)
	}
	r.f = nil
	old := func(i int) string { return fmt.Sprintf("%s.%d", r.path, i) }
	if err := os.Remove(old(r.keep)); err != nil && !os.IsNotExist(err) {
		return r.reopen(err)
	}
	for i := r.keep - 1; i >= 1; i-- {
		if err := os.Rename(old(i), old(i+1)); err != nil && !os.IsNotExist(err) {
			return r.reopen(err)
		}
	}
	if r.keep < 1 {
		if err := os.Remove(r.path); err != nil {
			return r.reopen(err)
		}
	} else if err := os.Rename(r.path, old(1)); err != nil {
		return r.reopen(err)
	}
	return r.open()
}

func (r *rotatingFile) reopen(cause error) error {
	if r.f == nil {
		if err := r.open(); err != nil {
			return fmt.Errorf("%w; reopening: %v", cause, err)
		}
	}
	return cause
}

// Close closes the current file.
func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
