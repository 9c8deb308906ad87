package loadgen

import (
	"slices"
	"testing"
)

// TestControllerOrder: agent i starts on controller i mod n and tries every
// controller once per round; the agents that start on one replica fall back
// on the others in equal shares, not all on its neighbour.
func TestControllerOrder(t *testing.T) {
	cs := []string{"a:1", "b:1", "c:1"}
	f := &Fleet{cfg: Config{Controllers: cs}}
	next := map[string]map[string]int{} // first -> second -> agents
	for i := range 600 {
		a := &agent{f: f, i: i}
		var order []string
		for try := range 2 * len(cs) {
			order = append(order, a.controller(try))
		}
		if order[0] != cs[i%len(cs)] {
			t.Fatalf("agent %d starts on %s, want %s", i, order[0], cs[i%len(cs)])
		}
		round := slices.Clone(order[:len(cs)])
		if !slices.Equal(order[len(cs):], round) {
			t.Fatalf("agent %d: second round %v differs from the first %v", i, order[len(cs):], round)
		}
		slices.Sort(round)
		if !slices.Equal(round, cs) {
			t.Fatalf("agent %d tries %v in a round, want each of %v once", i, order[:len(cs)], cs)
		}
		if next[order[0]] == nil {
			next[order[0]] = map[string]int{}
		}
		next[order[0]][order[1]]++
	}
	for first, m := range next {
		if len(m) != 2 || m[cs[0]]+m[cs[1]]+m[cs[2]] != 200 {
			t.Fatalf("agents starting on %s fall back on %v, want 100 on each other controller", first, m)
		}
		for c, n := range m {
			if n != 100 {
				t.Fatalf("agents starting on %s: %d fall back on %s, want 100", first, n, c)
			}
		}
	}
	one := &agent{f: &Fleet{cfg: Config{Controllers: []string{"a:1"}}}, i: 7}
	for try := range 3 {
		if got := one.controller(try); got != "a:1" {
			t.Fatalf("with one controller, try %d goes to %s", try, got)
		}
	}
}
