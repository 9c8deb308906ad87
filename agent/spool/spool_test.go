package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func id(i int) string { return fmt.Sprintf("%016x", i) }

func TestPutAckSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if err := s.Put(id(i), []byte(fmt.Sprint("event ", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(id(3), []byte("duplicate")); err != nil || s.Len() != 12 {
		t.Fatalf("duplicate put: %v, len %d", err, s.Len())
	}
	if err := s.Ack(id(0), id(5), "ffffffffffffffff"); err != nil {
		t.Fatal(err)
	}
	// A crash leaves a temporary file behind; it must not become an item.
	if err := os.WriteFile(filepath.Join(dir, ".00000000000000000099-x.tmp"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir) // the agent restarts
	if err != nil {
		t.Fatal(err)
	}
	items, err := s.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 10 || items[0].ID != id(1) || items[9].ID != id(11) || string(items[2].Data) != "event 3" {
		t.Fatalf("pending after restart: %d items, first %v", len(items), items[0])
	}
	if err := s.Put(id(20), []byte("new")); err != nil {
		t.Fatal(err)
	}
	items, _ = s.Pending()
	if items[len(items)-1].ID != id(20) {
		t.Fatal("an item put after a restart is not last")
	}
	if err := s.Put("../../etc", nil); err == nil {
		t.Fatal("path-like id accepted")
	}
}
