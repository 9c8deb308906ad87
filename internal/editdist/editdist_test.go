package editdist

import "testing"

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b  string
		limit int
		want  int
	}{
		{"", "", 0, 0},
		{"kitten", "sitting", 0, 3},
		{"controler", "controller", 0, 1},
		{"NtCreatFile", "NtCreateFile", 0, 1},
		{"abc", "", 0, 3},
		{"", "abc", 0, 3},
		{"kitten", "sitting", 2, 2},                               // at least the limit: the limit
		{"kitten", "sitting", 4, 3},                               // below the limit: exact
		{"STATUS_INVALID_PARAMETR", "STATUS_ACCESS_DENIED", 3, 3}, // stops early
	} {
		if got := Distance(tc.a, tc.b, tc.limit); got != tc.want {
			t.Errorf("Distance(%q, %q, %d) = %d, want %d", tc.a, tc.b, tc.limit, got, tc.want)
		}
		if got := Distance(tc.b, tc.a, tc.limit); got != tc.want {
			t.Errorf("Distance(%q, %q, %d) = %d, want %d (symmetry)", tc.b, tc.a, tc.limit, got, tc.want)
		}
	}
}
