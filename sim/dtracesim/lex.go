package dtracesim

import (
	"fmt"
	"strconv"
	"strings"
)

// compileError is a D compiler diagnostic. Scripts report it as
// "line N: msg"; probe specifiers given with -n report the region instead
// ("in action list: msg"), or nothing for a syntax error, as libdtrace does.
type compileError struct {
	line   int
	region string // "predicate", "action list", "probe description" or ""
	msg    string
}

func (e *compileError) Error() string { return e.msg }

// text renders the diagnostic the way dt_set_errmsg does for a script
// (line numbers) or for a probe specifier string (regions).
func (e *compileError) text(pspec bool) string {
	switch {
	case !pspec && e.line > 0:
		return fmt.Sprintf("line %d: %s", e.line, e.msg)
	case pspec && e.region != "":
		return fmt.Sprintf("in %s: %s", e.region, e.msg)
	}
	return e.msg
}

type tokKind int

const (
	kEOF tokKind = iota
	kIdent
	kInt
	kString
	kPunct
)

// token is one lexical token of the expression and statement grammar.
// Probe descriptions and pragmas are scanned separately, because D lexes
// them in states of their own.
type token struct {
	kind  tokKind
	text  string // the source text, as shown in "syntax error near" messages
	str   string // decoded value of a string literal
	ival  uint64 // value of an integer literal
	ityp  dtype  // type of an integer literal
	line  int
	start int // byte offset, so that a peeked token can be given back
}

// puncts are the operators of D's expression grammar that the simulation
// lexes, longest first so that the longest match wins.
var puncts = []string{
	"<<=", ">>=",
	"&&", "||", "^^", "==", "!=", "<=", ">=", "<<", ">>", "++", "--",
	"+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "->",
	"{", "}", "(", ")", "[", "]", ";", ",", ":", "?", "/", "!", "=", "<", ">",
	"+", "-", "*", "%", "&", "|", "^", "~", ".", "@", "$", "#", "`",
}

// scanner walks the program text for both the token lexer and the raw
// scanners (probe descriptions, pragmas).
type scanner struct {
	src  string
	pos  int
	line int
}

func (s *scanner) eof() bool { return s.pos >= len(s.src) }

func (s *scanner) peekByte(off int) byte {
	if s.pos+off < len(s.src) {
		return s.src[s.pos+off]
	}
	return 0
}

// skipSpace skips white space and comments, counting lines.
func (s *scanner) skipSpace() {
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case c == '\n':
			s.line++
			s.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			s.pos++
		case c == '/' && s.peekByte(1) == '*':
			end := strings.Index(s.src[s.pos+2:], "*/")
			if end < 0 {
				panic(&compileError{line: s.line, msg: "end-of-file encountered before the end of a comment"})
			}
			s.line += strings.Count(s.src[s.pos:s.pos+2+end], "\n")
			s.pos += end + 4
		case c == '/' && s.peekByte(1) == '/':
			for s.pos < len(s.src) && s.src[s.pos] != '\n' {
				s.pos++
			}
		default:
			return
		}
	}
}

// restOfLine returns the text up to the end of the line (not consumed:
// the newline is left for skipSpace to count).
func (s *scanner) restOfLine() string {
	start := s.pos
	for s.pos < len(s.src) && s.src[s.pos] != '\n' {
		s.pos++
	}
	return s.src[start:s.pos]
}

func isIdentStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }

// peekWord returns the identifier at the current position without
// consuming it, or "" if there is none.
func (s *scanner) peekWord() string {
	i := s.pos
	if i >= len(s.src) || !isIdentStart(s.src[i]) {
		return ""
	}
	for i < len(s.src) && isIdentChar(s.src[i]) {
		i++
	}
	return s.src[s.pos:i]
}

// isProbeChar is the character set of a probe description: names,
// separators and glob characters.
func isProbeChar(c byte) bool {
	return isIdentChar(c) || strings.IndexByte(":*?.-![]$`+", c) >= 0
}

// scanProbeDesc reads one probe description (provider:module:function:name
// or a right-aligned shorter form).
func (s *scanner) scanProbeDesc() string {
	start := s.pos
	for s.pos < len(s.src) && isProbeChar(s.src[s.pos]) {
		s.pos++
	}
	return s.src[start:s.pos]
}

// next lexes one token of the expression grammar.
func (s *scanner) next() token {
	s.skipSpace()
	t := token{line: s.line, start: s.pos}
	if s.eof() {
		t.kind, t.text = kEOF, "end of input"
		return t
	}
	c := s.src[s.pos]
	switch {
	case isIdentStart(c):
		w := s.peekWord()
		s.pos += len(w)
		t.kind, t.text = kIdent, w
	case '0' <= c && c <= '9':
		s.lexNumber(&t)
	case c == '"':
		s.lexString(&t)
	case c == '\'':
		s.lexChar(&t)
	default:
		for _, p := range puncts {
			if strings.HasPrefix(s.src[s.pos:], p) {
				s.pos += len(p)
				t.kind, t.text = kPunct, p
				return t
			}
		}
		s.pos++
		t.kind, t.text = kPunct, string(c)
		panic(&compileError{line: t.line, msg: fmt.Sprintf("syntax error near %q", t.text)})
	}
	return t
}

// lexNumber reads an integer constant and gives it its C type: the first of
// int, unsigned int (octal and hex only), long, unsigned long that holds the
// value, narrowed by the u and l suffixes.
func (s *scanner) lexNumber(t *token) {
	start := s.pos
	for s.pos < len(s.src) && isIdentChar(s.src[s.pos]) {
		s.pos++
	}
	lit := s.src[start:s.pos]
	t.kind, t.text = kInt, lit
	digits := strings.TrimRight(lit, "uUlL")
	suffix := strings.ToLower(lit[len(digits):])
	unsigned := strings.Contains(suffix, "u")
	long := strings.Contains(suffix, "l")
	if strings.Count(suffix, "u") > 1 || strings.Count(suffix, "l") > 2 {
		panic(&compileError{line: t.line, msg: fmt.Sprintf("syntax error near %q", lit)})
	}
	base := 10
	body := digits
	switch {
	case strings.HasPrefix(digits, "0x") || strings.HasPrefix(digits, "0X"):
		base, body = 16, digits[2:]
	case len(digits) > 1 && digits[0] == '0':
		base, body = 8, digits[1:]
	}
	v, err := strconv.ParseUint(body, base, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			panic(&compileError{line: t.line, msg: fmt.Sprintf("integer constant %s is too large", lit)})
		}
		panic(&compileError{line: t.line, msg: fmt.Sprintf("syntax error near %q", lit)})
	}
	t.ival = v
	var order []dtype
	switch {
	case unsigned && long:
		order = []dtype{tUlong}
	case unsigned:
		order = []dtype{tUint, tUlong}
	case long && base == 10:
		order = []dtype{tLong, tUlong}
	case long:
		order = []dtype{tLong, tUlong}
	case base == 10:
		order = []dtype{tInt, tLong, tUlong}
	default:
		order = []dtype{tInt, tUint, tLong, tUlong}
	}
	for _, ty := range order {
		if ty.holds(v) {
			t.ityp = ty
			return
		}
	}
	t.ityp = tUlong
}

// escape decodes the escape sequence after a backslash at s.pos.
func (s *scanner) escape(line int) byte {
	if s.eof() {
		panic(&compileError{line: line, msg: "end-of-file encountered before end of string"})
	}
	c := s.src[s.pos]
	s.pos++
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case 'a':
		return '\a'
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'v':
		return '\v'
	case '\\', '"', '\'', '?':
		return c
	case '0', '1', '2', '3', '4', '5', '6', '7':
		v := int(c - '0')
		for i := 0; i < 2 && !s.eof() && '0' <= s.src[s.pos] && s.src[s.pos] <= '7'; i++ {
			v = v*8 + int(s.src[s.pos]-'0')
			s.pos++
		}
		return byte(v)
	}
	panic(&compileError{line: line, msg: fmt.Sprintf("invalid escape sequence in string literal: \\%c", c)})
}

func (s *scanner) lexString(t *token) {
	start := s.pos
	s.pos++ // opening quote
	var b strings.Builder
	for {
		if s.eof() {
			panic(&compileError{line: t.line, msg: "end-of-file encountered before end of string"})
		}
		c := s.src[s.pos]
		switch c {
		case '"':
			s.pos++
			t.kind, t.text, t.str = kString, s.src[start:s.pos], b.String()
			return
		case '\n':
			panic(&compileError{line: t.line, msg: "newline encountered in string literal"})
		case '\\':
			s.pos++
			b.WriteByte(s.escape(t.line))
		default:
			b.WriteByte(c)
			s.pos++
		}
	}
}

func (s *scanner) lexChar(t *token) {
	start := s.pos
	s.pos++
	if s.eof() || s.src[s.pos] == '\'' || s.src[s.pos] == '\n' {
		panic(&compileError{line: t.line, msg: "syntax error near \"'\""})
	}
	var c byte
	if s.src[s.pos] == '\\' {
		s.pos++
		c = s.escape(t.line)
	} else {
		c = s.src[s.pos]
		s.pos++
	}
	if s.eof() || s.src[s.pos] != '\'' {
		panic(&compileError{line: t.line, msg: "syntax error near \"'\""})
	}
	s.pos++
	t.kind, t.text, t.ival, t.ityp = kInt, s.src[start:s.pos], uint64(c), tInt
}
