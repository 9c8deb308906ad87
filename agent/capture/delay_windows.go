package capture

import "golang.org/x/sys/windows"

// delay sleeps ms milliseconds with SleepEx, which kernel32 implements with
// the NtDelayExecution syscall: each call is one return of
// syscall::NtDelayExecution:return in this process.
func delay(ms uint32) { windows.SleepEx(ms, false) }
