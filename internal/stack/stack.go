// Package stack turns stack frames into the tokens that name them in the
// controller's stack signatures (buckets) and in flame graphs, so that a
// frame reads the same in both:
//
//   - A symbolized frame is module!function, without its offset (offsets
//     differ between builds of one module).
//   - A frame whose module is known but not its symbol (module`0xaddr) is
//     module!?+0xNNNN, the low 16 bits of its address: Windows loads
//     images 64 KiB aligned, so those bits are the same on every machine
//     and process running the same build, while the address is not (ASLR).
//   - A frame with only an address (JIT code, or the process exited before
//     dtrace symbolized its stack) is Unresolved; a run of them is one
//     token, and does not count as a frame.
package stack

import (
	"fmt"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Unresolved stands for one or more frames that are only an address.
const Unresolved = "<unresolved>"

// Token is the token of one frame (see the package comment), and whether
// it counts as a frame (false for Unresolved).
func Token(f *livedumpv1.Frame) (tok string, counted bool) {
	switch {
	case f.GetFunction() != "":
		return f.GetModule() + "!" + f.GetFunction(), true
	case f.GetModule() != "":
		return fmt.Sprintf("%s!?+0x%04x", f.GetModule(), f.GetAddress()&0xffff), true
	}
	return Unresolved, false
}

// Tokens normalises frames, in their order (dtrace's: innermost first),
// until limit of them are counted (limit <= 0: all of them). A run of bare
// addresses becomes one uncounted Unresolved token, and a trailing one
// (the outermost frames) is dropped when any frame is counted.
func Tokens(fs []*livedumpv1.Frame, limit int) (tokens []string, counted int) {
	for _, f := range fs {
		if limit > 0 && counted == limit {
			break
		}
		tok, ok := Token(f)
		switch {
		case ok:
			tokens = append(tokens, tok)
			counted++
		case len(tokens) == 0 || tokens[len(tokens)-1] != Unresolved:
			tokens = append(tokens, Unresolved)
		}
	}
	if n := len(tokens); n > 0 && tokens[n-1] == Unresolved && counted > 0 {
		tokens = tokens[:n-1]
	}
	return tokens, counted
}

// Frame renders one frame in the debugger's (WinDbg) notation, as
// livedumpctl and the console print frames: module!function+0xoffset; a
// frame whose module is known but not its symbol is module!?+0xNNNN (as
// its token); a bare address is 0xADDR.
func Frame(f *livedumpv1.Frame) string {
	switch {
	case f.GetFunction() != "" && f.GetOffset() != 0:
		return fmt.Sprintf("%s!%s+0x%x", f.GetModule(), f.GetFunction(), f.GetOffset())
	case f.GetFunction() != "":
		return f.GetModule() + "!" + f.GetFunction()
	case f.GetModule() != "":
		return fmt.Sprintf("%s!?+0x%04x", f.GetModule(), f.GetAddress()&0xffff)
	}
	return fmt.Sprintf("0x%x", f.GetAddress())
}
