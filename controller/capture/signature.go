package capture

import (
	"strings"

	"github.com/livedump/livedump/internal/stack"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// DefaultSignatureFrames is how many top user frames make a stack
// signature.
const DefaultSignatureFrames = 5

// Signature groups events by where they happened, for buckets and for the
// per-signature dump quota. It is made to stay useful on the stacks real
// Windows machines give (poorer than textbook ones: one-frame, empty or
// unresolved user stacks, DTrace-on-Windows issue #19,
// https://github.com/microsoft/DTrace-on-Windows/issues/19):
//
//   - A symbolized frame is module!function, without its offset (offsets
//     differ between builds of one module).
//   - A frame whose module is known but not its symbol (module`0xaddr) is
//     module!?+0xNNNN, the low 16 bits of its address: Windows loads
//     images 64 KiB aligned, so those bits are the same on every machine
//     and process running the same build, while the address is not (ASLR).
//   - A frame with only an address (JIT code, or the process exited before
//     dtrace symbolized its stack) is <unresolved>; a run of them is one
//     token, and does not count as one of the frames.
//   - Up to frames counted frames are taken, innermost first.
//
// A stack with at least two counted frames and a symbolized or
// module-known innermost frame is signed by them alone (the form of
// fully symbolized stacks, unchanged). Any other is qualified, never
// thrown into one bucket of "no frames": by the probe, the user frames
// there are (or "no user frames"), the process when fewer than two
// frames are counted, and the kernel frames, e.g.
//
//	NtCreateFile:return in ms-teams.exe: no user frames | nt!KiSystemServiceCopyEnd
//	NtCreateFile:return in ms-teams.exe: ntdll!NtCreateFile | nt!KiSystemServiceCopyEnd
//	NtCreateFile:return: <unresolved> < ms-teams!WorkerThread::Run < KERNEL32!BaseThreadInitThunk
//
// The process is compared case-insensitively (lower case here). The
// signature is valid UTF-8 whatever the frames hold. The frame tokens are
// internal/stack's, shared with the flame graphs.
func Signature(ev *livedumpv1.TriggerEvent, frames int) string {
	if frames <= 0 {
		frames = DefaultSignatureFrames
	}
	user, counted := stack.Tokens(ev.GetUserFrames(), frames)
	if counted >= 2 && user[0] != stack.Unresolved {
		return strings.ToValidUTF8(strings.Join(user, " < "), "\uFFFD")
	}
	var b strings.Builder
	b.WriteString(ev.GetProbe())
	if counted < 2 {
		b.WriteString(" in ")
		b.WriteString(strings.ToLower(ev.GetProcess()))
	}
	b.WriteString(": ")
	switch {
	case len(user) > 0:
		b.WriteString(strings.Join(user, " < "))
	case len(ev.GetUserFrames()) == 0:
		b.WriteString("no user frames")
	default:
		b.WriteString(stack.Unresolved)
	}
	if kernel, _ := stack.Tokens(ev.GetKernelFrames(), frames); len(kernel) > 0 {
		b.WriteString(" | ")
		b.WriteString(strings.Join(kernel, " < "))
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}
