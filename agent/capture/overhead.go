package capture

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errOverhead disarms a probe whose dtrace uses more CPU than its budget: a
// capture must never become the outage it is trying to explain.
var errOverhead = errors.New("overhead budget exceeded")

// Overhead sampling: three consecutive samples over budget disarm, so a
// short burst (dtrace compiling the script, symbolizing stacks) does not.
const (
	overheadSamples = 3
)

// watchOverhead samples the CPU time of pid and cancels with errOverhead
// when it stays above budget (a fraction of one core). It returns when ctx
// ends. Platforms without a CPU-time source are not watched.
func (m *Manager) watchOverhead(ctx context.Context, pid int, cancel context.CancelCauseFunc, report func(string)) {
	budget := m.cfg.CPUBudget
	if budget <= 0 {
		return
	}
	interval := m.cfg.OverheadInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	last, err := cpuTime(pid)
	if err != nil {
		return
	}
	lastAt := time.Now()
	over := 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := cpuTime(pid)
		if err != nil {
			return // the process is gone
		}
		now := time.Now()
		use := (cur - last).Seconds() / now.Sub(lastAt).Seconds()
		last, lastAt = cur, now
		if use <= budget {
			over = 0
			continue
		}
		over++
		if over >= overheadSamples {
			m.overheadDisarms.Inc()
			report(fmt.Sprintf("disarmed: dtrace used %.0f%% of a core, over the %.0f%% budget", use*100, budget*100))
			cancel(errOverhead)
			return
		}
	}
}
