package backoff

import (
	"testing"
	"time"
)

// ceiling is the un-jittered wait for attempt: min doubled attempt times,
// capped at max.
func ceiling(attempt int, lo, hi time.Duration) time.Duration {
	d := lo
	for range attempt {
		if d >= hi {
			break
		}
		d *= 2
	}
	return min(d, hi)
}

// nth returns the wait a fresh jittered schedule gives for retry attempt.
func nth(attempt int, lo, hi time.Duration) time.Duration {
	s := New(Policy{Min: lo, Max: hi, Jitter: true})
	for range attempt {
		s.NextBackOff()
	}
	return s.NextBackOff()
}

// The schedules in use: the agent's session (1s..60s, renewals up to
// 10 min), its dump uploads (1s..1min), the PostgreSQL listener
// (100ms..10s), the load generator (500ms..30s).
func TestJitteredBounds(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi time.Duration
	}{
		{"session", time.Second, 60 * time.Second},
		{"renewal", time.Second, 10 * time.Minute},
		{"dump upload", time.Second, time.Minute},
		{"postgres listen", 100 * time.Millisecond, 10 * time.Second},
		{"loadgen", 500 * time.Millisecond, 30 * time.Second},
		{"odd", 3 * time.Millisecond, 1 * time.Second},
		{"min equals max", 5 * time.Second, 5 * time.Second},
		{"min above max", 2 * time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				s := New(Policy{Min: tt.lo, Max: tt.hi, Jitter: true})
				for attempt := range 40 {
					d := ceiling(attempt, tt.lo, tt.hi)
					got := s.NextBackOff()
					if got < d/2 || got > d {
						t.Fatalf("attempt %d of %v..%v = %v, want within [%v, %v]", attempt, tt.lo, tt.hi, got, d/2, d)
					}
					if got > tt.hi {
						t.Fatalf("attempt %d = %v exceeds max %v", attempt, got, tt.hi)
					}
				}
			}
		})
	}
}

func TestJitteredGrowth(t *testing.T) {
	lo, hi := time.Second, 60*time.Second
	// Expected ceilings: 1s, 2s, 4s, ... capped at 60s.
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for attempt, w := range want {
		w *= time.Second
		if c := ceiling(attempt, lo, hi); c != w {
			t.Fatalf("test helper: ceiling(%d) = %v, want %v", attempt, c, w)
		}
		least, most := time.Duration(1<<62), time.Duration(0)
		for range 300 {
			got := nth(attempt, lo, hi)
			least, most = min(least, got), max(most, got)
		}
		if least < w/2 || most > w {
			t.Errorf("attempt %d: samples in [%v, %v], want within [%v, %v]", attempt, least, most, w/2, w)
		}
		// With 300 uniform samples the range is well covered: the upper
		// half of the wait really is jittered, the lower is not.
		if most-least < w/4 {
			t.Errorf("attempt %d: samples only span [%v, %v] of [%v, %v]", attempt, least, most, w/2, w)
		}
	}
	// The first retry is fast: a controller restart costs at most min.
	for range 100 {
		if got := nth(0, lo, hi); got > lo {
			t.Fatalf("first wait = %v > min %v", got, lo)
		}
	}
	// Huge attempt counts (an agent offline for days) neither overflow nor
	// exceed the cap.
	p := Policy{Min: lo, Max: hi, Jitter: true}
	for _, attempt := range []int{62, 63, 64, 100, 1 << 20} {
		if got := p.Delay(attempt); got < hi/2 || got > hi {
			t.Errorf("Delay(%d) = %v, want within [%v, %v]", attempt, got, hi/2, hi)
		}
	}
}

func TestJitterSpreads(t *testing.T) {
	for _, attempt := range []int{0, 3, 10} {
		seen := map[time.Duration]bool{}
		for range 100 {
			seen[nth(attempt, time.Second, 60*time.Second)] = true
		}
		if len(seen) < 50 {
			t.Errorf("attempt %d: only %d distinct waits in 100 samples: not jittered", attempt, len(seen))
		}
	}
}

func TestZeroMin(t *testing.T) {
	for _, jitter := range []bool{false, true} {
		s := New(Policy{Max: time.Second, Jitter: jitter})
		for attempt := range 5 {
			if got := s.NextBackOff(); got != 0 {
				t.Errorf("jitter %v: attempt %d of 0..1s = %v, want 0", jitter, attempt, got)
			}
		}
	}
}

// Without jitter the waits are the steps themselves: the capture runner's
// dtrace restarts (10ms..40ms in its tests, 1s..30s by default).
func TestExactSteps(t *testing.T) {
	tests := []struct {
		lo, hi time.Duration
		want   []time.Duration
	}{
		{10 * time.Millisecond, 40 * time.Millisecond, []time.Duration{10, 20, 40, 40, 40}},
		{time.Second, 30 * time.Second, []time.Duration{1000, 2000, 4000, 8000, 16000, 30000, 30000}},
		{3 * time.Millisecond, 10 * time.Millisecond, []time.Duration{3, 6, 10, 10}},
		{time.Minute, time.Second, []time.Duration{1000, 1000}},
	}
	for _, tt := range tests {
		p := Policy{Min: tt.lo, Max: tt.hi}
		s := New(p)
		for attempt, w := range tt.want {
			w *= time.Millisecond
			if got := s.NextBackOff(); got != w {
				t.Errorf("%v..%v: attempt %d = %v, want %v", tt.lo, tt.hi, attempt, got, w)
			}
			if got := p.Delay(attempt); got != w {
				t.Errorf("%v..%v: Delay(%d) = %v, want %v", tt.lo, tt.hi, attempt, got, w)
			}
		}
	}
	p := Policy{Min: time.Second, Max: 30 * time.Second}
	for _, attempt := range []int{63, 64, 1 << 30} {
		if got := p.Delay(attempt); got != 30*time.Second {
			t.Errorf("Delay(%d) = %v, want the cap", attempt, got)
		}
	}
}

// Reset starts again from Min, after any number of steps.
func TestReset(t *testing.T) {
	s := New(Policy{Min: time.Second, Max: time.Minute})
	for range 10 {
		s.NextBackOff()
	}
	s.Reset()
	for _, w := range []time.Duration{1, 2, 4} {
		if got := s.NextBackOff(); got != w*time.Second {
			t.Fatalf("after Reset: %v, want %v", got, w*time.Second)
		}
	}
}
