// Package editdist measures how far a mistyped name is from a known one, for
// the "did you mean" hints of livedump's error messages (configuration keys,
// status names, syscall names).
package editdist

// Distance is the Levenshtein distance of a and b, counted in bytes. With
// limit > 0 it stops as soon as the distance is known to be at least limit
// and returns limit then: exact below limit, which is all a caller looking
// for the closest name needs. limit <= 0 means no limit.
func Distance(a, b string, limit int) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		low := cur[0]
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			c = min(c, prev[j]+1, cur[j-1]+1)
			cur[j] = c
			low = min(low, c)
		}
		if limit > 0 && low >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	if limit > 0 {
		return min(prev[len(b)], limit)
	}
	return prev[len(b)]
}
