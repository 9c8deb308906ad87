package dtracesim

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// The simulation is never kinder than a real Windows machine (issue 14).
// What real machines do to stacks and names, and what this file makes the
// simulated dtrace do:
//
//   - User stacks are often poor. DTrace-on-Windows users report ustack()
//     printing one frame of the program, or bare numbers, for most stacks
//     (https://github.com/microsoft/DTrace-on-Windows/issues/19). A frame
//     whose module is known but not its symbol prints as module`0xaddr, one
//     whose module is not known (JIT code, a process that exited before the
//     consumer symbolized its stack) as a bare 0xaddr (libdtrace's
//     dt_print_ustack and dt_print_sym: "%s`0x%llx" and "0x%llx"). Some
//     firings here have full stacks, some one frame, some no frame at all,
//     some only module`0xaddr frames (no symbols: _NT_SYMBOL_PATH unset or
//     the symbol server unreachable), some only bare addresses (the
//     process exited); see ustackKind.
//   - DTrace on Windows traces 64-bit processes only ("DTrace on Windows",
//     https://learn.microsoft.com/windows-hardware/drivers/devtest/dtrace,
//     and the DTrace-on-Windows README: x64 only). 32-bit (WOW64) processes
//     never fire a syscall probe here: see EnvWOW64.
//   - A syscall probe fires in the system service dispatcher: at entry the
//     service has not been called yet, at return it has returned, so
//     stack() shows only the dispatcher's frames (nt`KiSystemServiceCopyEnd),
//     never the service's callees. The simulation does the same for entry
//     and return (the harsher reading for entry).
//   - Module and symbol names and execname are ANSI code page text, not
//     UTF-8: the Windows port narrows names with the ANSI APIs
//     (GetDeviceDriverFileNameA) and by truncating WCHARs to char
//     (lib/libdtrace/compat/win32/dt_symsrv.cpp), and the kernel's
//     ImageFileName, which execname is, is a byte string. Here some module
//     and symbol names and one background process carry Windows-1252 bytes
//     (0xE9 for é) when EnvANSI is on, the default. A predicate comparing
//     execname with a UTF-8 literal ("café.exe") compares bytes, so it does
//     not match the ANSI name, as on Windows.
//   - Under load the principal buffers fill and dtrace reports
//     "dtrace: N drops on CPU k" on stderr (libdtrace dt_drop.c); the
//     records dropped are never printed. See drops.go.

// Environment settings of the realism (see package documentation).
const (
	// EnvANSI: names in the ANSI code page (Windows-1252) when on, the
	// default; "0", "off" or "false" prints them as UTF-8 instead, which no
	// real dtrace does.
	EnvANSI = "LIVEDUMP_SIM_DTRACE_ANSI"
	// EnvWOW64: image names (comma-separated) of processes that run as
	// 32-bit and so are never traced, in addition to DefaultWOW64.
	EnvWOW64 = "LIVEDUMP_SIM_DTRACE_WOW64"
	// EnvBufsize: the principal buffer size per CPU when the command line
	// sets none (-b, -x bufsize), with dtrace's size suffixes; default 4m.
	EnvBufsize = "LIVEDUMP_SIM_DTRACE_BUFSIZE"
)

// DefaultWOW64 are images that commonly run as 32-bit processes on 64-bit
// Windows: the simulation never traces them.
var DefaultWOW64 = []string{"AcroRd32.exe", "OneDrive.exe", "steam.exe"}

// DefaultBufsize is dtrace's default principal buffer size per CPU.
const DefaultBufsize = 4 << 20

// realism is what the simulation does to stacks and names.
type realism struct {
	ansi    bool
	wow64   map[string]bool // lower-case image names
	bufsize int64           // default principal buffer size per CPU
}

func defaultRealism() realism {
	r := realism{ansi: true, wow64: map[string]bool{}, bufsize: DefaultBufsize}
	for _, n := range DefaultWOW64 {
		r.wow64[strings.ToLower(n)] = true
	}
	return r
}

// parseRealism reads the realism settings from the environment.
func parseRealism(env []string) (realism, error) {
	r := defaultRealism()
	if v, ok := lookupEnv(env, EnvANSI); ok && v != "" {
		switch strings.ToLower(v) {
		case "1", "on", "true", "yes":
			r.ansi = true
		case "0", "off", "false", "no":
			r.ansi = false
		default:
			return r, fmt.Errorf("%s=%q: want on or off", EnvANSI, v)
		}
	}
	if v, ok := lookupEnv(env, EnvWOW64); ok {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				r.wow64[strings.ToLower(n)] = true
			}
		}
	}
	if v, ok := lookupEnv(env, EnvBufsize); ok && v != "" {
		n, err := parseInt(v)
		if err != nil || n < 1024 || n > 1<<30 {
			return r, fmt.Errorf("%s=%q: want a size from 1k to 1g", EnvBufsize, v)
		}
		r.bufsize = n
	}
	return r, nil
}

// text is a name as dtrace prints it: in the ANSI code page (Windows-1252)
// when the realism says so. A character the code page lacks becomes '?',
// as WideCharToMultiByte's default character; bytes that are not UTF-8
// are kept.
func (r realism) text(s string) string {
	if !r.ansi || isASCII(s) {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if c == utf8.RuneError {
			// Not UTF-8: already code page text (e.g. a literal of a
			// script written in the code page).
			b.WriteByte(s[i])
			continue
		}
		if x, ok := charmap.Windows1252.EncodeRune(c); ok {
			b.WriteByte(x)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// ustackKind is how much of a user stack dtrace could print for a firing.
type ustackKind uint8

const (
	ustackFull      ustackKind = iota // every frame, some without symbols
	ustackOneFrame                    // only the innermost frame (issue #19)
	ustackEmpty                       // no frame at all
	ustackNoSymbols                   // module`0xaddr for every frame
	ustackExited                      // bare addresses: the process exited
)

// ustackKinds weights the kinds: half the stacks are poor.
var ustackKinds = []struct {
	kind ustackKind
	w    float64
}{{ustackFull, 0.50}, {ustackOneFrame, 0.15}, {ustackEmpty, 0.10}, {ustackNoSymbols, 0.12}, {ustackExited, 0.13}}

func (w *world) pickUstack() ustackKind {
	r := w.rng.Float64()
	for _, k := range ustackKinds {
		if r < k.w {
			return k.kind
		}
		r -= k.w
	}
	return ustackFull
}

// moduleBase is where a module is loaded: system DLLs at one base per boot
// (Windows relocates them once per boot), the image at one base per
// process; both 64 KiB aligned, as Windows ASLR places images, so the low
// 16 bits of an address are the same on every machine.
func moduleBase(boot string, proc *process, module string) uint64 {
	if module == proc.module {
		return proc.base
	}
	return 0x7ff800000000 | (hash64("dll", boot, module)&0x3fffff)<<16
}

// frameAddr is the address of a frame "module`function+0xoff" in proc.
func frameAddr(boot string, proc *process, frame string) (module string, addr uint64) {
	module, sym, _ := strings.Cut(frame, "`")
	fn, off, _ := strings.Cut(sym, "+0x")
	o, _ := strconv.ParseUint(off, 16, 64)
	return module, moduleBase(boot, proc, module) + 0x1000 + hash64("fn", module, fn)%0xf0000 + o
}

// poorer turns a full user stack into what dtrace printed for the kind.
func poorer(kind ustackKind, boot string, proc *process, frames []string) []string {
	switch kind {
	case ustackOneFrame:
		return frames[:min(1, len(frames))]
	case ustackEmpty:
		return []string{}
	case ustackNoSymbols, ustackExited:
		out := make([]string, 0, len(frames))
		for _, fr := range frames {
			if !strings.Contains(fr, "`") {
				out = append(out, fr) // already an address
				continue
			}
			mod, addr := frameAddr(boot, proc, fr)
			if kind == ustackNoSymbols {
				out = append(out, fmt.Sprintf("%s`0x%x", mod, addr))
			} else {
				// Whether the Windows port pads addresses is not known:
				// print them padded to 16 digits, which readers must take
				// as well as libdtrace's "0x%llx".
				out = append(out, fmt.Sprintf("0x%016x", addr))
			}
		}
		return out
	}
	return frames
}
