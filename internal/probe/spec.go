// Package probe is the capture probe contract, whole: the spec an operator
// gives to `livedumpctl capture create`, its validation, its conversion from
// the wire (FromCaptureSpec for what the operator asked, FromArm for what an
// agent is told to run), the D script rendered from it, and the parser of
// what that script prints. The CLI checks the spec, the controller validates
// it and shows the rendered script (`capture create -o json`), and the agent
// renders the same script from the arm directive, runs it with dtrace.exe
// and parses its output into Records. All of them use this package so that
// what the operator sees is what runs.
//
// The rendered script has a fixed shape (see Render) that the Parser and
// the simulated dtrace depend on.
package probe

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/livedump/livedump/internal/syscalls"
)

// Action is what a probe does when it fires.
type Action string

// Actions.
const (
	// ActionStacks prints the user (and optionally kernel) stack of each
	// matching syscall return.
	ActionStacks Action = "stacks"
	// ActionDump prints the stacks, then takes a live kernel dump with
	// lkd().
	ActionDump Action = "dump"
)

// Spec is a capture probe as the operator describes it.
type Spec struct {
	// CaptureID names the capture: [a-z0-9-]{1,64}.
	CaptureID string
	// Processes are image names as the user typed them, e.g.
	// "ms-teams.exe". The script compares execname, lower-cased, with
	// ExecName of each, lower-cased (the kernel truncates image names to 14
	// characters and keeps the case the image was launched with). 1..16 of
	// them.
	Processes []string
	// Syscalls are Nt* syscall names that the syscall provider has probes
	// for (internal/syscalls: ntdll's Nt* syscall stubs, no win32k
	// NtUser*/NtGdi*); empty means every syscall.
	Syscalls []string
	// Statuses are the NTSTATUS values to match, already resolved by
	// internal/ntstatus; 1..64 distinct values. Duplicates are dropped.
	Statuses []uint32
	// UStack is the number of user frames to print: 1..100; 0 means
	// DefaultUStack.
	UStack int
	// KStack adds the kernel stack.
	KStack bool
	// Action is ActionStacks (the default when empty) or ActionDump.
	Action Action
	// LKDMode is the lkd() argument, for ActionDump only: 0 (full kernel
	// dump, the default), 2 (minidump), 4 (Hyper-V + kernel pages) or 5
	// (user + kernel + hypervisor pages). 1 (user + kernel) is rejected: it
	// works only with a kernel debugger attached.
	LKDMode int
	// PerAgentCap is how many times the probe fires on one agent before the
	// script exits: 1..1000; 0 means the default (DefaultDumpCap for
	// ActionDump, DefaultStacksCap for ActionStacks).
	PerAgentCap int
	// RawScript is a D script written by an administrator. When set, it is
	// run verbatim and every field above except CaptureID and Action must be
	// empty. At most MaxRawScript bytes, no NUL bytes.
	RawScript string
	// OnDemand takes one live kernel dump now: no process, syscall or
	// status. Not from BEGIN, which never dumps (see OnDemandSyscall): the
	// script dumps at a syscall return in a helper process the agent runs.
	OnDemand bool
	// HelperPID is the process ID of the agent's helper for an on-demand
	// dump, known only on the agent; 0 renders the script with $target in
	// its place, as the controller shows it.
	HelperPID int
}

// Defaults and bounds enforced by WithDefaults and Validate.
const (
	DefaultUStack    = 10
	DefaultDumpCap   = 1
	DefaultStacksCap = 100
	MaxUStack        = 100
	MaxPerAgentCap   = 1000
	MaxProcesses     = 16
	MaxProcessLen    = 255
	MaxSyscalls      = 64
	MaxStatuses      = 64
	MaxRawScript     = 64 << 10
	// ExecNameLen is the length of the kernel's ImageFileName, which is what
	// D's execname holds.
	ExecNameLen = 14
)

var (
	captureIDRe = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	// processRe is the allow-list of image names. It keeps out quotes,
	// slashes and backslashes, '*' (so no comment delimiters), newlines and
	// every control character, so a name can be put in a D string literal
	// and in a comment as is.
	processRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._+()-]*$`)
)

// FieldError names the capture spec field that is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return "capture." + e.Field + ": " + e.Reason }

// ExecName is the name D's execname holds for a process started from the
// image process: the kernel's ImageFileName, the first 14 bytes of the
// image name. truncated tells whether the name was cut, so that the CLI can
// say so. Names are ASCII once validated, so bytes and characters agree.
//
// The kernel keeps the case the image was launched with ("MS-Teams.exe"
// when started that way), and D's == on strings is case-sensitive, so the
// rendered script compares tolower(execname) with the lower-cased ExecName
// (see Render).
func ExecName(process string) (name string, truncated bool) {
	if len(process) <= ExecNameLen {
		return process, false
	}
	return process[:ExecNameLen], true
}

// WithDefaults returns s with its defaults filled in and exact duplicates
// of processes, syscalls and statuses dropped (first occurrence kept). The
// slices of the result are copies. Fields of a raw-script spec are left as
// they are, except Action.
func (s Spec) WithDefaults() Spec {
	if s.OnDemand && s.Action == "" {
		s.Action = ActionDump
	}
	if s.Action == "" {
		s.Action = ActionStacks
	}
	s.Processes = dedupe(s.Processes)
	s.Syscalls = dedupe(s.Syscalls)
	s.Statuses = dedupe(s.Statuses)
	if s.RawScript != "" {
		return s
	}
	if s.UStack == 0 {
		s.UStack = DefaultUStack
	}
	if s.PerAgentCap == 0 {
		switch s.Action {
		case ActionDump:
			s.PerAgentCap = DefaultDumpCap
		case ActionStacks:
			s.PerAgentCap = DefaultStacksCap
		}
	}
	return s
}

func dedupe[T comparable](in []T) []T {
	if in == nil {
		return nil
	}
	out := make([]T, 0, len(in))
	seen := make(map[T]bool, len(in))
	for _, v := range in {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// Validate checks the spec, with its defaults applied, against the
// allow-lists and ranges. The values end up in a D script run with
// destructive actions allowed, so nothing outside the allow-lists is
// accepted. The error is a *FieldError.
func (s Spec) Validate() error {
	s = s.WithDefaults()
	if !captureIDRe.MatchString(s.CaptureID) {
		return &FieldError{"capture_id", fmt.Sprintf("%q: 1 to 64 of a-z, 0-9 and -", s.CaptureID)}
	}
	if s.Action != ActionStacks && s.Action != ActionDump {
		return &FieldError{"action", fmt.Sprintf("%q: must be %q or %q", s.Action, ActionStacks, ActionDump)}
	}
	if s.RawScript != "" {
		return s.validateRaw()
	}
	if s.OnDemand {
		return s.validateOnDemand()
	}
	if err := validateProcesses(s.Processes); err != nil {
		return err
	}
	if len(s.Syscalls) > MaxSyscalls {
		return &FieldError{"syscall", fmt.Sprintf("%d syscalls: at most %d (leave empty for every syscall)", len(s.Syscalls), MaxSyscalls)}
	}
	for _, c := range s.Syscalls {
		// A name without a probe makes dtrace refuse the whole script
		// ("does not match any probes") on every machine: refuse it here.
		if err := syscalls.Check(c); err != nil {
			return &FieldError{"syscall", err.Error()}
		}
	}
	switch {
	case len(s.Statuses) == 0:
		return &FieldError{"status", "at least one status is required"}
	case len(s.Statuses) > MaxStatuses:
		return &FieldError{"status", fmt.Sprintf("%d distinct statuses: at most %d", len(s.Statuses), MaxStatuses)}
	}
	if s.UStack < 1 || s.UStack > MaxUStack {
		return &FieldError{"ustack", fmt.Sprintf("%d frames: must be between 1 and %d", s.UStack, MaxUStack)}
	}
	switch {
	case s.Action != ActionDump && s.LKDMode != 0:
		return &FieldError{"lkd_mode", fmt.Sprintf("%d: a live dump mode applies only to action %q", s.LKDMode, ActionDump)}
	case s.LKDMode == 1:
		return &FieldError{"lkd_mode", "1 (user + kernel pages) works only with a kernel debugger attached; use 0, 2, 4 or 5"}
	case s.LKDMode != 0 && s.LKDMode != 2 && s.LKDMode != 4 && s.LKDMode != 5:
		return &FieldError{"lkd_mode", fmt.Sprintf("%d: must be 0 (full kernel), 2 (minidump), 4 (hypervisor + kernel) or 5 (user + kernel + hypervisor)", s.LKDMode)}
	}
	if s.PerAgentCap < 1 || s.PerAgentCap > MaxPerAgentCap {
		return &FieldError{"per_agent_cap", fmt.Sprintf("%d: must be between 1 and %d", s.PerAgentCap, MaxPerAgentCap)}
	}
	return nil
}

// Warnings returns what the operator should know about how the processes
// of a valid spec will match: names the kernel truncates to 14 characters,
// and names without an extension (the kernel records the image file name,
// extension included: "ms-teams" never matches, "ms-teams.exe" does). A
// raw-script or on-demand spec has none.
func (s Spec) Warnings() []string {
	if s.RawScript != "" || s.OnDemand {
		return nil
	}
	var ws []string
	for _, p := range dedupe(s.Processes) {
		if name, truncated := ExecName(p); truncated {
			ws = append(ws, fmt.Sprintf("process %q matches as %q: the kernel keeps only %d characters of an image name (execname)", p, name, ExecNameLen))
		}
		if i := strings.LastIndexByte(p, '.'); i < 0 || i == len(p)-1 {
			exe := strings.TrimSuffix(p, ".") + ".exe"
			w := fmt.Sprintf("%s has no extension; the kernel records %s", p, exe)
			if name, truncated := ExecName(exe); truncated {
				w += fmt.Sprintf(" (execname %q)", name)
			}
			ws = append(ws, w+"; did you mean "+exe+"?")
		}
	}
	return ws
}

func validateProcesses(ps []string) error {
	switch {
	case len(ps) == 0:
		return &FieldError{"process", "at least one process is required"}
	case len(ps) > MaxProcesses:
		return &FieldError{"process", fmt.Sprintf("%d processes: at most %d", len(ps), MaxProcesses)}
	}
	for _, p := range ps {
		if len(p) > MaxProcessLen {
			return &FieldError{"process", fmt.Sprintf("%.32q...: longer than %d bytes", p, MaxProcessLen)}
		}
		if !processRe.MatchString(p) {
			return &FieldError{"process", fmt.Sprintf("%q is not an image name like ms-teams.exe (a letter or digit, then letters, digits, space and . _ + ( ) -; no path)", p)}
		}
	}
	return nil
}

func (s Spec) validateRaw() error {
	var set []string
	if len(s.Processes) > 0 {
		set = append(set, "process")
	}
	if len(s.Syscalls) > 0 {
		set = append(set, "syscall")
	}
	if len(s.Statuses) > 0 {
		set = append(set, "status")
	}
	if s.UStack != 0 {
		set = append(set, "ustack")
	}
	if s.KStack {
		set = append(set, "kstack")
	}
	if s.LKDMode != 0 {
		set = append(set, "lkd_mode")
	}
	if s.PerAgentCap != 0 {
		set = append(set, "per_agent_cap")
	}
	switch {
	case len(set) > 0:
		return &FieldError{"script", "a raw script cannot be combined with " + strings.Join(set, ", ") + ": the script says it all"}
	case len(s.RawScript) > MaxRawScript:
		return &FieldError{"script", fmt.Sprintf("%d bytes: at most %d", len(s.RawScript), MaxRawScript)}
	case strings.IndexByte(s.RawScript, 0) >= 0:
		return &FieldError{"script", "contains a NUL byte"}
	case strings.TrimSpace(s.RawScript) == "":
		return &FieldError{"script", "is only white space"}
	}
	return nil
}

// validateOnDemand checks an on-demand dump: it has nothing to match on.
func (s Spec) validateOnDemand() error {
	switch {
	case len(s.Processes) > 0:
		return &FieldError{"process", "an on-demand dump matches no process"}
	case len(s.Syscalls) > 0:
		return &FieldError{"syscall", "an on-demand dump matches no syscall"}
	case len(s.Statuses) > 0:
		return &FieldError{"status", "an on-demand dump matches no status"}
	case s.Action != ActionDump:
		return &FieldError{"action", "an on-demand capture always takes a dump"}
	case s.LKDMode == 1:
		return &FieldError{"lkd_mode", "1 (user + kernel pages) works only with a kernel debugger attached; use 0, 2, 4 or 5"}
	case s.LKDMode != 0 && s.LKDMode != 2 && s.LKDMode != 4 && s.LKDMode != 5:
		return &FieldError{"lkd_mode", fmt.Sprintf("%d: must be 0, 2, 4 or 5", s.LKDMode)}
	}
	return nil
}
