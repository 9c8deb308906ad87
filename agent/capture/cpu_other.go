//go:build !linux && !windows

package capture

import (
	"errors"
	"time"
)

// cpuTime is not available here; overhead is then not watched.
func cpuTime(int) (time.Duration, error) { return 0, errors.New("no CPU time source on this platform") }
