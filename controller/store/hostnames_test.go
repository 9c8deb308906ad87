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

// fleetOnly hides a store's AgentHostnames: Hostnames then reads the fleet
// a page at a time, as it did before the store could name given agents.
type fleetOnly struct{ store.AgentReader }

// BenchmarkHostnames names one GetCapture page of a large capture's targets
// (5,000 of 20,000 agents), by the store's AgentHostnames and by reading
// the fleet's pages: `go test ./controller/store -bench Hostnames -run X`.
func BenchmarkHostnames(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "db.sqlite"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const agents, page = 20_000, 5_000
	for i := range agents {
		a := store.Agent{ID: fmt.Sprintf("%016x", i*7919), Hostname: fmt.Sprintf("WS-%05d", i), OSBuild: "22631",
			Labels: map[string]string{"site": "ams", "role": "vdi", "ring": fmt.Sprint(i % 5)}}
		if err := s.CreateAgent(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	want := map[string]bool{}
	for i := 0; i < page; i++ {
		want[fmt.Sprintf("%016x", i*4*7919)] = true
	}
	for _, bc := range []struct {
		name string
		r    store.AgentReader
	}{{"AgentHostnames", s}, {"FleetPages", fleetOnly{s}}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				got, err := store.Hostnames(ctx, bc.r, want)
				if err != nil || len(got) != page {
					b.Fatalf("%d named, %v", len(got), err)
				}
			}
		})
	}
}
