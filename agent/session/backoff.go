package session

import (
	"math/rand/v2"
	"time"
)

// backoff returns the wait before retry number attempt (0-based): exponential
// from min, capped at max, with the upper half jittered so a fleet that lost
// its controller at the same instant does not come back in lockstep.
func backoff(attempt int, min, max time.Duration) time.Duration {
	d := min
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + rand.N(half+1)
}
