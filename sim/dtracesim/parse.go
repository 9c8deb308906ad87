package dtracesim

import (
	"fmt"
	"strconv"
	"strings"
)

// program is one compiled -s script or -n probe specifier.
type program struct {
	desc    string // "script" or "description", as dtrace's notices say
	name    string // the script path or the cropped specifier
	pspec   bool   // compiled from -n
	clauses []*clause
	matches int // probes matched, summed over clauses and descriptions
}

// global is a D global variable (declared, or implied by an assignment).
type global struct {
	name string
	t    dtype
	i    int64
	s    string
}

// clause is a probe clause: descriptions, an optional predicate, actions.
type clause struct {
	line  int
	descs []probeDesc
	pred  expr // nil: always
	body  []stmt
	// epids are the enabled probe IDs of each description (the first one of
	// each), used in runtime error messages.
	epids []int
}

type stmt interface{ stmtLine() int }

// incStmt is x++, x--, ++x or --x.
type incStmt struct {
	line  int
	g     *global
	delta int64
}

// assignStmt is x = e or x op= e.
type assignStmt struct {
	line int
	g    *global
	op   string // "=", "+=", ...
	e    expr
}

// actionStmt is a call of a supported D action or subroutine.
type actionStmt struct {
	line   int
	num    int // action number within the clause, for error messages
	name   string
	args   []expr
	format []pfSeg // printf only
	depth  int     // ustack/stack: frames asked for; 0 means the option's default
}

// ifStmt is D's if/else.
type ifStmt struct {
	line            int
	cond            expr
	then, otherwise []stmt
}

func (s *incStmt) stmtLine() int    { return s.line }
func (s *assignStmt) stmtLine() int { return s.line }
func (s *actionStmt) stmtLine() int { return s.line }
func (s *ifStmt) stmtLine() int     { return s.line }

type expr interface{ typ() dtype }

type intLit struct {
	v int64
	t dtype
}
type strLit struct{ s string }
type builtinRef struct {
	name string
	t    dtype
}
type globalRef struct{ g *global }
type castExpr struct {
	t dtype
	e expr
}
type unaryExpr struct {
	op string
	e  expr
	t  dtype
}
type binaryExpr struct {
	op   string
	l, r expr
	t    dtype // result type
	ct   dtype // operand type after conversion (integer comparisons, arithmetic)
	strs bool  // string comparison
}
type condExpr struct {
	c, a, b expr
	t       dtype
}

// caseCall is tolower(s) or toupper(s): D subroutines (libdtrace dt_open.c,
// "string(const char *)") that change ASCII letters only.
type caseCall struct {
	fn  string // "tolower" or "toupper"
	arg expr
}

func (e *intLit) typ() dtype     { return e.t }
func (e *strLit) typ() dtype     { return tString }
func (e *builtinRef) typ() dtype { return e.t }
func (e *globalRef) typ() dtype  { return e.g.t }
func (e *castExpr) typ() dtype   { return e.t }
func (e *unaryExpr) typ() dtype  { return e.t }
func (e *binaryExpr) typ() dtype { return e.t }
func (e *condExpr) typ() dtype   { return e.t }
func (e *caseCall) typ() dtype   { return tString }

// builtins are the built-in variables of the subset, with their D types.
var builtins = map[string]dtype{
	"execname":      tString,
	"probeprov":     tString,
	"probemod":      tString,
	"probefunc":     tString,
	"probename":     tString,
	"pid":           typeNames["pid_t"],
	"ppid":          typeNames["pid_t"],
	"tid":           typeNames["id_t"],
	"cpu":           {bits: 32, signed: true, name: "processorid_t"},
	"timestamp":     typeNames["uint64_t"],
	"vtimestamp":    typeNames["uint64_t"],
	"walltimestamp": typeNames["uint64_t"],
	"errno":         tInt,
}

func init() {
	for i := 0; i <= 9; i++ {
		builtins[fmt.Sprintf("arg%d", i)] = typeNames["int64_t"]
	}
}

// unsupportedNames are real D built-in variables, subroutines and actions
// outside the subset: using one is reported as unsupported rather than as
// an unknown name, so that a script author is not told D lacks them.
var unsupportedNames = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`self this curthread curpsinfo curlwpsinfo args uregs
		stackdepth ustackdepth caller ucaller probeid epid id root cwd gid uid ipl zonename
		copyin copyinstr copyinto stringof strlen strjoin substr index rindex strstr strtok
		basename dirname lltostr inet_ntoa inet_ntop ntohl ntohs htonl htons
		speculation speculate commit discard printa count sum avg min max quantize lquantize
		llquantize stddev clear trunc normalize denormalize setopt system raise stop panic
		breakpoint chill copyout copyoutstr freopen ftruncate jstack sym usym func ufunc mod
		umod uaddr print tracemem alloca bcopy msgsize msgdsize mutex_owned rand progenyof
		getmajor getminor ddi_pathname cleanpath strtoll offsetof sizeof xlate`) {
		unsupportedNames[n] = true
	}
}

// assignOps are D's assignment operators.
var assignOps = map[string]bool{"=": true, "+=": true, "-=": true, "*=": true, "/=": true, "%=": true, "&=": true, "|=": true, "^=": true, "<<=": true, ">>=": true}

// actionNames are the actions and subroutines the simulation runs.
var actionNames = map[string]bool{"printf": true, "trace": true, "ustack": true, "stack": true, "exit": true, "lkd": true}

// compiler holds what is shared by all programs of one dtrace invocation:
// the global variables and the options pragmas set.
type compiler struct {
	globals map[string]*global
	opts    *options
	zdefs   bool
}

type parser struct {
	c      *compiler
	s      *scanner
	pspec  bool
	peeked *token
	inPred bool
	parens int
	region string
	action int // actions so far in the clause
}

func errf(line int, region, format string, args ...any) {
	panic(&compileError{line: line, region: region, msg: fmt.Sprintf(format, args...)})
}

// compile parses and checks one program. name and desc are used in the
// notices; pspec selects -n's grammar (a probe description alone is a
// clause) and diagnostics.
func (c *compiler) compile(src, desc, name string, pspec bool) (prog *program, err error) {
	defer func() {
		if r := recover(); r != nil {
			ce, ok := r.(*compileError)
			if !ok {
				panic(r)
			}
			prog, err = nil, ce
		}
	}()
	p := &parser{c: c, s: &scanner{src: src, line: 1}, pspec: pspec}
	prog = &program{desc: desc, name: name, pspec: pspec}
	if strings.HasPrefix(src, "#!") {
		p.s.restOfLine()
	}
	for {
		p.s.skipSpace()
		if p.s.eof() {
			break
		}
		if p.s.src[p.s.pos] == '#' {
			p.directive()
			continue
		}
		w := p.s.peekWord()
		switch {
		case typeWords[w]:
			p.declaration()
		case w == "inline" || w == "self" || w == "this" || w == "typedef" || w == "translator" ||
			w == "struct" || w == "union" || w == "enum" || w == "provider" || w == "static" || w == "extern":
			errf(p.s.line, "", "%s declarations are not supported by the simulated dtrace", w)
		default:
			prog.clauses = append(prog.clauses, p.clause())
		}
	}
	if len(prog.clauses) == 0 && pspec {
		errf(p.s.line, "", "syntax error near end of input")
	}
	return prog, nil
}

func (p *parser) peek() token {
	if p.peeked == nil {
		t := p.s.next()
		p.peeked = &t
	}
	return *p.peeked
}

func (p *parser) next() token {
	t := p.peek()
	p.peeked = nil
	return t
}

// unpeek gives a looked-at token back to the scanner, before switching to
// one of the raw scanners.
func (p *parser) unpeek() {
	if p.peeked != nil {
		p.s.pos, p.s.line = p.peeked.start, p.peeked.line
		p.peeked = nil
	}
}

func (p *parser) syntax(t token) {
	if t.kind == kEOF {
		errf(t.line, "", "syntax error near end of input")
	}
	errf(t.line, "", "syntax error near \"%s\"", t.text)
}

func (p *parser) expect(text string) token {
	t := p.next()
	if t.kind != kPunct || t.text != text {
		p.syntax(t)
	}
	return t
}

func (p *parser) isPunct(text string) bool {
	t := p.peek()
	return t.kind == kPunct && t.text == text
}

// directive handles a #pragma line; other control lines need cpp (-C),
// which the simulation does not run.
func (p *parser) directive() {
	line := p.s.line
	text := p.s.restOfLine()
	f := strings.Fields(strings.TrimPrefix(text, "#"))
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "pragma":
	case "line", "ident":
		return
	default:
		errf(line, "", "invalid control directive: #%s", f[0])
	}
	if len(f) < 2 || f[1] != "D" {
		return // pragmas for other compilers are ignored, as D does
	}
	if len(f) < 3 {
		errf(line, "", "invalid control directive: %s", strings.TrimSpace(text))
	}
	switch f[2] {
	case "option":
		if len(f) != 4 {
			errf(line, "", "#pragma D option requires one option name")
		}
		name, val, _ := strings.Cut(f[3], "=")
		if err := p.c.opts.set(name, val); err != nil {
			errf(line, "", "failed to set option %s: %v", name, err)
		}
	case "depends_on", "attributes", "binding":
		// Stability and dependency annotations: nothing to simulate.
	default:
		errf(line, "", "invalid control directive: #pragma D %s", f[2])
	}
}

// parseTypeName reads a type name such as int, uint32_t or unsigned long.
func (p *parser) parseTypeName() dtype {
	t := p.next()
	if t.kind != kIdent {
		p.syntax(t)
	}
	cwords := map[string]bool{"signed": true, "unsigned": true, "short": true, "long": true, "int": true, "char": true}
	if !cwords[t.text] {
		ty, ok := typeNames[t.text]
		if !ok {
			p.syntax(t)
		}
		return ty
	}
	words := []string{t.text}
	for {
		n := p.peek()
		if n.kind != kIdent || !cwords[n.text] {
			break
		}
		words = append(words, p.next().text)
	}
	key := strings.Join(words, " ")
	if len(words) > 1 {
		// "long int" is "long", "unsigned short int" is "unsigned short".
		key = strings.TrimSuffix(key, " int")
	}
	ty, ok := typeNames[key]
	if !ok {
		errf(t.line, "", "invalid type combination: %s", strings.Join(words, " "))
	}
	return ty
}

// declaration reads a global declaration: type name, names, semicolon.
func (p *parser) declaration() {
	ty := p.parseTypeName()
	for {
		t := p.next()
		if t.kind != kIdent {
			p.syntax(t)
		}
		if _, ok := builtins[t.text]; ok || unsupportedNames[t.text] || actionNames[t.text] {
			errf(t.line, "", "failed to declare %s: identifier redeclared", t.text)
		}
		if g, ok := p.c.globals[t.text]; ok {
			if g.t != ty {
				errf(t.line, "", "failed to declare %s: identifier redeclared", t.text)
			}
		} else {
			p.c.globals[t.text] = &global{name: t.text, t: ty}
		}
		n := p.next()
		if n.kind == kPunct && n.text == ";" {
			return
		}
		if n.kind != kPunct || n.text != "," {
			if n.kind == kPunct && n.text == "[" {
				errf(n.line, "", "arrays are not supported by the simulated dtrace")
			}
			p.syntax(n)
		}
	}
}

// clause reads probe descriptions, an optional predicate and the actions.
func (p *parser) clause() *clause {
	p.unpeek()
	c := &clause{line: p.s.line}
	p.action = 0
	for {
		p.s.skipSpace()
		line := p.s.line
		text := p.s.scanProbeDesc()
		if text == "" {
			p.syntax(p.peek())
		}
		c.descs = append(c.descs, p.c.parseDesc(text, line))
		p.s.skipSpace()
		if p.s.peekByte(0) != ',' {
			break
		}
		p.s.pos++
	}
	if p.isPunct("/") {
		p.next()
		p.inPred, p.parens, p.region = true, 0, "predicate"
		c.pred = p.parseExpr()
		p.inPred = false
		if c.pred.typ().str {
			errf(p.s.line, p.region, "predicate result must be of scalar type")
		}
		p.expect("/")
	}
	t := p.peek()
	if p.pspec && t.kind == kEOF {
		return c // a bare description: the default action
	}
	if t.kind != kPunct || t.text != "{" {
		p.syntax(t)
	}
	p.region = "action list"
	c.body = p.block()
	p.region = ""
	return c
}

// block reads { statements }.
func (p *parser) block() []stmt {
	p.expect("{")
	var body []stmt
	for !p.isPunct("}") {
		if s := p.statement(); s != nil {
			body = append(body, s)
		}
	}
	p.next()
	return body
}

// endStatement accepts the ';' after a statement, or a '}' that ends the
// block (D does not need a ';' after the last statement).
func (p *parser) endStatement() {
	t := p.peek()
	switch {
	case t.kind == kPunct && t.text == ";":
		p.next()
	case t.kind == kPunct && t.text == "}":
	default:
		p.syntax(t)
	}
}

func (p *parser) statement() stmt {
	t := p.next()
	switch {
	case t.kind == kPunct && t.text == ";":
		return nil
	case t.kind == kPunct && (t.text == "++" || t.text == "--"):
		n := p.next()
		if n.kind != kIdent {
			p.syntax(n)
		}
		s := &incStmt{line: t.line, g: p.scalarVar(n, t.text), delta: map[string]int64{"++": 1, "--": -1}[t.text]}
		p.endStatement()
		return s
	case t.kind == kIdent && t.text == "if":
		return p.ifStatement(t)
	case t.kind == kPunct && t.text == "@":
		errf(t.line, p.region, "aggregations are not supported by the simulated dtrace")
	case t.kind != kIdent:
		p.syntax(t)
	}
	n := p.peek()
	var s stmt
	switch {
	case n.kind == kPunct && n.text == "(":
		s = p.call(t)
	case n.kind == kPunct && (n.text == "++" || n.text == "--"):
		p.next()
		s = &incStmt{line: t.line, g: p.scalarVar(t, n.text), delta: map[string]int64{"++": 1, "--": -1}[n.text]}
	case n.kind == kPunct && assignOps[n.text]:
		p.next()
		s = p.assignment(t, n.text)
	case n.kind == kPunct && (n.text == "[" || n.text == "->" || n.text == "."):
		errf(n.line, p.region, "%s%s is not supported by the simulated dtrace", t.text, n.text)
	default:
		p.syntax(n)
	}
	p.endStatement()
	return s
}

func (p *parser) ifStatement(t token) stmt {
	p.expect("(")
	p.parens++
	cond := p.parseExpr()
	p.parens--
	p.expect(")")
	if cond.typ().str {
		errf(t.line, p.region, "if condition must be of scalar type")
	}
	s := &ifStmt{line: t.line, cond: cond}
	s.then = p.branch()
	if n := p.peek(); n.kind == kIdent && n.text == "else" {
		p.next()
		s.otherwise = p.branch()
	}
	return s
}

// branch reads the body of an if or else: a block or one statement.
func (p *parser) branch() []stmt {
	if p.isPunct("{") {
		return p.block()
	}
	if s := p.statement(); s != nil {
		return []stmt{s}
	}
	return nil
}

// scalarVar resolves the global that ++/-- applies to.
func (p *parser) scalarVar(t token, op string) *global {
	g := p.lvalue(t)
	if g.t.str {
		errf(t.line, p.region, "operator %s requires an operand of scalar type", op)
	}
	return g
}

func (p *parser) lvalue(t token) *global {
	if _, ok := builtins[t.text]; ok {
		errf(t.line, p.region, "operator = can only be applied to a writable variable")
	}
	if unsupportedNames[t.text] {
		errf(t.line, p.region, "%s is not supported by the simulated dtrace", t.text)
	}
	g := p.c.globals[t.text]
	if g == nil {
		errf(t.line, p.region, "failed to resolve %s: Unknown variable name", t.text)
	}
	return g
}

func (p *parser) assignment(t token, op string) stmt {
	e := p.parseExpr()
	g := p.c.globals[t.text]
	if g == nil && op == "=" {
		if _, ok := builtins[t.text]; !ok && !unsupportedNames[t.text] && !actionNames[t.text] {
			// D declares a global implicitly, with the type of the
			// first value assigned to it.
			ty := e.typ()
			if !ty.str {
				ty = promote(ty)
			}
			g = &global{name: t.text, t: ty}
			p.c.globals[t.text] = g
		}
	}
	if g == nil {
		g = p.lvalue(t)
	}
	if g.t.str != e.typ().str {
		errf(t.line, p.region, "operator %s operands have incompatible types: \"%s\" %s \"%s\"", op, g.t.name, op, e.typ().name)
	}
	if op != "=" && g.t.str {
		errf(t.line, p.region, "operator %s requires operands of arithmetic type", op)
	}
	return &assignStmt{line: t.line, g: g, op: op, e: e}
}

// call reads an action or subroutine call statement.
func (p *parser) call(name token) stmt {
	p.expect("(")
	p.parens++
	var args []expr
	if !p.isPunct(")") {
		for {
			args = append(args, p.parseExpr())
			if !p.isPunct(",") {
				break
			}
			p.next()
		}
	}
	p.parens--
	p.expect(")")
	if !actionNames[name.text] {
		if unsupportedNames[name.text] {
			errf(name.line, p.region, "%s( ) is not supported by the simulated dtrace", name.text)
		}
		errf(name.line, p.region, "failed to resolve %s: Unknown variable name", name.text)
	}
	p.action++
	a := &actionStmt{line: name.line, num: p.action, name: name.text, args: args}
	nargs := func(min, max int) {
		if len(args) >= min && len(args) <= max {
			return
		}
		want := fmt.Sprint(min)
		switch {
		case min != max && len(args) < min:
			want = "at least " + want
		case min != max:
			want = fmt.Sprintf("at most %d", max)
		}
		plural := "s"
		if len(args) == 1 {
			plural = ""
		}
		errf(name.line, p.region, "%s( ) prototype mismatch: %d arg%s passed, %s expected", name.text, len(args), plural, want)
	}
	intArg := func(i int) {
		if args[i].typ().str {
			errf(name.line, p.region, "%s( ) argument #%d is incompatible with prototype:\n\tprototype: int\n\t argument: string", name.text, i+1)
		}
	}
	constArg := func(i int) int {
		lit, ok := args[i].(*intLit)
		if !ok || lit.v <= 0 || lit.v > 1<<20 {
			errf(name.line, p.region, "%s( ) argument #%d must be a non-zero positive integral constant expression", name.text, i+1)
		}
		return int(lit.v)
	}
	switch name.text {
	case "printf":
		nargs(1, 1<<30)
		f, ok := args[0].(*strLit)
		if !ok {
			errf(name.line, p.region, "printf( ) argument #1 is incompatible with prototype:\n\tprototype: string constant\n\t argument: %s", args[0].typ().name)
		}
		a.format = p.parseFormat(name.line, f.s, args[1:])
	case "trace":
		nargs(1, 1)
	case "ustack":
		nargs(0, 2)
		if len(args) >= 1 {
			a.depth = constArg(0)
		}
		if len(args) == 2 {
			constArg(1)
		}
	case "stack":
		nargs(0, 1)
		if len(args) == 1 {
			a.depth = constArg(0)
		}
	case "exit", "lkd":
		nargs(1, 1)
		intArg(0)
	}
	return a
}

// Expressions, lowest precedence first.

var binPrec = map[string]int{
	"||": 1, "^^": 2, "&&": 3, "|": 4, "^": 5, "&": 6,
	"==": 7, "!=": 7, "<": 8, "<=": 8, ">": 8, ">=": 8,
	"<<": 9, ">>": 9, "+": 10, "-": 10, "*": 11, "/": 11, "%": 11,
}

func (p *parser) parseExpr() expr {
	c := p.parseBinary(1)
	if !p.isPunct("?") {
		return c
	}
	q := p.next()
	if c.typ().str {
		errf(q.line, p.region, "operator ?: expression must be of scalar type")
	}
	a := p.parseExpr()
	p.expect(":")
	b := p.parseExpr()
	e := &condExpr{c: c, a: a, b: b}
	switch {
	case a.typ().str && b.typ().str:
		e.t = tString
	case !a.typ().str && !b.typ().str:
		e.t = arith(a.typ(), b.typ())
	default:
		errf(q.line, p.region, "operator ?: operands must have compatible types")
	}
	return e
}

func (p *parser) parseBinary(min int) expr {
	left := p.parseUnary()
	for {
		t := p.peek()
		if t.kind != kPunct {
			return left
		}
		prec, ok := binPrec[t.text]
		if !ok || prec < min {
			return left
		}
		if t.text == "/" && p.inPred && p.parens == 0 {
			return left // the end of the predicate
		}
		p.next()
		right := p.parseBinary(prec + 1)
		left = p.binary(t, left, right)
	}
}

func (p *parser) binary(t token, l, r expr) expr {
	op := t.text
	lt, rt := l.typ(), r.typ()
	e := &binaryExpr{op: op, l: l, r: r}
	switch op {
	case "&&", "||", "^^":
		if lt.str || rt.str {
			errf(t.line, p.region, "operator %s requires operands of scalar type", op)
		}
		e.t = tInt
	case "==", "!=", "<", "<=", ">", ">=":
		switch {
		case lt.str && rt.str:
			e.strs = true
		case !lt.str && !rt.str:
			e.ct = arith(lt, rt)
		default:
			errf(t.line, p.region, "operator %s operands have incompatible types: \"%s\" %s \"%s\"", op, lt.name, op, rt.name)
		}
		e.t = tInt
	default:
		if lt.str || rt.str {
			errf(t.line, p.region, "operator %s requires operands of arithmetic type", op)
		}
		if op == "<<" || op == ">>" {
			e.t, e.ct = promote(lt), promote(lt)
		} else {
			e.t = arith(lt, rt)
			e.ct = e.t
		}
	}
	return e
}

func (p *parser) parseUnary() expr {
	t := p.peek()
	if t.kind == kPunct {
		switch t.text {
		case "!", "-", "+", "~":
			p.next()
			e := p.parseUnary()
			if e.typ().str {
				errf(t.line, p.region, "operator %s requires an operand of scalar type", t.text)
			}
			ty := promote(e.typ())
			if t.text == "!" {
				ty = tInt
			}
			return &unaryExpr{op: t.text, e: e, t: ty}
		case "(":
			p.next()
			p.parens++
			if n := p.peek(); n.kind == kIdent && typeWords[n.text] && p.c.globals[n.text] == nil {
				ty := p.parseTypeName()
				p.parens--
				p.expect(")")
				e := p.parseUnary()
				if e.typ().str != ty.str {
					errf(t.line, p.region, "invalid cast expression: \"%s\" to \"%s\"", e.typ().name, ty.name)
				}
				return &castExpr{t: ty, e: e}
			}
			e := p.parseExpr()
			p.parens--
			p.expect(")")
			return e
		case "++", "--":
			errf(t.line, p.region, "operator %s in an expression is not supported by the simulated dtrace", t.text)
		case "@":
			errf(t.line, p.region, "aggregations are not supported by the simulated dtrace")
		case "$":
			errf(t.line, p.region, "macro variables are not supported by the simulated dtrace")
		case "*", "&":
			errf(t.line, p.region, "pointers are not supported by the simulated dtrace")
		}
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() expr {
	t := p.next()
	var e expr
	switch t.kind {
	case kInt:
		e = &intLit{v: norm(int64(t.ival), t.ityp), t: t.ityp}
	case kString:
		e = &strLit{s: t.str}
	case kIdent:
		if n := p.peek(); n.kind == kPunct && n.text == "(" {
			if t.text == "tolower" || t.text == "toupper" {
				e = p.caseCall(t)
				break
			}
			if t.text == "sizeof" || unsupportedNames[t.text] || actionNames[t.text] {
				errf(t.line, p.region, "%s( ) is not supported by the simulated dtrace in an expression", t.text)
			}
			errf(t.line, p.region, "failed to resolve %s: Unknown variable name", t.text)
		}
		if ty, ok := builtins[t.text]; ok {
			e = &builtinRef{name: t.text, t: ty}
		} else if g := p.c.globals[t.text]; g != nil {
			e = &globalRef{g: g}
		} else if unsupportedNames[t.text] {
			errf(t.line, p.region, "%s is not supported by the simulated dtrace", t.text)
		} else {
			errf(t.line, p.region, "failed to resolve %s: Unknown variable name", t.text)
		}
	default:
		p.syntax(t)
	}
	if n := p.peek(); n.kind == kPunct && (n.text == "[" || n.text == "->" || n.text == ".") {
		errf(n.line, p.region, "%s%s is not supported by the simulated dtrace", t.text, n.text)
	}
	return e
}

// caseCall reads the argument list of tolower( ) or toupper( ).
func (p *parser) caseCall(name token) expr {
	p.expect("(")
	p.parens++
	arg := p.parseExpr()
	p.parens--
	p.expect(")")
	if !arg.typ().str {
		errf(name.line, p.region, "%s( ) argument #1 is incompatible with prototype: prototype: const char * argument: %s", name.text, arg.typ().name)
	}
	return &caseCall{fn: name.text, arg: arg}
}

// pfSeg is a piece of a printf format: literal text, or one conversion.
type pfSeg struct {
	lit  string
	conv byte   // 0 for literal text
	spec string // flags, width and precision, for Go's fmt
	raw  string // the conversion as written, without '%'
	arg  expr
}

// parseFormat splits a printf format into literal text and conversions and
// checks each conversion against its argument, as dt_printf.c does at
// compile time.
func (p *parser) parseFormat(line int, f string, args []expr) []pfSeg {
	var segs []pfSeg
	var lit strings.Builder
	n := 0
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			lit.WriteByte(f[i])
			continue
		}
		start := i
		i++
		if i < len(f) && f[i] == '%' {
			lit.WriteByte('%')
			continue
		}
		j := i
		for j < len(f) && strings.IndexByte("-+ #0", f[j]) >= 0 {
			j++
		}
		for j < len(f) && '0' <= f[j] && f[j] <= '9' {
			j++
		}
		if j < len(f) && f[j] == '.' {
			j++
			for j < len(f) && '0' <= f[j] && f[j] <= '9' {
				j++
			}
		}
		spec := f[i:j]
		if j < len(f) && f[j] == '*' {
			errf(line, p.region, "printf( ) dynamic field widths are not supported by the simulated dtrace")
		}
		for j < len(f) && strings.IndexByte("hlLjzt", f[j]) >= 0 {
			j++
		}
		if j >= len(f) {
			errf(line, p.region, "printf( ) format %q: Incomplete printf conversion", f[start:])
		}
		conv := f[j]
		raw := f[i : j+1]
		i = j
		switch conv {
		case 'd', 'i', 'u', 'o', 'x', 'X', 'c', 's', 'Y':
		case 'a', 'A', 'e', 'E', 'f', 'F', 'g', 'G', 'k', 'p', 'P', 'S', 'T', 'W', 'm':
			errf(line, p.region, "printf( ) conversion %%%c is not supported by the simulated dtrace", conv)
		default:
			errf(line, p.region, "printf( ) format %q: invalid conversion %%%s", f, raw)
		}
		n++
		if n > len(args) {
			errf(line, p.region, "printf( ) prototype mismatch: conversion #%d (%%%s) is missing a corresponding value argument", n, raw)
		}
		arg := args[n-1]
		var proto string
		switch {
		case conv == 's' && !arg.typ().str:
			proto = "char [] or string (or use stringof)"
		case conv == 'c' && arg.typ().str:
			proto = "char, short, or int"
		case conv == 'd' || conv == 'i':
			if arg.typ().str {
				proto = "char, short, int, long, or long long"
			}
		case conv == 'Y':
			if arg.typ().str {
				proto = "int64_t"
			}
		case conv != 's' && conv != 'c' && arg.typ().str:
			proto = "unsigned char, short, int, long, or long long"
		}
		if proto != "" {
			errf(line, p.region, "printf( ) argument #%d is incompatible with conversion #%d prototype:\n\tconversion: %%%s\n\t prototype: %s\n\t  argument: %s", n+1, n, raw, proto, arg.typ().name)
		}
		if lit.Len() > 0 {
			segs = append(segs, pfSeg{lit: lit.String()})
			lit.Reset()
		}
		segs = append(segs, pfSeg{conv: conv, spec: spec, raw: raw, arg: arg})
	}
	if n < len(args) {
		errf(line, p.region, "printf( ) prototype mismatch: only %d arguments required by this format string", n+1)
	}
	if lit.Len() > 0 {
		segs = append(segs, pfSeg{lit: lit.String()})
	}
	return segs
}

// parseInt reads a non-negative option value, with dtrace's size suffixes.
func parseInt(s string) (int64, error) {
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("Invalid value for specified option")
	}
	return v * mult, nil
}
