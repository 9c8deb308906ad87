package dtracesim

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// execNameLen is the length of the kernel's ImageFileName: execname is the
// image name truncated to 14 characters.
const execNameLen = 14

// process is a simulated Windows process that makes syscalls.
type process struct {
	name     string // image name, e.g. ms-teams.exe
	execname string // as the kernel reports it
	module   string // its module name in stacks, e.g. ms-teams
	pid      int32
	tids     []int32
	base     uint64 // image base, for frames without symbols
	wow64    bool   // a 32-bit process: DTrace never traces it
	real     bool   // named by pid in the script: a running host process (pid.go)
}

// background are the processes of a Windows 11 desktop that make syscalls
// whatever a capture is looking for; firings that should not match the
// predicate come from them.
var background = []string{
	"svchost.exe", "explorer.exe", "MsMpEng.exe", "SearchIndexer.exe", "msedge.exe",
	"RuntimeBroker.exe", "OneDrive.exe", "lsass.exe", "csrss.exe", "dwm.exe",
	"WmiPrvSE.exe", "spoolsv.exe", "café.exe", "AcroRd32.exe", "steam.exe",
}

// launchedAs is the image name of the process a predicate names: the
// kernel keeps the case an image was launched with, whatever case a script
// compares with. A name that is a known image (or its 14-character
// execname) in another case is the known image, so that a case-sensitive
// comparison in the wrong case never matches, as on Windows.
func launchedAs(name string) string {
	for _, b := range background {
		if strings.EqualFold(name, b) {
			return b
		}
		if len(b) > execNameLen && strings.EqualFold(name, b[:execNameLen]) {
			return b
		}
	}
	return name
}

// hash64 derives stable values from names, so that a process keeps its pid
// and a stack signature its frames for the whole run.
func hash64(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// newProcess makes the process named name with stable ids: Windows pids
// and tids are multiples of 4; pids here have four digits. Its execname is
// in the ANSI code page when the realism says so.
func newProcess(name string, real realism) *process {
	h := hash64Uint(hash64("pid", name), 4)
	p := &process{name: name, execname: real.text(name), pid: int32(1000 + 4*(h%2250)), wow64: real.wow64[strings.ToLower(name)]}
	if len(p.execname) > execNameLen {
		p.execname = p.execname[:execNameLen]
	}
	mod := name // UTF-8: printed in the code page with the stack
	if len(mod) > execNameLen {
		mod = strings.ToValidUTF8(mod[:execNameLen], "")
	}
	mod = strings.TrimRight(mod, ".")
	if i := strings.LastIndexByte(mod, '.'); i > 0 && strings.EqualFold(mod[i:], ".exe") {
		mod = mod[:i]
	}
	p.module = mod
	for i := 0; i < 3; i++ {
		p.tids = append(p.tids, int32(1000+4*(hash64Uint(hash64("tid", name, fmt.Sprint(i)), 5)%22000)))
	}
	p.base = 0x7ff600000000 | (hash64("base", name)&0xffff)<<16
	return p
}

// statusesBySyscall are the NTSTATUS values each syscall commonly returns,
// success weighted heavily, for firings that should not match a status
// comparison.
var statusesBySyscall = map[string][]uint32{
	"NtCreateFile":              {0, 0, 0, 0xC0000034, 0xC000003A, 0xC0000022, 0xC0000043, 0xC0000035},
	"NtOpenFile":                {0, 0, 0, 0xC0000034, 0xC000003A, 0xC0000022, 0xC0000043},
	"NtQueryInformationFile":    {0, 0, 0, 0xC0000004, 0x80000005, 0xC0000003},
	"NtDeviceIoControlFile":     {0, 0, 0x103, 0xC0000010, 0x80000005, 0xC0000023, 0xC00000BB},
	"NtAlpcSendWaitReceivePort": {0, 0, 0, 0x102, 0xC0000001, 0xC0000701},
	"NtReadFile":                {0, 0, 0, 0x103, 0xC0000011, 0x80000005},
	"NtWriteFile":               {0, 0, 0, 0x103, 0xC000007F},
	"NtQueryAttributesFile":     {0, 0, 0xC0000034, 0xC000003A},
	"NtOpenKey":                 {0, 0, 0xC0000034, 0xC0000022},
	"NtQueryValueKey":           {0, 0, 0xC0000034, 0x80000005, 0xC0000023},
	"NtFsControlFile":           {0, 0, 0x103, 0xC0000010, 0xC00000BB},
	"NtQueryDirectoryFile":      {0, 0, 0, 0x80000006, 0xC000000F},
}

var defaultStatuses = []uint32{0, 0, 0, 0xC0000022, 0xC0000008, 0xC000000D}

// firing is one probe firing: a syscall entry or return in some thread.
type firing struct {
	probe probe
	proc  *process
	tid   int32
	cpu   int
	arg0  uint64
	wall  int64  // walltimestamp, ns since the Unix epoch
	ts    uint64 // timestamp, ns since boot
	sig   int    // stack signature: which of the syscall's call paths
	// ustack is how much of the user stack dtrace prints (realism.go).
	ustack ustackKind
}

// world generates firings: processes and statuses that match the
// script's predicates most of the time, and some that do not, so that the
// predicates are really evaluated.
type world struct {
	rng      *rand.Rand
	probes   []probe
	procs    []*process // candidates named by the predicates
	others   []*process // background processes not among the candidates
	statuses []uint32   // candidates named by the predicates
	ncpu     int
	boot     time.Time
	now      func() time.Time
	self     *process // dtrace.exe itself, for BEGIN and END
	real     realism
}

// newWorld builds the generator for the compiled programs.
// 32-bit (WOW64) processes are left out: DTrace traces 64-bit processes
// only, so they never fire.
func newWorld(progs []*program, seed uint64, ncpu int, boot time.Time, now func() time.Time, real realism) *world {
	w := &world{
		rng:    rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		probes: firingProbes(progs),
		ncpu:   max(ncpu, 1),
		boot:   boot,
		now:    now,
		self:   newProcess("dtrace.exe", real),
		real:   real,
	}
	names, statuses, pids := candidates(progs)
	for _, pid := range pids {
		w.procs = append(w.procs, pidProcess(pid, real))
	}
	execnames := map[string]bool{}
	for _, n := range names {
		p := newProcess(launchedAs(n), real)
		if execnames[strings.ToLower(p.execname)] {
			continue // "searchindexer." and "SearchIndexer." are one process
		}
		execnames[strings.ToLower(p.execname)] = true
		execnames[strings.ToLower(p.name)] = true
		if !p.wow64 {
			w.procs = append(w.procs, p)
		}
	}
	for _, n := range background {
		p := newProcess(n, real)
		if !execnames[strings.ToLower(p.execname)] && !execnames[strings.ToLower(p.name)] && !p.wow64 {
			w.others = append(w.others, p)
		}
	}
	w.statuses = statuses
	return w
}

// candidates collects the process names compared with execname, the
// values compared with arg0 (cast or not) and the process IDs compared
// with pid anywhere in the programs.
func candidates(progs []*program) (names []string, statuses []uint32, pids []int32) {
	seenN, seenS, seenP := map[string]bool{}, map[uint32]bool{}, map[int32]bool{}
	var walk func(e expr)
	walk = func(e expr) {
		switch e := e.(type) {
		case *binaryExpr:
			if e.op == "==" {
				for _, pair := range [][2]expr{{e.l, e.r}, {e.r, e.l}} {
					if isExecname(pair[0]) {
						if s, ok := pair[1].(*strLit); ok && !seenN[s.s] {
							seenN[s.s] = true
							names = append(names, s.s)
						}
					}
					if b, ok := pair[0].(*builtinRef); ok && b.name == "pid" {
						if l, ok := pair[1].(*intLit); ok && !seenP[int32(l.v)] {
							seenP[int32(l.v)] = true
							pids = append(pids, int32(l.v))
						}
					}
					if isArg0(pair[0]) {
						if l, ok := pair[1].(*intLit); ok && !seenS[uint32(l.v)] {
							seenS[uint32(l.v)] = true
							statuses = append(statuses, uint32(l.v))
						}
					}
				}
			}
			walk(e.l)
			walk(e.r)
		case *unaryExpr:
			walk(e.e)
		case *castExpr:
			walk(e.e)
		case *caseCall:
			walk(e.arg)
		case *condExpr:
			walk(e.c)
			walk(e.a)
			walk(e.b)
		}
	}
	var walkStmts func(ss []stmt)
	walkStmts = func(ss []stmt) {
		for _, s := range ss {
			if s, ok := s.(*ifStmt); ok {
				walk(s.cond)
				walkStmts(s.then)
				walkStmts(s.otherwise)
			}
		}
	}
	for _, prog := range progs {
		for _, c := range prog.clauses {
			if c.pred != nil {
				walk(c.pred)
			}
			walkStmts(c.body)
		}
	}
	return names, statuses, pids
}

// isExecname reports whether e is execname, or execname through tolower( )
// or toupper( ).
func isExecname(e expr) bool {
	for {
		switch x := e.(type) {
		case *caseCall:
			e = x.arg
		case *builtinRef:
			return x.name == "execname"
		default:
			return false
		}
	}
}

func isArg0(e expr) bool {
	for {
		switch x := e.(type) {
		case *castExpr:
			e = x.e
		case *builtinRef:
			return x.name == "arg0"
		default:
			return false
		}
	}
}

// next makes the next firing. About 60% use a candidate process with a
// candidate status; the rest change one or both to values the predicate
// does not name.
func (w *world) next() *firing {
	p := w.probes[w.rng.IntN(len(w.probes))]
	matchProc, matchStatus := true, true
	switch r := w.rng.Float64(); {
	case r < 0.60:
	case r < 0.75:
		matchProc = false
	case r < 0.90:
		matchStatus = false
	default:
		matchProc, matchStatus = false, false
	}
	var proc *process
	switch {
	case matchProc && len(w.procs) > 0:
		proc = w.procs[w.rng.IntN(len(w.procs))]
	case len(w.others) > 0:
		proc = w.others[w.rng.IntN(len(w.others))]
	case len(w.procs) > 0:
		proc = w.procs[w.rng.IntN(len(w.procs))]
	default:
		proc = w.self // nothing else runs (every process is 32-bit)
	}
	if !proc.alive() {
		// A process named by pid that is not running makes no syscalls.
		proc = w.others[w.rng.IntN(len(w.others))]
	}
	f := &firing{
		probe: p,
		proc:  proc,
		tid:   proc.tids[w.rng.IntN(len(proc.tids))],
		cpu:   w.rng.IntN(w.ncpu),
		sig:   w.signature(p.fn),
	}
	f.ustack = w.pickUstack()
	if p.name == "entry" {
		// The first argument of an Nt call: a handle or a pointer.
		f.arg0 = 0x000000d400000000 | w.rng.Uint64()&0xfffffff8
	} else {
		f.arg0 = uint64(w.status(p.fn, matchStatus))
	}
	w.stamp(f)
	return f
}

// status picks the syscall's return value.
func (w *world) status(fn string, match bool) uint32 {
	if match && len(w.statuses) > 0 {
		return w.statuses[w.rng.IntN(len(w.statuses))]
	}
	common := statusesBySyscall[fn]
	if common == nil {
		common = defaultStatuses
	}
	var pool []uint32
	for _, s := range common {
		if !slices.Contains(w.statuses, s) {
			pool = append(pool, s)
		}
	}
	if len(pool) == 0 {
		return 0
	}
	return pool[w.rng.IntN(len(pool))]
}

// signature picks one of the syscall's call paths, the first most often,
// so that stack buckets have a dominant signature and a tail.
func (w *world) signature(fn string) int {
	n := len(stackVariants(fn))
	weights := []float64{0.55, 0.25, 0.12, 0.08}[:n]
	total := 0.0
	for _, x := range weights {
		total += x
	}
	r := w.rng.Float64() * total
	for i, x := range weights {
		if r < x {
			return i
		}
		r -= x
	}
	return n - 1
}

// stamp sets the firing's clocks.
func (w *world) stamp(f *firing) {
	now := w.now()
	f.wall = now.UnixNano()
	if d := now.Sub(w.boot); d > 0 {
		f.ts = uint64(d)
	}
}

// dtraceFiring is the firing of a dtrace provider probe (BEGIN, END) in
// dtrace.exe itself.
func (w *world) dtraceFiring(name string) *firing {
	f := &firing{probe: probe{prov: "dtrace", name: name}, proc: w.self, tid: w.self.tids[0]}
	w.stamp(f)
	return f
}
