package dtracesim

import (
	"fmt"
	"hash/fnv"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/livedump/livedump/internal/syscalls"
)

// probeDesc is one probe description of a clause, with empty fields
// matching anything, as in D.
type probeDesc struct {
	prov, mod, fn, name string
	line                int
	matches             int // probes it matches on the simulated machine
}

func (d probeDesc) String() string { return d.prov + ":" + d.mod + ":" + d.fn + ":" + d.name }

// probe is one probe of the simulated machine.
type probe struct {
	prov, mod, fn, name string
}

// syscallProbes is the number of functions the syscall provider of DTrace
// for Windows publishes (each with an entry and a return probe): `dtrace
// -s` on `syscall:::return` reports "matched 1881 probes" in Microsoft's
// documentation.
const syscallProbes = 1881

// syscallNumbers are system service numbers of the x64 Windows 10/11
// kernel (the first 0x56 are stable across releases), used to give probes
// stable IDs, and the names a glob on the function field can match. The
// other system services of knownSyscalls exist too, with an ID derived from
// their name.
var syscallNumbers = map[string]int{
	"NtAccessCheck": 0x00, "NtWorkerFactoryWorkerReady": 0x01, "NtAcceptConnectPort": 0x02,
	"NtMapUserPhysicalPagesScatter": 0x03, "NtWaitForSingleObject": 0x04, "NtCallbackReturn": 0x05,
	"NtReadFile": 0x06, "NtDeviceIoControlFile": 0x07, "NtWriteFile": 0x08, "NtRemoveIoCompletion": 0x09,
	"NtReleaseSemaphore": 0x0a, "NtReplyWaitReceivePort": 0x0b, "NtReplyPort": 0x0c,
	"NtSetInformationThread": 0x0d, "NtSetEvent": 0x0e, "NtClose": 0x0f, "NtQueryObject": 0x10,
	"NtQueryInformationFile": 0x11, "NtOpenKey": 0x12, "NtEnumerateValueKey": 0x13, "NtFindAtom": 0x14,
	"NtQueryDefaultLocale": 0x15, "NtQueryKey": 0x16, "NtQueryValueKey": 0x17,
	"NtAllocateVirtualMemory": 0x18, "NtQueryInformationProcess": 0x19,
	"NtWaitForMultipleObjects32": 0x1a, "NtWriteFileGather": 0x1b, "NtSetInformationProcess": 0x1c,
	"NtCreateKey": 0x1d, "NtFreeVirtualMemory": 0x1e, "NtImpersonateClientOfPort": 0x1f,
	"NtReleaseMutant": 0x20, "NtQueryInformationToken": 0x21, "NtRequestWaitReplyPort": 0x22,
	"NtQueryVirtualMemory": 0x23, "NtOpenThreadToken": 0x24, "NtQueryInformationThread": 0x25,
	"NtOpenProcess": 0x26, "NtSetInformationFile": 0x27, "NtMapViewOfSection": 0x28,
	"NtAccessCheckAndAuditAlarm": 0x29, "NtUnmapViewOfSection": 0x2a, "NtReplyWaitReceivePortEx": 0x2b,
	"NtTerminateProcess": 0x2c, "NtSetEventBoostPriority": 0x2d, "NtReadFileScatter": 0x2e,
	"NtOpenThreadTokenEx": 0x2f, "NtOpenProcessTokenEx": 0x30, "NtQueryPerformanceCounter": 0x31,
	"NtEnumerateKey": 0x32, "NtOpenFile": 0x33, "NtDelayExecution": 0x34, "NtQueryDirectoryFile": 0x35,
	"NtQuerySystemInformation": 0x36, "NtOpenSection": 0x37, "NtQueryTimer": 0x38,
	"NtFsControlFile": 0x39, "NtWriteVirtualMemory": 0x3a, "NtCloseObjectAuditAlarm": 0x3b,
	"NtDuplicateObject": 0x3c, "NtQueryAttributesFile": 0x3d, "NtClearEvent": 0x3e,
	"NtReadVirtualMemory": 0x3f, "NtOpenEvent": 0x40, "NtAdjustPrivilegesToken": 0x41,
	"NtDuplicateToken": 0x42, "NtContinue": 0x43, "NtQueryDefaultUILanguage": 0x44,
	"NtQueueApcThread": 0x45, "NtYieldExecution": 0x46, "NtAddAtom": 0x47, "NtCreateEvent": 0x48,
	"NtQueryVolumeInformationFile": 0x49, "NtCreateSection": 0x4a, "NtFlushBuffersFile": 0x4b,
	"NtApphelpCacheControl": 0x4c, "NtCreateProcessEx": 0x4d, "NtCreateThread": 0x4e,
	"NtIsProcessInJob": 0x4f, "NtProtectVirtualMemory": 0x50, "NtQuerySection": 0x51,
	"NtResumeThread": 0x52, "NtTerminateThread": 0x53, "NtReadRequestData": 0x54, "NtCreateFile": 0x55,
	"NtTraceEvent": 0x5e, "NtAlpcConnectPort": 0x7a, "NtAlpcSendWaitReceivePort": 0x84,
	"NtCreateUserProcess": 0xc8, "NtOpenProcessToken": 0x128, "NtQueryFullAttributesFile": 0x146,
	"NtQuerySecurityObject": 0x15b, "NtSetValueKey": 0x60, "NtDeleteFile": 0xd8,
}

// busySyscalls are the syscalls a wildcard (syscall:::return) sees most;
// firings of such a clause are drawn from them.
var busySyscalls = []string{
	"NtCreateFile", "NtOpenFile", "NtQueryInformationFile", "NtDeviceIoControlFile",
	"NtAlpcSendWaitReceivePort", "NtReadFile", "NtWriteFile", "NtQueryAttributesFile",
	"NtOpenKey", "NtQueryValueKey", "NtFsControlFile", "NtQueryDirectoryFile",
}

var ntName = regexp.MustCompile(`^Nt[A-Za-z0-9]{1,63}$`)

// knownSyscalls are the functions the syscall provider has probes for: the
// system services ntdll exports (internal/syscalls, generated from
// mingw-w64, the table the controller validates capture specs against)
// and the numbered ones above. Any other name, win32k's
// NtUser*/NtGdi* first of all (DTrace-on-Windows issue #23), matches no
// probe, and a script naming it fails to compile with "does not match any
// probes", as on Windows.
var knownSyscalls = func() map[string]bool {
	ntdll := syscalls.Names()
	m := make(map[string]bool, len(ntdll)+len(syscallNumbers))
	for _, n := range ntdll {
		m[n] = true
	}
	for n := range syscallNumbers {
		m[n] = true
	}
	return m
}()

// isSyscall reports whether name is a function the syscall provider has
// probes for.
func isSyscall(name string) bool { return ntName.MatchString(name) && knownSyscalls[name] }

var dtraceProbes = []string{"BEGIN", "END", "ERROR"}

// fieldMatch matches one field of a probe description, D style: an empty
// pattern matches anything, otherwise shell globbing.
func fieldMatch(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

func hasGlob(s string) bool { return strings.ContainsAny(s, "*?[") }

// parseDesc splits a probe description (right-aligned when shorter than
// four fields: "BEGIN" is the name, "a:b" function and name) and counts
// the probes it matches.
func (c *compiler) parseDesc(text string, line int) probeDesc {
	parts := strings.Split(text, ":")
	if len(parts) > 4 {
		errf(line, "probe description", "invalid probe description \"%s\": Overspecified probe description", text)
	}
	var f [4]string
	copy(f[4-len(parts):], parts)
	d := probeDesc{prov: f[0], mod: f[1], fn: f[2], name: f[3], line: line}
	d.matches = countMatches(d)
	if d.matches == 0 && !c.zdefs {
		errf(line, "probe description", "probe description %s does not match any probes", d)
	}
	return d
}

// countMatches counts the probes of the simulated machine that d matches.
// Only the dtrace and syscall providers exist: fbt needs VBS, and pid, etw
// and profile are not simulated.
func countMatches(d probeDesc) int {
	if !fieldMatch(d.mod, "") {
		return 0 // both providers have an empty module
	}
	n := 0
	if fieldMatch(d.prov, "dtrace") && fieldMatch(d.fn, "") {
		for _, name := range dtraceProbes {
			if fieldMatch(d.name, name) {
				n++
			}
		}
	}
	if fieldMatch(d.prov, "syscall") {
		names := 0
		for _, name := range []string{"entry", "return"} {
			if fieldMatch(d.name, name) {
				names++
			}
		}
		n += names * len(syscallFuncs(d.fn, false))
		if d.fn == "" || d.fn == "*" {
			n += names * (syscallProbes - len(syscallFuncs(d.fn, false)))
		}
	}
	return n
}

// syscallFuncs lists the syscalls a function pattern names: itself when it
// is a plain Nt* name, the known ones it matches when it is a glob. With
// busy, a pattern matching every function gives busySyscalls instead, the
// syscalls that firings are drawn from.
func syscallFuncs(pattern string, busy bool) []string {
	switch {
	case (pattern == "" || pattern == "*") && busy:
		return busySyscalls
	case hasGlob(pattern) || pattern == "":
		var out []string
		for name := range syscallNumbers {
			if fieldMatch(pattern, name) {
				out = append(out, name)
			}
		}
		sort.Strings(out)
		return out
	case isSyscall(pattern):
		return []string{pattern}
	}
	return nil
}

// probeID gives each probe the stable ID that dtrace -l and the CPU/ID
// columns show: 1-3 for BEGIN, END and ERROR, then an entry/return pair
// per syscall in system service number order.
func probeID(p probe) int {
	if p.prov == "dtrace" {
		for i, n := range dtraceProbes {
			if n == p.name {
				return i + 1
			}
		}
		return 0
	}
	num, ok := syscallNumbers[p.fn]
	if !ok {
		h := fnv.New32a()
		h.Write([]byte(p.fn))
		num = 0x100 + int(h.Sum32()%(syscallProbes-0x100))
	}
	id := 4 + 2*num
	if p.name == "return" {
		id++
	}
	return id
}

// matches reports whether d matches the probe p.
func (d probeDesc) matchesProbe(p probe) bool {
	return fieldMatch(d.prov, p.prov) && fieldMatch(d.mod, p.mod) && fieldMatch(d.fn, p.fn) && fieldMatch(d.name, p.name)
}

// firingProbes lists the syscall probes that the programs' clauses enable
// and that simulated firings are drawn from.
func firingProbes(progs []*program) []probe {
	seen := map[probe]bool{}
	var out []probe
	for _, prog := range progs {
		for _, c := range prog.clauses {
			for _, d := range c.descs {
				if !fieldMatch(d.prov, "syscall") || !fieldMatch(d.mod, "") {
					continue
				}
				for _, name := range []string{"entry", "return"} {
					if !fieldMatch(d.name, name) {
						continue
					}
					for _, fn := range syscallFuncs(d.fn, true) {
						p := probe{prov: "syscall", fn: fn, name: name}
						if !seen[p] {
							seen[p] = true
							out = append(out, p)
						}
					}
				}
			}
		}
	}
	return out
}

// listProbes is what dtrace -l prints for a description (every known probe
// when d is nil).
func listProbes(d *probeDesc) []probe {
	var all []probe
	for _, n := range dtraceProbes {
		all = append(all, probe{prov: "dtrace", name: n})
	}
	names := make([]string, 0, len(syscallNumbers))
	for n := range syscallNumbers {
		names = append(names, n)
	}
	if d != nil && !hasGlob(d.fn) && isSyscall(d.fn) {
		if _, ok := syscallNumbers[d.fn]; !ok {
			names = append(names, d.fn)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		return probeID(probe{prov: "syscall", fn: names[i]}) < probeID(probe{prov: "syscall", fn: names[j]})
	})
	for _, n := range names {
		all = append(all, probe{prov: "syscall", fn: n, name: "entry"}, probe{prov: "syscall", fn: n, name: "return"})
	}
	if d == nil {
		return all
	}
	var out []probe
	for _, p := range all {
		if d.matchesProbe(p) {
			out = append(out, p)
		}
	}
	return out
}

func (p probe) String() string { return fmt.Sprintf("%s:%s:%s:%s", p.prov, p.mod, p.fn, p.name) }
