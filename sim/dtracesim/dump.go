package dtracesim

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/sim"
)

// Live kernel dumps, as lkd() has Windows write them:
//
//   - full dumps (lkd modes 0, 4 and 5) go to the root of the
//     LiveKernelReports path, minidumps (mode 2) to its DTRACE subfolder;
//     Windows creates the folders with the first dump;
//   - the name is DTRACE-YYYYMMDD-HHMM.dmp in the machine's local time; a
//     second dump in the same minute is DTRACE-YYYYMMDD-HHMM-2.dmp, then
//     -3 and so on (Windows' own suffix scheme is not documented; the agent
//     must only not assume one dump per minute);
//   - the file starts with a 64-bit kernel dump header ("PAGEDU64", bug
//     check 0xE2 MANUALLY_INITIATED_CRASH) and grows in chunks until it
//     reaches its size; it is held open, without sharing on Windows, until
//     complete, so "size stable and opens without sharing" means complete.
//
// The kernel writes a live dump after the probe that asked for it, and one
// at a time: an lkd() made while a dump is still being written is dropped
// (WINDOWS-NOTES "lkd() ... A second lkd() while one is in progress is
// dropped"). Whether dtrace prints anything then is not documented, so the
// simulation prints nothing: the harsher case, where only the missing file
// tells. The simulation writes the dump in a goroutine of this process, and
// the process does not exit before it is complete (a real dtrace.exe may
// exit first: the kernel finishes the dump); a simulated dtrace killed
// mid-dump leaves a file shorter than its header declares, as power loss
// does on a real machine.

// dumpComponent is the component lkd() reports.
const dumpComponent = "DTRACE"

// dumpHeaderSize is the size of a 64-bit kernel dump header.
const dumpHeaderSize = 0x2000

// dumpChunk is how often a growing dump file grows.
const dumpChunk = 100 * time.Millisecond

// dumper writes the live dumps that lkd() asks for, one at a time.
type dumper struct {
	m       *machine
	size    int64
	dur     time.Duration
	seed    uint64
	now     func() time.Time
	mu      sync.Mutex
	busy    bool // a dump is being written
	dropped int  // lkd() calls dropped because one was
	wg      sync.WaitGroup
	files   []string // dumps written, host paths
	errs    []error
}

func newDumper(m *machine, size int64, dur time.Duration, seed uint64, now func() time.Time) *dumper {
	return &dumper{m: m, size: size, dur: dur, seed: seed, now: now}
}

// request starts a dump of the given lkd mode, unless one is being written:
// then the request is dropped, as the kernel drops it.
func (d *dumper) request(mode int64) {
	d.mu.Lock()
	if d.busy {
		d.dropped++
		d.mu.Unlock()
		return
	}
	d.busy = true
	d.mu.Unlock()
	var k *kernelDump
	if d.m.local {
		// The kernel starts writing at the end of the probe, before
		// dtrace.exe has consumed its output (kernel.go).
		k = d.startKernel(mode)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		var path string
		var err error
		if k != nil {
			path, err = k.wait()
		} else {
			path, err = d.write(mode)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.busy = false
		if err != nil {
			d.errs = append(d.errs, err)
		} else {
			d.files = append(d.files, path)
		}
	}()
}

// wait returns once the dump being written, if any, is complete.
func (d *dumper) wait() { d.wg.Wait() }

// droppedCount is how many lkd() calls were dropped.
func (d *dumper) droppedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped
}

// written returns the dumps written so far (host paths) and the errors of
// those that could not be.
func (d *dumper) written() ([]string, []error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.files...), append([]error(nil), d.errs...)
}

// write writes one dump and returns its host path.
func (d *dumper) write(mode int64) (string, error) {
	// Read the registry now, as Windows does when it writes the dump.
	m := d.m
	if fresh, err := m.reload(); err == nil {
		m = fresh
	}
	win := m.reportsDir()
	if mode == 2 {
		win += `\` + dumpComponent
	}
	dir, err := m.path(win)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	start := d.now()
	base := fmt.Sprintf("%s-%s", dumpComponent, start.Format("20060102-1504"))
	var f *os.File
	var path string
	for n := 1; ; n++ {
		name := base + ".dmp"
		if n > 1 {
			name = fmt.Sprintf("%s-%d.dmp", base, n)
		}
		path = filepath.Join(dir, name)
		f, err = createExclusive(path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || n > 999 {
			return "", err
		}
	}
	defer f.Close()
	m.logEvent(host.EventDumpWriteStart, d.now(), 0, 0)

	content := newDumpContent(d.seed^uint64(start.UnixNano()), d.size, m.build(), m.ncpu(), mode, start)
	steps := int64(1)
	if d.dur > 0 {
		steps = max(1, int64(d.dur/dumpChunk))
	}
	written := int64(0)
	for i := int64(1); i <= steps; i++ {
		target := d.size * i / steps
		if err := content.writeTo(f, written, target); err != nil {
			// Windows reports a failed write in its event log: 202 when
			// the disk is full, else a write-ended event with the error.
			if errors.Is(err, syscall.ENOSPC) {
				m.logEvent(host.EventDumpDiskFull, d.now(), 0xC000007F, 0)
			} else {
				m.logEvent(host.EventDumpWriteEnd, d.now(), 0xC0000001, uint64(written))
			}
			return "", err
		}
		written = target
		if i < steps {
			time.Sleep(d.dur / time.Duration(steps))
		}
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	m.logEvent(host.EventDumpWriteEnd, d.now(), 0, uint64(d.size))
	return path, nil
}

// logEvent appends a Kernel-LiveDump event to the simulated machine's event
// log, after the fact it reports, as Windows does. The local machine has
// none the simulation could write to.
func (m *machine) logEvent(id int, t time.Time, status uint32, total uint64) {
	if m.local {
		return
	}
	logEventTo(m.dir, id, t, status, total)
}

func logEventTo(stateDir string, id int, t time.Time, status uint32, total uint64) {
	b, err := json.Marshal(sim.LiveDumpEvent{ID: id, Time: t.UTC(), NTStatus: status, TotalBytes: total})
	if err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(stateDir, sim.EventsFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}

// dumpContent produces a dump's bytes: the header, then pages that are
// either zero or pseudo-random (a real dump compresses about that well).
type dumpContent struct {
	header []byte
	seed   uint64
}

func newDumpContent(seed uint64, size int64, build uint32, ncpu int, mode int64, t time.Time) *dumpContent {
	// DUMP_HEADER64 (offsets as in rizin's dmp_specs.h, see
	// internal/kdump): the header is written first, declaring the size of
	// the whole file, so a file cut short is recognisably incomplete.
	h := make([]byte, dumpHeaderSize)
	le := binary.LittleEndian
	copy(h[0:], "PAGEDU64")                    // Signature, ValidDump
	le.PutUint32(h[0x08:], 0x0f)               // MajorVersion: free build
	le.PutUint32(h[0x0c:], build)              // MinorVersion: the build number
	le.PutUint64(h[0x10:], 0x1ad002)           // DirectoryTableBase
	le.PutUint64(h[0x18:], 0xfffff80000000000) // PfnDataBase
	le.PutUint64(h[0x20:], 0xfffff8057c42a2d0) // PsLoadedModuleList
	le.PutUint64(h[0x28:], 0xfffff8057c41f4c0) // PsActiveProcessHead
	le.PutUint32(h[0x30:], 0x8664)             // MachineImageType: AMD64
	le.PutUint32(h[0x34:], uint32(ncpu))       // NumberProcessors
	le.PutUint32(h[0x38:], 0xe2)               // BugCheckCode: MANUALLY_INITIATED_CRASH
	le.PutUint64(h[0x40:], uint64(mode))       // BugCheckParameter1: the lkd() mode
	copy(h[0x60:], "15.0 Windows")             // VersionUser
	dumpType := uint32(1)                      // full (kernel pages)
	if mode == 2 {
		dumpType = 4 // triage: the live minidump
	}
	le.PutUint32(h[0xf98:], dumpType)
	le.PutUint64(h[0xfa0:], uint64(size))                                // RequiredDumpSpace: the whole file
	le.PutUint64(h[0xfa8:], uint64(t.UnixNano()/100+116444736000000000)) // SystemTime (FILETIME)
	copy(h[0xfb0:0xfb0+127], fmt.Sprintf("Live kernel dump: component %s, lkd(%d)", dumpComponent, mode))
	return &dumpContent{header: h, seed: seed}
}

// writeTo writes bytes [from, to) of the dump.
func (c *dumpContent) writeTo(f *os.File, from, to int64) error {
	const page = 4096
	buf := make([]byte, 0, 1<<20)
	flush := func() error {
		_, err := f.Write(buf)
		buf = buf[:0]
		return err
	}
	for off := from; off < to; {
		pageNo := off / page
		end := min((pageNo+1)*page, to)
		var p [page]byte
		switch {
		case off < int64(len(c.header)):
			copy(p[:], c.header[pageNo*page:])
		case hash64Uint(c.seed, uint64(pageNo))%2 == 1:
			r := rand.NewChaCha8(seedBytes(c.seed, uint64(pageNo)))
			_, _ = r.Read(p[:])
		}
		buf = append(buf, p[off-pageNo*page:end-pageNo*page]...)
		off = end
		if len(buf) >= cap(buf)-page {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func hash64Uint(a, b uint64) uint64 {
	x := a ^ (b * 0x9e3779b97f4a7c15)
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	return x
}

func seedBytes(a, b uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], a)
	binary.LittleEndian.PutUint64(s[8:], b)
	binary.LittleEndian.PutUint64(s[16:], hash64Uint(a, b))
	return s
}
