// Package dtracesim is the simulated dtrace.exe: a separate program,
// launched with the arguments dtrace.exe takes on Windows, that runs D
// scripts against a simulated Windows machine (package sim) and prints
// what the real dtrace prints.
//
// It is a small D implementation, not a template match: it parses
// pragmas, global declarations and clauses (probe descriptions, an
// optional predicate, statements), evaluates predicates and actions with
// D's types, and formats output with libdtrace's rules (the CPU/ID/
// FUNCTION:NAME header and prefixes unless quiet, stacks as one frame per
// line indented 14 spaces after a newline, printf conversions read at the
// argument's size). What it does not implement is refused with a compile
// error in dtrace's words ("dtrace: failed to compile script x.d: line N:
// ...").
//
// Probes fire at a steady rate in simulated processes: most firings come
// from the processes and carry the statuses the predicates compare
// execname and arg0 with, some do not, so that predicates really filter.
// Stacks follow two to four fixed call paths per syscall, so events group
// into a few stack signatures; what is printed of them is as poor as on
// Windows (one-frame, empty and unresolved user stacks, dispatcher-only
// kernel stacks, names in the ANSI code page; see realism.go). lkd()
// writes a live kernel dump into the machine's LiveKernelReports path as
// Windows does (see dump.go): only from a probe that fired at PASSIVE_LEVEL
// (never from BEGIN or END), and one at a time (an lkd() while a dump is
// being written is dropped, silently).
//
// Options: -s script and -n specifier (any number), -q, -w, -o file
// (appended to), -x option[=value] (quiet, destructive, stackframes,
// ustackframes and stackindent act; others are accepted and ignored), -l,
// -e (compile only: syntax, and probe descriptions against the probes the
// machine has), -Z, -b (ignored), -32/-64, -y symbolpath (ignored; only on
// a machine whose dtrace is the built-in one, else an illegal option). The other options of dtrace are refused as
// not supported; unknown ones are a usage error (exit 2). On Windows the
// output has CRLF line endings, as dtrace.exe's C runtime writes text
// mode. The process does not exit before the dumps lkd() asked for are
// complete.
//
// The machine is the sim state directory named by EnvHost; without it, or
// when the machine did not boot with the dtrace flag or has no DTrace
// installed, dtrace fails as on a machine without the driver. The
// simulation reads the machine and never changes it, except for writing
// dumps on its C: drive. The Windows build without LIVEDUMP_SIM_HOST runs
// against the Windows machine it is on instead (the dtrace.exe double of
// the Wine tests, see local_windows.go).
//
// Environment:
//
//	LIVEDUMP_SIM_HOST          the simulated machine (sim state directory)
//	LIVEDUMP_SIM_DTRACE_RATE   syscall firings per second: (0, 1000], default 2
//	LIVEDUMP_SIM_DTRACE_SEED   makes firings and stacks deterministic (an integer)
//	LIVEDUMP_SIM_DUMP_BYTES    size of a live dump: 8 KiB to 1 GiB, default 8 MiB
//	LIVEDUMP_SIM_DUMP_SECONDS  how long a dump takes to write: [0, 3600], default 3
//	LIVEDUMP_SIM_DTRACE_ANSI   names in the ANSI code page: on (default) or off
//	LIVEDUMP_SIM_DTRACE_WOW64  more 32-bit images, never traced (comma-separated)
//	LIVEDUMP_SIM_DTRACE_BUFSIZE principal buffer per CPU when -b is not given, default 4m
package dtracesim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Environment variables the simulated dtrace reads. EnvHost is the same
// variable as sim.EnvHost, which the simulated host sets when it starts
// this program.
const (
	EnvHost        = "LIVEDUMP_SIM_HOST"
	EnvRate        = "LIVEDUMP_SIM_DTRACE_RATE"
	EnvSeed        = "LIVEDUMP_SIM_DTRACE_SEED"
	EnvDumpBytes   = "LIVEDUMP_SIM_DUMP_BYTES"
	EnvDumpSeconds = "LIVEDUMP_SIM_DUMP_SECONDS"
)

// Defaults and bounds of the environment settings.
const (
	DefaultRate        = 2.0
	MaxRate            = 1000.0
	DefaultDumpBytes   = 8 << 20
	MinDumpBytes       = dumpHeaderSize
	MaxDumpBytes       = 1 << 30
	DefaultDumpSeconds = 3.0
	MaxDumpSeconds     = 3600.0
	MaxBufSize         = 1 << 30
)

// Exit codes, as dtrace's.
const (
	exitSuccess = 0
	exitError   = 1
	exitUsage   = 2
)

// pname is how dtrace names itself in messages.
const pname = "dtrace"

// optstring is dtrace's getopt string; the simulation knows every option
// and implements some.
const optstring = "3:6:aAb:Bc:CD:ef:FGhHi:I:lL:m:n:o:p:P:qs:SU:vVwx:X:y:Z"

// Main runs the simulated dtrace with args (os.Args[1:]) and env
// (os.Environ()) and returns its exit code. SIGINT and SIGTERM (Ctrl+C,
// console close) stop tracing the way dtrace stops: END clauses run, the
// output ends, and the exit status is the one exit() set (0 by default).
func Main(args, env []string, stdout, stderr io.Writer) int {
	if spec, ok := lookupEnv(env, envKernelDump); ok && runtime.GOOS == "windows" {
		return kernelMain(spec, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, env, stdout, stderr)
}

// Run is Main with the interruption given as ctx: cancelling it is
// pressing Ctrl+C.
func Run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	code, _ := run(ctx, args, env, stdout, stderr)
	return code
}

// stats is what a run did, for tests.
type stats struct {
	firings  int // syscall firings generated
	filtered int // firings that some clause's probe matched but no predicate let through
	recorded int // clause executions that traced data
	dropped  int // ... whose data a full buffer dropped (drops.go)
	dumps    []string
	dumpErrs []error
	// lkdIgnored counts lkd() calls in BEGIN/END/ERROR, which never dump;
	// lkdDropped those made while another live dump was in progress.
	lkdIgnored, lkdDropped int
}

// cmdline is dtrace's command line.
type cmdline struct {
	progs []progArg
	opts  [][2]string // -q, -w, -x, in order
	ofile string
	list  bool
	exec  bool
	zdefs bool
	// sympath is -y's symbol path. Only the built-in dtrace of Windows
	// Server 2025 documents -y (windows-commands/dtrace); the MSI build's
	// usage does not list it, so the simulation accepts it only on a
	// machine with the built-in one.
	sympath string
	hasY    bool
}

type progArg struct {
	flag byte // 's' or 'n'
	arg  string
}

// usage is dtrace's usage message.
func usage(w io.Writer) int {
	const predact = "[[ predicate ] action ]"
	fmt.Fprintf(w, "Usage: %s [-32|-64] [-aACeFGhHlqSvVwZ] [-b bufsz] [-c cmd] [-D name[=def]]\n\t[-I path] [-L path] [-o output] [-p pid] [-s script] [-U name]\n\t[-x opt[=val]] [-X a|c|s|t]\n\n", pname)
	fmt.Fprintf(w, "\t[-P provider %s]\n\t[-m [ provider: ] module %s]\n\t[-f [[ provider: ] module: ] func %s]\n\t[-n [[[ provider: ] module: ] func: ] name %s]\n\t[-i probe-id %s] [ args ... ]\n\n", predact, predact, predact, predact, predact)
	fmt.Fprint(w, "\tpredicate -> '/' D-expression '/'\n\t   action -> '{' D-statements '}'\n\n")
	fmt.Fprint(w, "\t-32 generate 32-bit D programs and ELF files\n\t-64 generate 64-bit D programs and ELF files\n\n"+
		"\t-a  claim anonymous tracing state\n\t-A  generate driver.conf(4) directives for anonymous tracing\n"+
		"\t-b  set trace buffer size\n\t-c  run specified command and exit upon its completion\n"+
		"\t-C  run cpp(1) preprocessor on script files\n\t-D  define symbol when invoking preprocessor\n"+
		"\t-e  exit after compiling request but prior to enabling probes\n"+
		"\t-f  enable or list probes matching the specified function name\n\t-F  coalesce trace output by function\n"+
		"\t-G  generate an ELF file containing embedded dtrace program\n"+
		"\t-h  generate a header file with definitions for static probes\n"+
		"\t-H  print included files when invoking preprocessor\n"+
		"\t-i  enable or list probes matching the specified probe id\n"+
		"\t-I  add include directory to preprocessor search path\n\t-l  list probes matching specified criteria\n"+
		"\t-L  add library directory to library search path\n"+
		"\t-m  enable or list probes matching the specified module name\n"+
		"\t-n  enable or list probes matching the specified probe name\n\t-o  set output file\n"+
		"\t-p  grab specified process-ID and cache its symbol tables\n"+
		"\t-P  enable or list probes matching the specified provider name\n"+
		"\t-q  set quiet mode (only output explicitly traced data)\n"+
		"\t-s  enable or list probes according to the specified D script\n\t-S  print D compiler intermediate code\n"+
		"\t-U  undefine symbol when invoking preprocessor\n"+
		"\t-v  set verbose mode (report stability attributes, arguments)\n\t-V  report DTrace API version\n"+
		"\t-w  permit destructive actions\n\t-x  enable or modify compiler and tracing options\n"+
		"\t-X  specify ISO C conformance settings for preprocessor\n"+
		"\t-Z  permit probe descriptions that match zero probes\n")
	return exitUsage
}

// parseArgs reads the command line as dtrace's getopt loop does: options
// anywhere, operands (macro arguments) collected and, here, ignored.
func parseArgs(args []string, stderr io.Writer) (cmdline, int, bool) {
	cl := cmdline{exec: true}
	if len(args) == 0 {
		return cl, usage(stderr), false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if len(a) < 2 || a[0] != '-' {
			continue // a macro argument ($1 ...)
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			k := strings.IndexByte(optstring, c)
			if k < 0 || c == ':' {
				fmt.Fprintf(stderr, "%s: illegal option -- %c\n", pname, c)
				return cl, usage(stderr), false
			}
			var val string
			if k+1 < len(optstring) && optstring[k+1] == ':' {
				switch {
				case j+1 < len(a):
					val = a[j+1:]
				case i+1 < len(args):
					i++
					val = args[i]
				default:
					fmt.Fprintf(stderr, "%s: option requires an argument -- %c\n", pname, c)
					return cl, usage(stderr), false
				}
				j = len(a)
			}
			switch c {
			case '3', '6':
				if (c == '3' && val != "2") || (c == '6' && val != "4") {
					fmt.Fprintf(stderr, "%s: illegal option -- %c%s\n", pname, c, val)
					return cl, usage(stderr), false
				}
			case 'b':
				cl.opts = append(cl.opts, [2]string{"bufsize", val})
			case 'e':
				cl.exec = false
			case 'l':
				cl.list = true
				cl.zdefs = true
			case 'n', 's':
				cl.progs = append(cl.progs, progArg{flag: c, arg: val})
			case 'o':
				cl.ofile = val
			case 'q':
				cl.opts = append(cl.opts, [2]string{"quiet", ""})
			case 'w':
				cl.opts = append(cl.opts, [2]string{"destructive", ""})
			case 'x':
				name, v, _ := strings.Cut(val, "=")
				cl.opts = append(cl.opts, [2]string{name, v})
			case 'Z':
				cl.zdefs = true
			case 'y':
				cl.sympath, cl.hasY = val, true
			default:
				fmt.Fprintf(stderr, "%s: -%c is not supported by the simulated dtrace\n", pname, c)
				return cl, exitError, false
			}
		}
	}
	return cl, 0, true
}

// options are the dtrace options the simulation acts on.
type options struct {
	quiet        bool
	destructive  bool
	stackframes  int
	ustackframes int
	stackindent  int
	bufsize      int64 // principal buffer per CPU; 0: the realism's default
}

func defaultOptions() *options {
	// dtrace.c sets bufsize to 4m before reading the options: bufsize()
	// falls back to that (or the realism's EnvBufsize).
	return &options{stackframes: 20, ustackframes: 100, stackindent: 14}
}

// set sets an option (-x name=val, -q, -w, #pragma D option). Options the
// simulation does not act on are accepted and ignored.
func (o *options) set(name, val string) error {
	num := func(min int64) (int, error) {
		n, err := parseInt(val)
		if err != nil || n < min || n > 1<<20 {
			return 0, errors.New("Invalid value for specified option")
		}
		return int(n), nil
	}
	var err error
	switch name {
	case "quiet":
		o.quiet = true
	case "destructive":
		o.destructive = true
	case "stackframes":
		o.stackframes, err = num(1)
	case "ustackframes":
		o.ustackframes, err = num(1)
	case "stackindent":
		o.stackindent, err = num(0)
	case "bufsize":
		o.bufsize, err = parseInt(val)
		if err != nil || o.bufsize < 1 {
			err = errors.New("Invalid value for specified option")
		}
	case "flowindent":
		err = errors.New("not supported by the simulated dtrace")
	}
	return err
}

// config is the simulation's settings from the environment.
type config struct {
	host     string
	rate     float64
	seed     uint64
	seeded   bool
	dumpSize int64
	dumpDur  time.Duration
	real     realism // stacks, names and drops as on Windows (realism.go)
}

// lookupEnv finds name in env; the last setting wins, as with exec.Cmd.
func lookupEnv(env []string, name string) (string, bool) {
	val, ok := "", false
	for _, kv := range env {
		k, v, found := strings.Cut(kv, "=")
		if found && (k == name || runtime.GOOS == "windows" && strings.EqualFold(k, name)) {
			val, ok = v, true
		}
	}
	return val, ok
}

func parseConfig(env []string) (config, error) {
	c := config{rate: DefaultRate, dumpSize: DefaultDumpBytes, dumpDur: time.Duration(DefaultDumpSeconds * float64(time.Second))}
	c.host, _ = lookupEnv(env, EnvHost)
	if v, ok := lookupEnv(env, EnvRate); ok && v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || !(r > 0 && r <= MaxRate) {
			return c, fmt.Errorf("%s=%q: want firings per second, more than 0 and at most %g", EnvRate, v, MaxRate)
		}
		c.rate = r
	}
	if v, ok := lookupEnv(env, EnvSeed); ok && v != "" {
		s, err := strconv.ParseInt(v, 0, 64)
		if err != nil {
			return c, fmt.Errorf("%s=%q: want an integer", EnvSeed, v)
		}
		c.seed, c.seeded = uint64(s), true
	}
	if v, ok := lookupEnv(env, EnvDumpBytes); ok && v != "" {
		n, err := parseInt(v)
		if err != nil || n < MinDumpBytes || n > MaxDumpBytes {
			return c, fmt.Errorf("%s=%q: want a size from %d bytes to 1g", EnvDumpBytes, v, MinDumpBytes)
		}
		c.dumpSize = n
	}
	if v, ok := lookupEnv(env, EnvDumpSeconds); ok && v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || !(s >= 0 && s <= MaxDumpSeconds) {
			return c, fmt.Errorf("%s=%q: want seconds from 0 to %g", EnvDumpSeconds, v, MaxDumpSeconds)
		}
		c.dumpDur = time.Duration(s * float64(time.Second))
	}
	if !c.seeded {
		c.seed = rand.Uint64()
	}
	var err error
	c.real, err = parseRealism(env)
	return c, err
}

// strerror words an I/O error the way dtrace's messages do (C's strerror).
func strerror(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "No such file or directory"
	case errors.Is(err, fs.ErrPermission):
		return "Permission denied"
	case errors.Is(err, syscall.EISDIR):
		return "Is a directory"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// run is the simulated dtrace. It follows dtrace's main: options, opening
// the device, compiling, enabling, tracing, and stopping.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) (int, *stats) {
	st := &stats{}
	if crlf {
		stdout, stderr = textMode{stdout}, textMode{stderr}
	}
	fail := func(format string, a ...any) (int, *stats) {
		fmt.Fprintf(stderr, "%s: "+format+"\n", append([]any{pname}, a...)...)
		return exitError, st
	}
	cl, code, ok := parseArgs(args, stderr)
	if !ok {
		return code, st
	}
	cfg, err := parseConfig(env)
	if err != nil {
		return fail("%v", err)
	}

	// dtrace_open: the device is needed unless only compiling (-e).
	var m *machine
	if cfg.host != "" {
		m, err = loadMachine(cfg.host)
		if err != nil {
			fmt.Fprintf(stderr, "%s: simulated machine %s: %v\n", pname, cfg.host, err)
		}
	} else if runtime.GOOS == "windows" {
		// The Windows build standing in for dtrace.exe (local_windows.go).
		m, err = localMachine()
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", pname, err)
		}
	}
	if cl.hasY && !m.builtinDTrace() {
		fmt.Fprintf(stderr, "%s: illegal option -- y\n", pname)
		return usage(stderr), st
	}
	if cl.exec || cl.list {
		if m == nil || m.recovery || !m.driverLoaded || m.hvci || !m.dtraceInstalled() {
			return fail("failed to initialize dtrace: DTrace device not available on system")
		}
	}

	opts := defaultOptions()
	for _, o := range cl.opts {
		if err := opts.set(o[0], o[1]); err != nil {
			return fail("failed to set -x %s: %v", o[0], err)
		}
	}
	comp := &compiler{globals: map[string]*global{}, opts: opts, zdefs: cl.zdefs}
	var progs []*program
	for _, pa := range cl.progs {
		if pa.flag == 's' {
			path := pa.arg
			if m != nil && runtime.GOOS != "windows" && isWindowsPath(path) {
				if hp, err := hostPath(m.dir, path); err == nil {
					path = hp
				}
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return fail("failed to open %s: %s", pa.arg, strerror(err))
			}
			prog, err := comp.compile(string(src), "script", pa.arg, false)
			if err != nil {
				return fail("failed to compile script %s: %s", pa.arg, err.(*compileError).text(false))
			}
			progs = append(progs, prog)
			continue
		}
		name := pa.arg
		if i := strings.IndexAny(name, "{/;"); i >= 0 {
			name = name[:i]
		}
		prog, err := comp.compile(pa.arg, "description", name, true)
		if err != nil {
			return fail("invalid probe specifier %s: %s", pa.arg, err.(*compileError).text(true))
		}
		progs = append(progs, prog)
	}

	var out io.Writer = stdout
	outName := "<stdout>"
	if cl.ofile != "" {
		path := cl.ofile
		if m != nil && runtime.GOOS != "windows" && isWindowsPath(path) {
			if hp, err := hostPath(m.dir, path); err == nil {
				path = hp
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fail("failed to open output file '%s': %s", cl.ofile, strerror(err))
		}
		defer f.Close()
		out, outName = f, cl.ofile
		if crlf {
			out = textMode{f}
		}
	}
	lw := &lineWriter{w: out}

	if cl.list {
		listMode(lw, progs)
		if lw.err != nil {
			return fail("failed to write to %s: %s", outName, strerror(lw.err))
		}
		return exitSuccess, st
	}

	// exec_prog: enable each program.
	total := 0
	for _, prog := range progs {
		if !cl.exec {
			continue
		}
		if usesLKD(prog) && !opts.destructive {
			return fail("failed to enable '%s': Destructive actions not allowed", prog.name)
		}
		epid := 1
		for _, c := range prog.clauses {
			for _, d := range c.descs {
				c.epids = append(c.epids, epid)
				epid += d.matches
				prog.matches += d.matches
			}
		}
		total += prog.matches
		if !opts.quiet {
			plural := "s"
			if prog.matches == 1 {
				plural = ""
			}
			fmt.Fprintf(stderr, "%s: %s '%s' matched %d probe%s\n", pname, prog.desc, prog.name, prog.matches, plural)
		}
	}
	if !cl.exec {
		return exitSuccess, st
	}
	if total == 0 && !cl.zdefs {
		return fail("no probes matched")
	}
	if opts.destructive && !opts.quiet {
		fmt.Fprintf(stderr, "%s: allowing destructive actions\n", pname)
	}

	now := time.Now
	s := &session{
		progs: progs,
		opts:  opts,
		out:   lw,
		err:   stderr,
		world: newWorld(progs, cfg.seed, m.ncpu(), m.bootTime, now, cfg.real),
		dumps: newDumper(m, cfg.dumpSize, cfg.dumpDur, cfg.seed, now),
		stats: st,
	}
	code = s.trace(ctx, cfg.rate)
	s.dumps.wait()
	st.dumps, st.dumpErrs = s.dumps.written()
	st.lkdDropped = s.dumps.droppedCount()
	if m.local {
		// Windows would say so in its event log; the double says it here.
		for _, err := range st.dumpErrs {
			fmt.Fprintf(stderr, "%s: live dump failed: %v\n", pname, err)
		}
	}
	if lw.err != nil {
		return fail("failed to write to %s: %s", outName, strerror(lw.err))
	}
	return code, st
}

// usesLKD reports whether a program has an lkd() action, which needs
// destructive mode to be enabled.
func usesLKD(prog *program) bool {
	var walk func(ss []stmt) bool
	walk = func(ss []stmt) bool {
		for _, s := range ss {
			switch s := s.(type) {
			case *actionStmt:
				if s.name == "lkd" {
					return true
				}
			case *ifStmt:
				if walk(s.then) || walk(s.otherwise) {
					return true
				}
			}
		}
		return false
	}
	for _, c := range prog.clauses {
		if walk(c.body) {
			return true
		}
	}
	return false
}

// listMode is dtrace -l: the probes each description matches, or all.
func listMode(lw *lineWriter, progs []*program) {
	lw.printf("%5s %10s %17s %33s %s\n", "ID", "PROVIDER", "MODULE", "FUNCTION", "NAME")
	print := func(ps []probe) {
		for _, p := range ps {
			lw.printf("%5d %10s %17s %33s %s\n", probeID(p), p.prov, p.mod, p.fn, p.name)
		}
	}
	if len(progs) == 0 {
		print(listProbes(nil))
		return
	}
	for _, prog := range progs {
		for _, c := range prog.clauses {
			for i := range c.descs {
				print(listProbes(&c.descs[i]))
			}
		}
	}
}

// crlf makes output lines end in CRLF, as dtrace.exe's C runtime writes
// stdout, stderr and -o files in text mode on Windows.
var crlf = runtime.GOOS == "windows"

// textMode translates line endings the way a C runtime in text mode does:
// every \n is written as \r\n.
type textMode struct{ w io.Writer }

func (t textMode) Write(b []byte) (int, error) {
	if _, err := t.w.Write(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(b), nil
}

// lineWriter writes dtrace's output one line per write, so that a reader
// of a pipe sees each line as soon as it is complete; the first error
// sticks.
type lineWriter struct {
	w   io.Writer
	err error
}

func (l *lineWriter) write(b []byte) {
	for len(b) > 0 && l.err == nil {
		n := len(b)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			n = i + 1
		}
		_, l.err = l.w.Write(b[:n])
		b = b[n:]
	}
}

func (l *lineWriter) printf(format string, a ...any) { l.write([]byte(fmt.Sprintf(format, a...))) }

// session is one tracing run: the enabled programs, the consumer's state
// and the simulated kernel's.
type session struct {
	progs   []*program
	opts    *options
	out     *lineWriter
	err     io.Writer
	world   *world
	dumps   *dumper
	stats   *stats
	heading bool  // the CPU/ID/FUNCTION:NAME header was printed
	exited  bool  // exit() was recorded: the state is draining
	status  int64 // exit()'s status
	drops   dropState
}

// trace fires BEGIN, then syscall probes at rate until exit() or ctx
// ends, then END, printing as dtrace's consumer loop does. It returns the
// exit status.
func (s *session) trace(ctx context.Context, rate float64) int {
	s.fire(s.world.dtraceFiring("BEGIN"))
	interrupted := false
	if !s.exited && len(s.world.probes) > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
	loop:
		for !s.exited && s.out.err == nil {
			select {
			case <-ctx.Done():
				interrupted = true
				break loop
			case <-t.C:
				s.stats.firings++
				s.fire(s.world.next())
			}
		}
	} else if !s.exited {
		<-ctx.Done()
		interrupted = true
	}
	if interrupted {
		// dtrace prints a newline on the first interrupt, even when quiet.
		s.out.write([]byte("\n"))
	}
	s.exited = false // END fires while the state stops
	s.fire(s.world.dtraceFiring("END"))
	s.out.write([]byte("\n")) // dtrace's last oprintf
	return int(int32(uint32(s.status)))
}

// fire runs the clauses that match the firing's probe, in program order,
// and prints their data; lkd() dumps start at the end of the probe.
func (s *session) fire(f *firing) {
	var lkd []int64
	// The probe's output reaches the consumer after the probe, and so
	// after the dumps it asked for have started.
	var out bytes.Buffer
	defer func() { s.emit(f, out.Bytes()) }()
	matched, passed := false, false
	for _, prog := range s.progs {
		for _, c := range prog.clauses {
			if s.exited {
				break // draining: no more clauses run
			}
			di := -1
			for i, d := range c.descs {
				if d.matchesProbe(f.probe) {
					di = i
					break
				}
			}
			if di < 0 {
				continue
			}
			matched = true
			r := &clauseRun{s: s, f: f}
			if c.pred != nil {
				v, flt := r.eval(c.pred, "predicate")
				if flt != nil {
					s.fault(c, di, f, flt)
					continue
				}
				if v.i == 0 {
					continue
				}
			}
			passed = true
			if flt := r.exec(c.body); flt != nil {
				s.fault(c, di, f, flt)
				continue
			}
			if len(c.body) == 0 {
				r.recorded = true // the default action
			}
			if r.recorded {
				s.stats.recorded++
				if !s.opts.quiet {
					if !s.heading {
						fmt.Fprintf(&out, "%3s %6s %32s\n", "CPU", "ID", "FUNCTION:NAME")
						s.heading = true
					}
					fmt.Fprintf(&out, "%3d %6d %32s ", f.cpu, probeID(f.probe), f.probe.fn+":"+f.probe.name)
				}
				out.Write(r.buf.Bytes())
				if !s.opts.quiet {
					out.WriteString("\n")
				}
			}
			lkd = append(lkd, r.lkd...)
			if r.exit != nil {
				s.exited, s.status = true, *r.exit
			}
		}
	}
	if matched && !passed && f.probe.prov == "syscall" {
		s.stats.filtered++
	}
	if f.probe.prov == "dtrace" && len(lkd) > 0 {
		// DTrace on Windows runs lkd() only when the probe fired at
		// PASSIVE_LEVEL; BEGIN, END and ERROR fire in dtrace's consumer at
		// a raised IRQL, so the request does nothing. Whether dtrace says
		// so is not known: the simulation, harsher, says nothing.
		s.stats.lkdIgnored += len(lkd)
		return
	}
	for _, mode := range lkd {
		s.dumps.request(mode)
	}
}

// fault reports a runtime error the way dtrace's error handler does.
func (s *session) fault(c *clause, di int, f *firing, flt *fault) {
	fmt.Fprintf(s.err, "%s: error on enabled probe ID %d (ID %d: %s): %s in %s\n",
		pname, c.epids[di], probeID(f.probe), f.probe, flt.what, flt.where)
}
