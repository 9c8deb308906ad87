// Package backoff is the one retry schedule the agent, the controller's
// PostgreSQL listener and the load generator share: waits that double from
// Min up to Max, optionally drawn from the upper half of each step so that
// a fleet that lost its controller (or replicas that lost their database)
// at the same instant does not come back in lockstep.
//
// The doubling and the cap are github.com/cenkalti/backoff/v5's
// ExponentialBackOff; this package adds only the upper-half jitter, which
// the library's symmetric randomization cannot express, and Delay for a
// caller whose retry count outlives the schedule.
package backoff

import (
	"math/rand/v2"
	"time"

	cbackoff "github.com/cenkalti/backoff/v5"
)

// Policy says how long to wait between retries.
type Policy struct {
	// Min is the first step; zero makes every wait zero.
	Min time.Duration
	// Max caps every step, the first included.
	Max time.Duration
	// Jitter draws each wait uniformly from [step/2, step] instead of
	// waiting the whole step.
	Jitter bool
}

// Schedule is a Policy in use: the waits of one run of failures. It
// implements cenkalti/backoff's BackOff (it never returns Stop). It is not
// safe for concurrent use.
type Schedule struct {
	p   Policy
	exp cbackoff.ExponentialBackOff
}

var _ cbackoff.BackOff = (*Schedule)(nil)

// New returns a fresh schedule for p.
func New(p Policy) *Schedule {
	s := &Schedule{p: p}
	s.exp = cbackoff.ExponentialBackOff{
		InitialInterval: min(p.Min, p.Max),
		Multiplier:      2,
		MaxInterval:     p.Max,
	}
	s.exp.Reset()
	return s
}

// NextBackOff returns the wait before the next retry and moves one step on.
func (s *Schedule) NextBackOff() time.Duration {
	// The first step is taken from the initial interval as it stands, so
	// cap it here too: a Policy whose Min exceeds its Max waits Max.
	d := min(s.exp.NextBackOff(), s.p.Max)
	if s.p.Jitter {
		half := d / 2
		d = half + rand.N(half+1)
	}
	return d
}

// Reset starts the schedule again from Min: call it once the thing being
// retried has worked.
func (s *Schedule) Reset() { s.exp.Reset() }

// Delay returns the wait before retry number attempt (from 0) of a fresh
// schedule, for a caller that keeps the count itself (the capture runner
// persists its restart count across agent restarts). Attempt counts past
// the cap cost nothing.
func (p Policy) Delay(attempt int) time.Duration {
	s := New(p)
	for range attempt {
		if s.exp.InitialInterval <= 0 || s.exp.NextBackOff() >= p.Max {
			break
		}
	}
	return s.NextBackOff()
}
