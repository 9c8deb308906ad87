package dumps

import (
	"context"
	"errors"
	"fmt"
	"github.com/livedump/livedump/agent/host"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/livedump/livedump/internal/kdump"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// dumpName matches the files lkd() has Windows write: DTRACE*.dmp, compared
// case-insensitively as Windows compares names. The documented pattern is
// <Component>-YYYYMMDD-HHMM.dmp (e.g. WinsockAFD-20150114-1722.dmp), but
// how Windows names a second dump in the same minute is not documented, so
// only the component prefix and the extension are relied on.
var dumpName = regexp.MustCompile(`(?i)^DTRACE.*\.dmp$`)

// dumpComponent is the component lkd() reports for its dumps.
const dumpComponent = "DTRACE"

// IsDumpName reports whether a file name is one of our live dumps (component
// DTRACE) rather than a dump Windows wrote for one of its own components.
func IsDumpName(name string) bool { return dumpName.MatchString(name) }

// eventDebounce is how long after an fsnotify event the folder is scanned:
// a dump being written produces a stream of events, one scan covers them.
const eventDebounce = 50 * time.Millisecond

// watchLoop scans the dump folder on fsnotify events and every Rescan until
// ctx ends.
func (m *Manager) watchLoop(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		m.log.Warn("fsnotify unavailable; relying on periodic rescans", "err", err)
	} else {
		defer w.Close()
	}
	ws := &watches{w: w, dirs: map[string]bool{}}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	ticker := m.clock.NewTicker(m.cfg.Rescan)
	defer ticker.Stop()
	var debounce <-chan time.Time
	m.scan(ws)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.Chan():
			m.scan(ws)
		case <-debounce:
			debounce = nil
			m.scan(ws)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				delete(ws.dirs, ev.Name) // re-added by the next scan if it comes back
			}
			if debounce == nil {
				debounce = m.clock.After(eventDebounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			m.log.Debug("fsnotify", "err", err) // e.g. an overflow: the rescan covers it
		}
	}
}

// watches keeps fsnotify on the dump folder and its immediate subfolders.
type watches struct {
	w       *fsnotify.Watcher
	dirs    map[string]bool
	lastErr string
}

// sync watches exactly the given folders.
func (ws *watches) sync(want []string) {
	if ws.w == nil {
		return
	}
	keep := map[string]bool{}
	for _, d := range want {
		keep[d] = true
		if !ws.dirs[d] {
			if err := ws.w.Add(d); err == nil {
				ws.dirs[d] = true
			}
		}
	}
	for d := range ws.dirs {
		if !keep[d] {
			_ = ws.w.Remove(d)
			delete(ws.dirs, d)
		}
	}
}

// listing is what a scan found: our dump files by absolute path, and the
// folders to watch.
type listing struct {
	files map[string]string // absolute path -> path relative to the root, slash-separated
	dirs  []string
}

// list reads the root folder and its immediate subfolders. A root that does
// not exist yet is an empty listing: Windows creates it with the first dump.
func list(root string) (listing, error) {
	l := listing{files: map[string]string{}}
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	l.dirs = append(l.dirs, root)
	for _, de := range entries {
		if de.IsDir() {
			sub := filepath.Join(root, de.Name())
			l.dirs = append(l.dirs, sub)
			subEntries, err := os.ReadDir(sub)
			if err != nil {
				continue // removed meanwhile, or not ours to read
			}
			for _, se := range subEntries {
				if se.Type().IsRegular() && IsDumpName(se.Name()) {
					l.files[filepath.Join(sub, se.Name())] = de.Name() + "/" + se.Name()
				}
			}
			continue
		}
		if de.Type().IsRegular() && IsDumpName(de.Name()) {
			l.files[filepath.Join(root, de.Name())] = de.Name()
		}
	}
	return l, nil
}

// scan lists the dump folder and advances every tracked file.
func (m *Manager) scan(ws *watches) {
	root, err := m.cfg.Dir()
	if err == nil {
		root, err = filepath.Abs(root)
	}
	var l listing
	if err == nil {
		l, err = list(root)
	}
	if err != nil {
		if msg := err.Error(); msg != ws.lastErr {
			ws.lastErr = msg
			m.log.Warn("cannot read the dump folder", "err", err)
		}
		return
	}
	ws.lastErr = ""
	ws.sync(l.dirs)

	m.mu.Lock()
	now := m.clock.Now()
	var out []*livedumpv1.Dump
	hashable := false
	m.lapseLocked(now)
	// Every tracked file is looked at with os.Stat, not through the
	// directory listing: on NTFS a directory entry's size lags behind a file
	// being written.
	paths := map[string]string{}
	for abs, rel := range l.files {
		paths[abs] = rel
	}
	for abs := range m.byPath {
		if _, ok := paths[abs]; !ok {
			paths[abs] = ""
		}
	}
	order := make([]string, 0, len(paths))
	for abs := range paths {
		order = append(order, abs)
	}
	// New dumps meet the expectations in the order Windows wrote them.
	key := func(abs string) string {
		if rel := paths[abs]; rel != "" {
			return orderKey(rel)
		}
		return orderKey(m.byPath[abs].Path)
	}
	slices.SortFunc(order, func(a, b string) int { return strings.Compare(key(a), key(b)) })
	for _, abs := range order {
		rel := paths[abs]
		e := m.byPath[abs]
		fi, err := os.Stat(abs)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if e != nil {
				out = append(out, m.missing(e)...)
			}
			continue
		case err != nil:
			continue // e.g. a sharing violation: look again next scan
		case !fi.Mode().IsRegular():
			continue
		}
		if e != nil && e.terminal() && replaced(e, fi) {
			e.Gone = true
			delete(m.byPath, abs)
			e = nil
		}
		if e == nil {
			if rel == "" {
				continue // only listed files become new dumps
			}
			var d *livedumpv1.Dump
			e, d = m.track(root, rel, fi, now)
			out = append(out, d)
		}
		d, complete := m.observe(e, fi, now)
		if d != nil {
			out = append(out, d)
		}
		hashable = hashable || complete
	}
	m.settleInProgressLocked()
	notes := m.takeNotesLocked()
	m.mu.Unlock()
	m.report(out...)
	m.notify(notes)
	if hashable {
		kick(m.hashKick)
	}
}

// orderKey sorts dump names by the time in the name, then by the
// same-minute suffix (the unsuffixed name is the first).
func orderKey(rel string) string {
	base := strings.TrimSuffix(strings.ToUpper(path.Base(rel)), ".DMP")
	stamp, n := base, 1
	if parts := strings.Split(base, "-"); len(parts) == 4 {
		stamp = strings.Join(parts[:3], "-")
		if v, err := strconv.Atoi(parts[3]); err == nil {
			n = v
		}
	}
	return fmt.Sprintf("%s|%05d|%s", stamp, n, rel)
}

// replaced reports whether the file at a finished dump's path is another
// file now: Windows reuses a name once the file with that name is gone.
func replaced(e *entry, fi os.FileInfo) bool {
	if e.State == stateTruncated {
		return false // a truncated dump that grows was still being written: observe
	}
	if e.State == stateAborted {
		return fi.Size() != e.Size
	}
	return fi.Size() != e.Size || (!e.Written.IsZero() && !fi.ModTime().Equal(e.Written))
}

// track starts tracking a new dump file; the caller holds m.mu.
func (m *Manager) track(root, rel string, fi os.FileInfo, now time.Time) (*entry, *livedumpv1.Dump) {
	created, ok := birthTime(fi)
	if !ok {
		created = now
	}
	agent := m.cfg.AgentID()
	id := dumpID(agent, rel, created)
	if _, dup := m.dumps[id]; dup {
		// NTFS "tunnelling" gives a file re-created under a recent name the
		// old creation time; the first-seen time tells the two apart.
		created = now
		id = dumpID(agent, rel, created)
	}
	e := &entry{ID: id, Root: root, Path: rel, State: stateWriting, Created: created, Mode: modeFull}
	m.dumps[id] = e
	m.byPath[e.abs()] = e
	m.linkNewLocked(e) // link.go
	m.log.Info("new live dump", "dump_id", id, "path", rel, "capture_id", e.CaptureID, "event_id", e.EventID)
	return e, m.setState(e, stateWriting, "being written")
}

// observe advances a dump being written from a fresh stat; it returns a
// report to send, if any, and whether the dump is now ready to hash. The
// caller holds m.mu.
func (m *Manager) observe(e *entry, fi os.FileInfo, now time.Time) (*livedumpv1.Dump, bool) {
	if e.State == stateTruncated && fi.Size() != e.Size {
		// Windows was not done after all (a write that stalled longer
		// than StableFor): watch it again.
		e.Complete, e.lastSize, e.lastChange, e.Written = false, fi.Size(), now, time.Time{}
		e.Size = fi.Size()
		return m.setState(e, stateWriting, "being written (it grew after it looked truncated)"), false
	}
	if e.State != stateWriting {
		return nil, false
	}
	size := fi.Size()
	if e.Complete {
		if size != e.Size { // written again after it looked complete
			e.Complete = false
			e.lastSize, e.lastChange = size, now
		}
		return nil, e.Complete
	}
	if !e.lastChange.IsZero() && size < e.lastSize {
		shrunk := e.lastSize
		e.Size = size
		return m.setState(e, stateAborted, fmt.Sprintf("the file shrank from %d to %d bytes while being written", shrunk, size)), false
	}
	if e.lastChange.IsZero() || size != e.lastSize {
		e.lastSize, e.lastChange = size, now
		e.Size = size
		return nil, false
	}
	// Windows' own word comes first: the Kernel-LiveDump event log says
	// when it finished writing (event 4, with the byte count) or gave up
	// (event 202: disk full). The stable-size rule is the fallback for when
	// the log has nothing, e.g. it was cleared or is unreadable.
	switch verdict, detail := m.eventVerdict(e, size); verdict {
	case verdictFailed:
		e.Size = size
		return m.setState(e, stateAborted, detail), false
	case verdictDone:
		if m.cfg.Exclusive(e.abs()) {
			return m.complete(e, size, fi, now)
		}
	}
	if now.Sub(e.lastChange) < m.cfg.StableFor || !m.cfg.Exclusive(e.abs()) {
		return nil, false
	}
	if size == 0 {
		e.Size = 0
		return m.setState(e, stateAborted, "Windows left the dump file empty"), false
	}
	return m.complete(e, size, fi, now)
}

// complete checks a dump whose writing has ended against its own header
// (internal/kdump): a file without a valid 64-bit dump header, or shorter
// than the size the header declares, is TRUNCATED and never hashed or
// uploaded; otherwise it is ready to hash. The caller holds m.mu.
func (m *Manager) complete(e *entry, size int64, fi os.FileInfo, now time.Time) (*livedumpv1.Dump, bool) {
	e.Size, e.Written = size, fi.ModTime()
	h, err := readHeader(e.abs())
	if err != nil {
		e.Complete = true
		return m.setState(e, stateTruncated, "no valid dump header: "+err.Error()), false
	}
	e.DumpType, e.BugCheck, e.Build, e.Declared = h.DumpType.String(), h.BugCheckCode, h.Build, int64(h.RequiredDumpSpace)
	ok, note := h.Verdict(size)
	if !ok {
		e.Complete = true
		return m.setState(e, stateTruncated, "truncated: "+note), false
	}
	if note != "" {
		e.Detail = note
	}
	e.Complete = true
	e.Updated = now
	m.saveLocked()
	return nil, true
}

// missing handles a tracked file that is no longer there; the caller holds
// m.mu.
func (m *Manager) missing(e *entry) []*livedumpv1.Dump {
	delete(m.byPath, e.abs())
	e.Gone = true
	switch e.State {
	case stateWriting:
		return []*livedumpv1.Dump{m.setState(e, stateAborted, "the file disappeared before it was complete")}
	case stateHashed:
		return []*livedumpv1.Dump{m.setState(e, stateFailed, "the file was deleted before it was uploaded")}
	case stateHashOnly:
		e.Detail, e.Updated = "the local file was deleted; it can no longer be pulled", m.clock.Now()
		m.saveLocked()
		return []*livedumpv1.Dump{m.snapshot(e)}
	default:
		// UPLOADING: the uploader notices and fails the dump. Finished
		// dumps: nothing to tell.
		m.saveLocked()
		return nil
	}
}

type verdict int

const (
	verdictUnknown verdict = iota
	verdictDone
	verdictFailed
)

// eventVerdict reads the Kernel-LiveDump events since the dump was created:
// a successful write-ended event with the file's size completes it; a
// failed one, or a disk-full event, aborts it.
func (m *Manager) eventVerdict(e *entry, size int64) (verdict, string) {
	if m.cfg.Events == nil || size == 0 {
		return verdictUnknown, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := m.cfg.Events(ctx, e.Created.Add(-5*time.Second))
	if err != nil {
		m.log.Debug("live dump event log unavailable; using the stable-size rule", "err", err)
		return verdictUnknown, ""
	}
	for _, ev := range evs {
		// A failure event counts against this dump only when it names our
		// component: the write-ended (4) and disk-full (202) events carry
		// no component in their documented fields (NTStatus, TotalBytes,
		// ...: OTRF/OSSEM's Kernel-LiveDump data dictionary), so another
		// component's failed dump must not abort ours. Such a dump is
		// judged by its own header instead (complete).
		failure := ev.ID == host.EventDumpDiskFull || (ev.ID == host.EventDumpWriteEnd && ev.NTStatus != 0)
		if failure && !strings.EqualFold(ev.Component, dumpComponent) {
			continue
		}
		switch {
		case ev.ID == host.EventDumpDiskFull:
			return verdictFailed, fmt.Sprintf("Windows could not finish the dump: disk full (event %d, NTSTATUS 0x%08X)", ev.ID, ev.NTStatus)
		case ev.ID == host.EventDumpWriteEnd && ev.NTStatus != 0 && (ev.TotalBytes == 0 || ev.TotalBytes == uint64(size)):
			return verdictFailed, fmt.Sprintf("Windows reported the dump write failed (event %d, NTSTATUS 0x%08X)", ev.ID, ev.NTStatus)
		case ev.ID == host.EventDumpWriteEnd && ev.NTStatus == 0 && ev.TotalBytes == uint64(size):
			return verdictDone, ""
		}
	}
	return verdictUnknown, ""
}

// readHeader reads a dump file's 64-bit dump header.
func readHeader(path string) (kdump.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return kdump.Header{}, err
	}
	defer f.Close()
	return kdump.ReadHeader(f)
}
