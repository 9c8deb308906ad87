//go:build !windows

package capture

import "time"

// delay sleeps ms milliseconds; only the Windows build's sleep is the
// NtDelayExecution syscall the on-demand script waits for.
func delay(ms uint32) { time.Sleep(time.Duration(ms) * time.Millisecond) }
