package selector

import (
	"slices"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/livedump/livedump/internal/editdist"
)

// maxSuggestDistance is how many edits a typed key or value may be from
// an existing one to be suggested: "vid" for "vdi" is two.
const maxSuggestDistance = 2

// Suggest returns, for a selector that matches none of sets, the selector
// with one key or value replaced by the closest one some set has (at most
// two edits away): "role=vid" gives "role=vdi" when an agent has role=vdi.
// It returns "" when nothing is close enough. Only keys and the values of
// =, == and in are looked at: a typo elsewhere changes what matches in ways
// a suggestion cannot guess.
func (s Selector) Suggest(sets []map[string]string) string {
	if s.s == nil {
		return ""
	}
	reqs, ok := s.s.Requirements()
	if !ok {
		return ""
	}
	keys := map[string]bool{}
	values := map[string]map[string]bool{}
	for _, set := range sets {
		for k, v := range set {
			keys[k] = true
			if values[k] == nil {
				values[k] = map[string]bool{}
			}
			values[k][v] = true
		}
	}
	for i, r := range reqs {
		key := r.Key()
		if !keys[key] {
			if near := closest(key, keys); near != "" {
				if alt, err := labels.NewRequirement(near, r.Operator(), r.Values().UnsortedList()); err == nil {
					return replaced(reqs, i, *alt)
				}
			}
			continue
		}
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
		default:
			continue
		}
		vals := r.Values().List()
		for j, v := range vals {
			if values[key][v] {
				continue
			}
			near := closest(v, values[key])
			if near == "" {
				continue
			}
			vals[j] = near
			if alt, err := labels.NewRequirement(key, r.Operator(), vals); err == nil {
				return replaced(reqs, i, *alt)
			}
		}
	}
	return ""
}

// closest is the candidate nearest to s, at most maxSuggestDistance edits
// away and fewer than len(s) (so "a" does not suggest "b"); ties go to the
// first in sorted order.
func closest(s string, candidates map[string]bool) string {
	names := make([]string, 0, len(candidates))
	for c := range candidates {
		names = append(names, c)
	}
	slices.Sort(names)
	best, bestD := "", maxSuggestDistance+1
	for _, c := range names {
		if c == s {
			continue
		}
		if d := editdist.Distance(s, c, bestD); d < bestD && d < len(s) {
			best, bestD = c, d
		}
	}
	return best
}

func replaced(reqs labels.Requirements, i int, r labels.Requirement) string {
	out := slices.Clone(reqs)
	out[i] = r
	return labels.NewSelector().Add(out...).String()
}
