package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
)

// TestHostnames: by ID for a few agents, a page at a time for many, the
// same answer either way; unknown IDs are left out.
func TestHostnames(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 1200 {
		if err := s.CreateAgent(ctx, store.Agent{ID: fmt.Sprintf("a%04d", i), Hostname: fmt.Sprintf("H%d", i%7)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{3, 1100} {
		want := map[string]bool{"unknown": true}
		for i := range n {
			want[fmt.Sprintf("a%04d", i)] = true
		}
		got, err := store.Hostnames(ctx, s, want)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n || got["a0008"] != "H1" && n > 8 || got["a0002"] != "H2" {
			t.Fatalf("%d wanted: %d named, a0002=%q", n, len(got), got["a0002"])
		}
	}
	all, err := store.Hostnames(ctx, s, nil)
	if err != nil || len(all) != 1200 {
		t.Fatalf("all: %d, %v", len(all), err)
	}
}
