// Package spool is the agent's durable outbox: trigger events are written
// here before they are sent and removed only when the controller has
// acknowledged storing them, so no event is lost to a disconnect, a crash
// or a controller restart.
package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/livedump/livedump/internal/atomicfile"
)

// Item is one spooled message.
type Item struct {
	ID   string
	Data []byte
}

var idRe = regexp.MustCompile(`^[0-9a-f]{8,64}$`)

// Spool is a directory of files, one per item, named <seq>-<id>: the
// sequence keeps the send order across restarts and the ID lets an ack find
// its file.
type Spool struct {
	dir string

	mu    sync.Mutex
	next  uint64
	files map[string]string // id -> file name
}

// Open opens (creating if needed) the spool in dir.
func Open(dir string) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, files: map[string]string{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		seq, id, ok := parseName(e.Name())
		if !ok {
			continue // temporary files of an interrupted write
		}
		s.files[id] = e.Name()
		if seq >= s.next {
			s.next = seq + 1
		}
	}
	return s, nil
}

func parseName(name string) (uint64, string, bool) {
	seqS, id, ok := strings.Cut(name, "-")
	if !ok || !idRe.MatchString(id) {
		return 0, "", false
	}
	seq, err := strconv.ParseUint(seqS, 10, 64)
	return seq, id, err == nil
}

// Put stores an item durably. Putting an ID that is already spooled is a
// no-op, so a re-parsed event is not sent twice.
func (s *Spool) Put(id string, data []byte) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("spool: id %q: want 8-64 lower-case hex digits", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files[id]; ok {
		return nil
	}
	name := fmt.Sprintf("%020d-%s", s.next, id)
	if err := atomicfile.Write(filepath.Join(s.dir, name), data, 0o600); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.next++
	s.files[id] = name
	return nil
}

// Pending returns every spooled item in the order it was put.
func (s *Spool) Pending() ([]Item, error) {
	s.mu.Lock()
	names := make([]string, 0, len(s.files))
	for _, n := range s.files {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names) // zero-padded sequence first
	items := make([]Item, 0, len(names))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(s.dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue // acked meanwhile
		}
		if err != nil {
			return nil, err
		}
		_, id, _ := parseName(n)
		items = append(items, Item{ID: id, Data: b})
	}
	return items, nil
}

// Get returns the data of an item still spooled.
func (s *Spool) Get(id string) ([]byte, bool) {
	s.mu.Lock()
	name, ok := s.files[id]
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return nil, false
	}
	return b, true
}

// Ack removes acknowledged items. Unknown IDs are ignored: acks for items
// acked before a restart may arrive again.
func (s *Spool) Ack(ids ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		name, ok := s.files[id]
		if !ok {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		delete(s.files, id)
	}
	return errors.Join(errs...)
}

// Len is the number of unacknowledged items.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files)
}
