package probe

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/encoding"
)

// Limits of the parser. A record beyond them did not come from a rendered
// script (ustack is at most 100 frames, and stack() prints 20 by default);
// it is refused rather than truncated.
const (
	MaxFrames  = 100     // per stack
	MaxLineLen = 4 << 10 // bytes, without the line ending
)

// The framing printed by the rendered script.
const (
	markerPrefix = "@@livedump "
	beginPrefix  = "@@livedump begin "
	endPrefix    = "@@livedump end "
	ustackMarker = "@@livedump ustack"
	kstackMarker = "@@livedump kstack"
)

type section int

const (
	outside    section = iota // between records
	afterBegin                // begin seen, ustack marker expected
	inUser                    // user stack frames
	inKernel                  // kernel stack frames
)

// ParseError is an error in a record of dtrace's output. The record is
// dropped and the parser looks for the next begin line.
type ParseError struct {
	Line   int // 1-based number of the line, counting every line fed
	Seq    int // the record's sequence number, 0 when not known
	Reason string
}

func (e *ParseError) Error() string {
	if e.Seq > 0 {
		return fmt.Sprintf("dtrace output line %d: record %d: %s", e.Line, e.Seq, e.Reason)
	}
	return fmt.Sprintf("dtrace output line %d: %s", e.Line, e.Reason)
}

// Parser reads the standard output of dtrace running a script rendered by
// Render, one line at a time, as dtrace prints it:
//
//	@@livedump begin <seq> <walltimestamp ns> <pid> <tid> <func>:<name> 0x<status> <execname>
//	@@livedump ustack
//	              ntdll`NtCreateFile+0x14
//	              KERNELBASE`CreateFileW+0x66
//	                                        (blank: the printf that follows starts with \n)
//	@@livedump kstack                       (only with kstack)
//	              nt`IofCallDriver+0x55
//	              Ntfs.sys`NtfsCreateFcb+0x388
//
//	@@livedump end <seq>
//
// (ustack() and stack() print a newline, which ends the marker line, then
// one frame per line indented by 14 spaces, innermost first.)
//
// Line endings (\n or \r\n), blank lines and trailing white space are
// tolerated. Lines outside a record are ignored and counted (see Ignored).
//
// Every record it returns can be sent as it is: lines are decoded from the
// ANSI code page dtrace prints in (Encoding) so that every string is valid
// UTF-8, and strings longer than the controller stores are cut to
// MaxString bytes (MaxRecordText for a record), ending in TruncatedMark.
// C++ names (std::vector<int,std::allocator<int> >::push_back, `anonymous
// namespace'::f, operator+), raw addresses and empty stacks are frames and
// stacks like any other.
//
// A Parser is not safe for concurrent use; the zero value is ready.
type Parser struct {
	// Encoding is the code page dtrace prints in; nil means
	// SystemEncoding (the machine's ANSI code page).
	Encoding encoding.Encoding

	lines   int
	ignored int
	sec     section
	rec     *Record
}

// Line feeds one line (with or without its line ending). It returns the
// record that the line completes, if any. A malformed record gives a
// *ParseError; the parser then skips lines until the next begin line. A
// begin line inside a record gives an error for the record cut off, and
// starts the new record.
func (p *Parser) Line(line string) (*Record, error) {
	p.lines++
	line = strings.TrimRight(line, " \t\r\n")
	if len(line) > MaxLineLen {
		if p.sec == outside {
			p.ignored++
			return nil, nil
		}
		return nil, p.fail(fmt.Sprintf("line of %d bytes is longer than %d", len(line), MaxLineLen))
	}
	enc := p.Encoding
	if enc == nil {
		enc = SystemEncoding()
	}
	// Decoded whole: in a double-byte code page a backtick byte can be the
	// second half of a character.
	line = decode(enc, line)
	text := strings.TrimLeft(line, " \t")
	if text == "" {
		return nil, nil
	}

	if rest, ok := strings.CutPrefix(text, beginPrefix); ok {
		var cut error
		if p.sec != outside {
			cut = p.fail("cut off by a new begin line")
		}
		rec, err := parseBegin(rest)
		if err != nil {
			p.reset()
			if cut != nil {
				return nil, cut
			}
			return nil, &ParseError{Line: p.lines, Reason: err.Error()}
		}
		p.rec, p.sec = rec, afterBegin
		return nil, cut
	}

	if p.sec == outside {
		p.ignored++
		return nil, nil
	}

	isMarker := strings.HasPrefix(text, markerPrefix)
	switch {
	case text == ustackMarker:
		if p.sec != afterBegin {
			return nil, p.fail("unexpected " + ustackMarker)
		}
		p.rec.User = []Frame{}
		p.sec = inUser
	case text == kstackMarker:
		if p.sec != inUser {
			return nil, p.fail("unexpected " + kstackMarker)
		}
		p.rec.Kernel = []Frame{}
		p.sec = inKernel
	case strings.HasPrefix(text, endPrefix):
		return p.end(strings.TrimPrefix(text, endPrefix))
	case isMarker:
		return nil, p.fail(fmt.Sprintf("unknown marker %q", truncate(text)))
	case p.sec == afterBegin:
		return nil, p.fail(fmt.Sprintf("%q where %s was expected", truncate(text), ustackMarker))
	case len(text) == len(line):
		// Frames are indented; anything else is not dtrace's stack output.
		return nil, p.fail(fmt.Sprintf("unexpected line %q in a stack", truncate(text)))
	case p.sec == inUser:
		if len(p.rec.User) == MaxFrames {
			return nil, p.fail(fmt.Sprintf("more than %d user frames", MaxFrames))
		}
		p.rec.User = append(p.rec.User, ParseFrame(text))
	case p.sec == inKernel:
		if len(p.rec.Kernel) == MaxFrames {
			return nil, p.fail(fmt.Sprintf("more than %d kernel frames", MaxFrames))
		}
		p.rec.Kernel = append(p.rec.Kernel, ParseFrame(text))
	}
	return nil, nil
}

// End tells the parser the output ended (dtrace exited). It returns an
// error when a record was cut off, and makes the parser ready for a new
// run of dtrace.
func (p *Parser) End() error {
	if p.sec == outside {
		return nil
	}
	return p.fail("cut off by the end of the output")
}

// Ignored is the number of non-blank lines seen outside records (e.g.
// output of a script that does not use the framing, or lines after a
// malformed record), including lines too long to be looked at.
func (p *Parser) Ignored() int { return p.ignored }

func (p *Parser) end(rest string) (*Record, error) {
	if p.sec == afterBegin {
		return nil, p.fail("end before " + ustackMarker)
	}
	seq, err := strconv.Atoi(rest)
	if err != nil || seq != p.rec.Seq {
		return nil, p.fail(fmt.Sprintf("end %q does not match begin %d", truncate(rest), p.rec.Seq))
	}
	rec := p.rec
	p.reset()
	limit(rec)
	return rec, nil
}

// fail drops the current record and returns the error for it.
func (p *Parser) fail(reason string) error {
	seq := 0
	if p.rec != nil {
		seq = p.rec.Seq
	}
	p.reset()
	return &ParseError{Line: p.lines, Seq: seq, Reason: reason}
}

func (p *Parser) reset() {
	p.rec, p.sec = nil, outside
}

// parseBegin parses what follows "@@livedump begin ":
// <seq> <walltimestamp> <pid> <tid> <func>:<name> 0x<status> <execname>.
func parseBegin(rest string) (*Record, error) {
	var f [6]string
	for i := range f {
		rest = strings.TrimLeft(rest, " ")
		var ok bool
		f[i], rest, ok = strings.Cut(rest, " ")
		if !ok || f[i] == "" {
			return nil, fmt.Errorf("begin line has fewer than 7 fields")
		}
	}
	process := strings.TrimLeft(rest, " ")
	if process == "" {
		return nil, fmt.Errorf("begin line has no process name")
	}
	seq, err := strconv.Atoi(f[0])
	if err != nil || seq <= 0 {
		return nil, fmt.Errorf("begin: sequence %q is not a positive number", f[0])
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || ns < 0 {
		return nil, fmt.Errorf("begin %d: walltimestamp %q is not a number of nanoseconds", seq, f[1])
	}
	pid, err := strconv.Atoi(f[2])
	if err != nil || pid < 0 {
		return nil, fmt.Errorf("begin %d: pid %q is not a number", seq, f[2])
	}
	tid, err := strconv.Atoi(f[3])
	if err != nil || tid < 0 {
		return nil, fmt.Errorf("begin %d: tid %q is not a number", seq, f[3])
	}
	fn, name, ok := strings.Cut(f[4], ":")
	if !ok || fn == "" || name == "" {
		return nil, fmt.Errorf("begin %d: probe %q is not function:name", seq, f[4])
	}
	digits, ok := strings.CutPrefix(f[5], "0x")
	status, err := strconv.ParseUint(digits, 16, 32)
	if !ok || err != nil {
		return nil, fmt.Errorf("begin %d: status %q is not a 32-bit hexadecimal value", seq, f[5])
	}
	return &Record{
		Seq:     seq,
		Time:    time.Unix(0, ns).UTC(),
		PID:     pid,
		TID:     tid,
		Probe:   f[4],
		Status:  uint32(status),
		Process: process,
	}, nil
}

// truncate shortens text quoted in an error.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
