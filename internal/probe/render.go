package probe

import (
	"errors"
	"fmt"
	"strings"
)

// OnDemandSyscall is the syscall whose return takes an on-demand dump: the
// agent's helper process calls it (SleepEx, which is NtDelayExecution) in a
// loop until the dump is taken. lkd() runs only when its probe fired at
// PASSIVE_LEVEL (DTrace on Windows; WINDOWS-NOTES), and a syscall return
// in a user thread does.
const OnDemandSyscall = "NtDelayExecution"

// ErrCapReached is returned (wrapped) by Render when the triggers already
// counted reach the per-agent cap: there is nothing left to run.
var ErrCapReached = errors.New("per-agent cap reached")

// Render returns the D script for s. alreadyTriggered is how many times the
// probe already fired on this agent (in earlier runs of dtrace for the same
// capture); the script's cap is lowered by that much so that the per-agent
// cap holds across dtrace restarts. When nothing is left, the error wraps
// ErrCapReached. A raw script is returned verbatim: it carries its own
// limits and alreadyTriggered does not apply to it.
//
// The script has exactly this shape (the agent's parser and the simulated
// dtrace rely on it):
//
//	/*
//	 * livedump capture <id>: rendered from the capture spec; do not edit.
//	 * processes: <process>, <process>
//	 * statuses: 0xC000000D, 0xC0000022
//	 */
//	#pragma D option quiet
//	#pragma D option destructive                  (action dump only)
//
//	int livedump_hits;
//
//	syscall::NtCreateFile:return,                 (syscall:::return when
//	syscall::NtOpenFile:return                     no syscall is given)
//	/(tolower(execname) == "<execname>" || ...) && ((uint32_t)arg0 == 0xC000000D || ...) && livedump_hits < <cap>/
//	{
//		livedump_hits++;
//		printf("@@livedump begin %d %d %d %d %s:%s 0x%08x %s\n", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);
//		printf("@@livedump ustack");
//		ustack(<ustack>);
//		printf("\n@@livedump kstack");                (kstack only)
//		stack();                                      (kstack only)
//		printf("\n@@livedump end %d\n", livedump_hits);
//		lkd(<mode>);                                  (action dump only)
//	}
//
//	<the same probe descriptions>
//	/livedump_hits >= <cap>/
//	{
//		exit(0);
//	}
//
// D runs the clauses of a probe in order, so the second clause fires right
// after the first on the firing that reaches the cap, and dtrace exits.
//
// <execname> is ExecName of the process, lower-cased: execname keeps the
// case the image was launched with, so both sides are compared in lower
// case. tolower() is a D subroutine of DTrace on Windows' libdtrace
// (string(const char *), D 1.8:
// https://github.com/microsoft/DTrace-on-Windows/blob/master/lib/libdtrace/common/dt_open.c);
// it changes ASCII letters only, which is all a validated name has.
func Render(s Spec, alreadyTriggered int) (string, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return "", err
	}
	if alreadyTriggered < 0 {
		return "", fmt.Errorf("probe: %d triggers already counted: must not be negative", alreadyTriggered)
	}
	if s.RawScript != "" {
		return s.RawScript, nil
	}
	if s.OnDemand {
		if alreadyTriggered > 0 {
			return "", fmt.Errorf("%w: on-demand capture %s already took its dump", ErrCapReached, s.CaptureID)
		}
		pid := "$target"
		if s.HelperPID > 0 {
			pid = fmt.Sprint(s.HelperPID)
		}
		return fmt.Sprintf("/*\n * livedump capture %s: on-demand live kernel dump; do not edit.\n"+
			" * lkd() dumps only from a probe that fired at PASSIVE_LEVEL, which BEGIN is not:\n"+
			" * the dump is taken at a syscall return in the agent's helper process.\n */\n"+
			"#pragma D option quiet\n#pragma D option destructive\n\n"+
			"syscall::%s:return\n/pid == %s/\n{\n\tlkd(%d);\n\texit(0);\n}\n", s.CaptureID, OnDemandSyscall, pid, s.LKDMode), nil
	}
	limit := s.PerAgentCap - alreadyTriggered
	if limit <= 0 {
		return "", fmt.Errorf("%w: capture %s fired %d times of %d on this agent", ErrCapReached, s.CaptureID, alreadyTriggered, s.PerAgentCap)
	}

	var b strings.Builder
	header := renderHeader(s)
	// The header is the only comment; nothing in it may end it early. The
	// allow-lists guarantee this; check anyway, since a comment broken out
	// of is code.
	if strings.Count(header, "*/") != 1 || !strings.HasSuffix(header, " */\n") || strings.Count(header, "/*") != 1 {
		return "", fmt.Errorf("probe: capture %s: the header comment would not be well formed", s.CaptureID)
	}
	b.WriteString(header)
	b.WriteString("#pragma D option quiet\n")
	if s.Action == ActionDump {
		b.WriteString("#pragma D option destructive\n")
	}
	b.WriteString("\nint livedump_hits;\n\n")

	probes := probeDescriptions(s.Syscalls)

	var names []string
	seen := map[string]bool{}
	for _, p := range s.Processes {
		n := matchName(p)
		if strings.ContainsAny(n, "\"\\\n\r\x00") {
			return "", fmt.Errorf("probe: capture %s: process %q cannot be put in a D string", s.CaptureID, p)
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, `tolower(execname) == "`+n+`"`)
		}
	}
	statuses := make([]string, len(s.Statuses))
	for i, st := range s.Statuses {
		statuses[i] = fmt.Sprintf("(uint32_t)arg0 == 0x%08X", st)
	}

	b.WriteString(probes)
	fmt.Fprintf(&b, "/(%s) && (%s) && livedump_hits < %d/\n", strings.Join(names, " || "), strings.Join(statuses, " || "), limit)
	b.WriteString("{\n")
	b.WriteString("\tlivedump_hits++;\n")
	b.WriteString(`	printf("@@livedump begin %d %d %d %d %s:%s 0x%08x %s\n", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);` + "\n")
	b.WriteString(`	printf("@@livedump ustack");` + "\n")
	fmt.Fprintf(&b, "\tustack(%d);\n", s.UStack)
	if s.KStack {
		b.WriteString(`	printf("\n@@livedump kstack");` + "\n")
		b.WriteString("\tstack();\n")
	}
	b.WriteString(`	printf("\n@@livedump end %d\n", livedump_hits);` + "\n")
	if s.Action == ActionDump {
		fmt.Fprintf(&b, "\tlkd(%d);\n", s.LKDMode)
	}
	b.WriteString("}\n\n")
	b.WriteString(probes)
	fmt.Fprintf(&b, "/livedump_hits >= %d/\n", limit)
	b.WriteString("{\n\texit(0);\n}\n")
	return b.String(), nil
}

// matchName is the literal the rendered script compares tolower(execname)
// with: the ExecName of process, ASCII-lower-cased as D's tolower() does.
func matchName(process string) string {
	n, _ := ExecName(process)
	b := []byte(n)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func renderHeader(s Spec) string {
	statuses := make([]string, len(s.Statuses))
	for i, st := range s.Statuses {
		statuses[i] = fmt.Sprintf("0x%08X", st)
	}
	return "/*\n" +
		" * livedump capture " + s.CaptureID + ": rendered from the capture spec; do not edit.\n" +
		" * processes: " + strings.Join(s.Processes, ", ") + "\n" +
		" * statuses: " + strings.Join(statuses, ", ") + "\n" +
		" */\n"
}

// probeDescriptions is the probe description list of both clauses, one
// probe per line, ending with a newline.
func probeDescriptions(syscalls []string) string {
	if len(syscalls) == 0 {
		return "syscall:::return\n"
	}
	lines := make([]string, len(syscalls))
	for i, c := range syscalls {
		lines[i] = "syscall::" + c + ":return"
	}
	return strings.Join(lines, ",\n") + "\n"
}
