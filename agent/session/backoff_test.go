package session

import (
	"testing"
	"time"
)

// ceiling is the un-jittered wait for attempt: min doubled attempt times,
// capped at max.
func ceiling(attempt int, min, max time.Duration) time.Duration {
	d := min
	for range attempt {
		if d >= max {
			break
		}
		d *= 2
	}
	return min2(d, max)
}

func min2(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
	}{
		{"defaults", DefaultBackoffMin, DefaultBackoffMax},
		{"renewal", DefaultBackoffMin, 10 * time.Minute},
		{"odd", 3 * time.Millisecond, 1 * time.Second},
		{"min equals max", 5 * time.Second, 5 * time.Second},
		{"min above max", 2 * time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for attempt := range 40 {
				d := ceiling(attempt, tt.min, tt.max)
				for range 50 {
					got := backoff(attempt, tt.min, tt.max)
					if got < d/2 || got > d {
						t.Fatalf("backoff(%d, %v, %v) = %v, want within [%v, %v]", attempt, tt.min, tt.max, got, d/2, d)
					}
					if got > tt.max {
						t.Fatalf("backoff(%d) = %v exceeds max %v", attempt, got, tt.max)
					}
				}
			}
		})
	}
}

func TestBackoffGrowth(t *testing.T) {
	min, max := DefaultBackoffMin, DefaultBackoffMax
	// Expected ceilings for the defaults: 1s, 2s, 4s, ... capped at 60s.
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for attempt, w := range want {
		w *= time.Second
		if c := ceiling(attempt, min, max); c != w {
			t.Fatalf("test helper: ceiling(%d) = %v, want %v", attempt, c, w)
		}
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 300 {
			got := backoff(attempt, min, max)
			lo, hi = min2(lo, got), max2(hi, got)
		}
		if lo < w/2 || hi > w {
			t.Errorf("attempt %d: samples in [%v, %v], want within [%v, %v]", attempt, lo, hi, w/2, w)
		}
		// With 300 uniform samples the range is well covered: the
		// upper half of the wait really is jittered, the lower is not.
		if hi-lo < w/4 {
			t.Errorf("attempt %d: samples only span [%v, %v] of [%v, %v]", attempt, lo, hi, w/2, w)
		}
	}
	// The first retry is fast: a controller restart costs at most min.
	for range 100 {
		if got := backoff(0, min, max); got > min {
			t.Fatalf("backoff(0) = %v > min %v", got, min)
		}
	}
	// Huge attempt counts (an agent offline for days) neither overflow nor
	// exceed the cap.
	for _, attempt := range []int{62, 63, 64, 100, 1 << 20} {
		got := backoff(attempt, min, max)
		if got < max/2 || got > max {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", attempt, got, max/2, max)
		}
	}
}

func max2(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func TestBackoffJitter(t *testing.T) {
	for _, attempt := range []int{0, 3, 10} {
		seen := map[time.Duration]bool{}
		for range 100 {
			seen[backoff(attempt, DefaultBackoffMin, DefaultBackoffMax)] = true
		}
		if len(seen) < 50 {
			t.Errorf("attempt %d: only %d distinct waits in 100 samples: not jittered", attempt, len(seen))
		}
	}
}

func TestBackoffZeroMin(t *testing.T) {
	// Defaults are filled by New, but a zero wait must not panic.
	for attempt := range 5 {
		if got := backoff(attempt, 0, time.Second); got != 0 {
			t.Errorf("backoff(%d, 0, 1s) = %v, want 0", attempt, got)
		}
	}
}
