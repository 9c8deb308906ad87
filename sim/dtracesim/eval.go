package dtracesim

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// value is a runtime value: an integer in its canonical form (see norm) or
// a string.
type value struct {
	i int64
	s string
}

// fault is a runtime error of a clause, reported the way the DTrace
// kernel reports a DIF fault: the clause's data for this firing is
// dropped.
type fault struct {
	what  string // dtrace_faultstr's words
	where string // "predicate" or "action #N"
}

// clauseRun is one clause executing for one firing.
type clauseRun struct {
	s        *session
	f        *firing
	buf      bytes.Buffer
	recorded bool   // the clause traced data (the consumer prints it)
	exit     *int64 // exit() was recorded with this status
	lkd      []int64
}

func (r *clauseRun) eval(e expr, where string) (value, *fault) {
	switch e := e.(type) {
	case *intLit:
		return value{i: e.v}, nil
	case *strLit:
		return value{s: e.s}, nil
	case *globalRef:
		return value{i: e.g.i, s: e.g.s}, nil
	case *builtinRef:
		return r.builtin(e), nil
	case *castExpr:
		v, flt := r.eval(e.e, where)
		if flt != nil || e.t.str {
			return v, flt
		}
		return value{i: norm(v.i, e.t)}, nil
	case *unaryExpr:
		v, flt := r.eval(e.e, where)
		if flt != nil {
			return v, flt
		}
		switch e.op {
		case "!":
			return boolValue(v.i == 0), nil
		case "-":
			return value{i: norm(-v.i, e.t)}, nil
		case "~":
			return value{i: norm(^v.i, e.t)}, nil
		}
		return value{i: norm(v.i, e.t)}, nil
	case *condExpr:
		c, flt := r.eval(e.c, where)
		if flt != nil {
			return c, flt
		}
		branch := e.b
		if c.i != 0 {
			branch = e.a
		}
		v, flt := r.eval(branch, where)
		if flt != nil || e.t.str {
			return v, flt
		}
		return value{i: norm(v.i, e.t)}, nil
	case *binaryExpr:
		return r.binary(e, where)
	case *caseCall:
		v, flt := r.eval(e.arg, where)
		if flt != nil {
			return v, flt
		}
		b := []byte(v.s)
		for i, c := range b {
			switch {
			case e.fn == "tolower" && 'A' <= c && c <= 'Z':
				b[i] = c + 'a' - 'A'
			case e.fn == "toupper" && 'a' <= c && c <= 'z':
				b[i] = c - ('a' - 'A')
			}
		}
		return value{s: string(b)}, nil
	}
	panic(fmt.Sprintf("dtracesim: unknown expression %T", e))
}

func boolValue(b bool) value {
	if b {
		return value{i: 1}
	}
	return value{}
}

func (r *clauseRun) binary(e *binaryExpr, where string) (value, *fault) {
	l, flt := r.eval(e.l, where)
	if flt != nil {
		return l, flt
	}
	// && and || short-circuit, as in C.
	switch e.op {
	case "&&":
		if l.i == 0 {
			return value{}, nil
		}
	case "||":
		if l.i != 0 {
			return value{i: 1}, nil
		}
	}
	rv, flt := r.eval(e.r, where)
	if flt != nil {
		return rv, flt
	}
	switch e.op {
	case "&&", "||":
		return boolValue(rv.i != 0), nil
	case "^^":
		return boolValue((l.i != 0) != (rv.i != 0)), nil
	}
	if e.strs {
		c := strings.Compare(l.s, rv.s)
		return compare(e.op, c), nil
	}
	a, b := norm(l.i, e.ct), norm(rv.i, e.ct)
	switch e.op {
	case "==", "!=", "<", "<=", ">", ">=":
		c := 0
		switch {
		case e.ct.bits == 64 && !e.ct.signed:
			if uint64(a) < uint64(b) {
				c = -1
			} else if uint64(a) > uint64(b) {
				c = 1
			}
		case a < b:
			c = -1
		case a > b:
			c = 1
		}
		return compare(e.op, c), nil
	}
	v, ok := arithmetic(e.op, a, b, e.ct)
	if !ok {
		return value{}, &fault{what: "divide-by-zero", where: where}
	}
	return value{i: norm(v, e.t)}, nil
}

// arithmetic computes a op b in type t; ok is false on division by zero.
func arithmetic(op string, a, b int64, t dtype) (int64, bool) {
	unsigned := !t.signed
	switch op {
	case "+":
		return a + b, true
	case "-":
		return a - b, true
	case "*":
		return a * b, true
	case "/", "%":
		if b == 0 {
			return 0, false
		}
		if unsigned {
			if op == "/" {
				return int64(uint64(a) / uint64(b)), true
			}
			return int64(uint64(a) % uint64(b)), true
		}
		if op == "/" {
			return a / b, true
		}
		return a % b, true
	case "&":
		return a & b, true
	case "|":
		return a | b, true
	case "^":
		return a ^ b, true
	case "<<":
		return a << (uint64(b) & 63), true
	case ">>":
		if unsigned {
			return int64(uint64(a) >> (uint64(b) & 63)), true
		}
		return a >> (uint64(b) & 63), true
	}
	panic("dtracesim: unknown operator " + op)
}

func compare(op string, c int) value {
	switch op {
	case "==":
		return boolValue(c == 0)
	case "!=":
		return boolValue(c != 0)
	case "<":
		return boolValue(c < 0)
	case "<=":
		return boolValue(c <= 0)
	case ">":
		return boolValue(c > 0)
	}
	return boolValue(c >= 0)
}

func (r *clauseRun) builtin(b *builtinRef) value {
	f := r.f
	switch b.name {
	case "execname":
		return value{s: f.proc.execname}
	case "probeprov":
		return value{s: f.probe.prov}
	case "probemod":
		return value{s: f.probe.mod}
	case "probefunc":
		return value{s: f.probe.fn}
	case "probename":
		return value{s: f.probe.name}
	case "pid":
		return value{i: int64(f.proc.pid)}
	case "ppid":
		return value{i: int64(1000 + 4*(hash64("ppid", f.proc.name)%2250))}
	case "tid":
		return value{i: int64(f.tid)}
	case "cpu":
		return value{i: int64(f.cpu)}
	case "timestamp":
		return value{i: int64(f.ts)}
	case "vtimestamp":
		return value{i: int64(f.ts / 3)}
	case "walltimestamp":
		return value{i: f.wall}
	case "errno":
		return value{}
	case "arg0":
		return value{i: int64(f.arg0)}
	}
	return value{} // arg1..arg9
}

// exec runs statements; a fault stops the clause.
func (r *clauseRun) exec(ss []stmt) *fault {
	for _, st := range ss {
		if flt := r.stmt(st); flt != nil {
			return flt
		}
	}
	return nil
}

func (r *clauseRun) stmt(st stmt) *fault {
	switch st := st.(type) {
	case *incStmt:
		st.g.i = norm(st.g.i+st.delta, st.g.t)
	case *assignStmt:
		v, flt := r.eval(st.e, "action list")
		if flt != nil {
			return flt
		}
		g := st.g
		switch {
		case g.t.str:
			g.s = v.s
		case st.op == "=":
			g.i = norm(v.i, g.t)
		default:
			op := strings.TrimSuffix(st.op, "=")
			t := arith(g.t, st.e.typ())
			if op == "<<" || op == ">>" {
				t = promote(g.t)
			}
			res, ok := arithmetic(op, norm(g.i, t), norm(v.i, t), t)
			if !ok {
				return &fault{what: "divide-by-zero", where: "action list"}
			}
			g.i = norm(res, g.t)
		}
	case *ifStmt:
		c, flt := r.eval(st.cond, "action list")
		if flt != nil {
			return flt
		}
		if c.i != 0 {
			return r.exec(st.then)
		}
		return r.exec(st.otherwise)
	case *actionStmt:
		return r.action(st)
	}
	return nil
}

func (r *clauseRun) action(a *actionStmt) *fault {
	where := fmt.Sprintf("action #%d", a.num)
	opts := r.s.opts
	switch a.name {
	case "printf":
		var args []value
		for _, seg := range a.format {
			if seg.conv == 0 {
				continue
			}
			v, flt := r.eval(seg.arg, where)
			if flt != nil {
				return flt
			}
			args = append(args, v)
		}
		i := 0
		for _, seg := range a.format {
			if seg.conv == 0 {
				r.buf.WriteString(seg.lit)
				continue
			}
			r.buf.WriteString(formatConv(seg, args[i]))
			i++
		}
	case "trace":
		v, flt := r.eval(a.args[0], where)
		if flt != nil {
			return flt
		}
		r.buf.WriteString(formatTrace(a.args[0].typ(), v, opts.quiet))
	case "ustack":
		depth := a.depth
		if depth == 0 {
			depth = opts.ustackframes
		}
		writeStack(&r.buf, r.s.world.userStack(r.f), depth, opts.stackindent)
	case "stack":
		depth := a.depth
		if depth == 0 {
			depth = opts.stackframes
		}
		writeStack(&r.buf, kernelStack(r.f), depth, opts.stackindent)
	case "exit":
		v, flt := r.eval(a.args[0], where)
		if flt != nil {
			return flt
		}
		r.exit = &v.i
	case "lkd":
		v, flt := r.eval(a.args[0], where)
		if flt != nil {
			return flt
		}
		switch v.i {
		case 0, 2, 4, 5:
			r.lkd = append(r.lkd, v.i)
		default:
			// lkd(1) takes user pages too, which needs a kernel
			// debugger attached; other values are not documented.
			return &fault{what: "illegal operation", where: where}
		}
		return nil // lkd records no data
	}
	r.recorded = true
	return nil
}

// formatConv formats one printf conversion the way dt_printf.c does: the
// argument is read at its own size, signed for %d and %i, unsigned
// otherwise.
func formatConv(seg pfSeg, v value) string {
	t := seg.arg.typ()
	bits := max(t.bits, 32)
	signed := norm(v.i, dtype{bits: bits, signed: true})
	unsigned := uint64(norm(v.i, dtype{bits: bits}))
	switch seg.conv {
	case 's':
		return fmt.Sprintf("%"+seg.spec+"s", v.s)
	case 'd', 'i':
		return fmt.Sprintf("%"+seg.spec+"d", signed)
	case 'u':
		return fmt.Sprintf("%"+seg.spec+"d", unsigned)
	case 'x', 'X', 'o':
		return fmt.Sprintf("%"+seg.spec+string(seg.conv), unsigned)
	case 'c':
		return fmt.Sprintf("%"+seg.spec+"c", rune(byte(v.i)))
	case 'Y':
		return fmt.Sprintf("%"+seg.spec+"s", time.Unix(0, v.i).Format("2006 Jan _2 15:04:05"))
	}
	return ""
}

// formatTrace formats trace()'s record as dt_consume.c does: numbers by
// their size, strings in a 33-column field unless quiet.
func formatTrace(t dtype, v value, quiet bool) string {
	if t.str {
		if quiet {
			return v.s
		}
		return fmt.Sprintf("  %-33s", v.s)
	}
	n := norm(v.i, dtype{bits: t.bits, signed: true})
	if quiet {
		return fmt.Sprint(n)
	}
	width := map[uint8]int{8: 3, 16: 5, 32: 8, 64: 16}[t.bits]
	return fmt.Sprintf(" %*d", width, n)
}

// writeStack prints frames as dt_print_stack does: a newline, then one
// frame per line, indented.
func writeStack(b *bytes.Buffer, frames []string, depth, indent int) {
	b.WriteByte('\n')
	for i, fr := range frames {
		if i == depth {
			break
		}
		fmt.Fprintf(b, "%*s%s\n", indent, "", fr)
	}
}
