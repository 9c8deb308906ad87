// Package dumps is the agent's dump pipeline. When a probe calls lkd(),
// Windows writes a live kernel dump into the LiveKernelReports folder; this
// package finds the file, waits until Windows has finished writing it,
// hashes it (SHA-256, streamed) and then either uploads it to the controller
// (chunked, zstd-compressed, resumable, verified end to end) or, in
// hash-only mode, reports the hash and keeps the file for a later pull.
//
// # Detection
//
// The Manager watches the dump folder and its immediate subfolders with
// fsnotify and also rescans them periodically, so a missed event, a folder
// that Windows creates with the first dump, or dumps written while the
// agent was stopped are all found. Full dumps land in the folder's root and
// minidumps in a component subfolder (DTRACE\). Only files named
// DTRACE-YYYYMMDD-HHMM.dmp, or with a same-minute suffix such as
// DTRACE-YYYYMMDD-HHMM-2.dmp, are ours: lkd() reports the component DTRACE.
// Dumps of other components (WATCHDOG, WinsockAFD, USB hubs...) belong to
// Windows' own diagnostics and are neither reported, uploaded nor deleted.
//
// A dump's ID is the first 32 hex digits of the SHA-256 of the agent ID,
// the path relative to the dump folder and the file's creation time (on
// Windows) or the time the agent first saw it (elsewhere). It is persisted,
// so a restarted agent keeps it.
//
// # Completion
//
// A dump is complete when its size has not changed for Config.StableFor and
// the file opens with no sharing (Config.Exclusive): Windows holds the file
// open while writing it. A file that stays empty, shrinks or disappears
// while being written is ABORTED. Windows also logs the end of every live
// dump in Microsoft-Windows-Kernel-LiveDump/Operational (event ID 4, with
// the NTSTATUS and byte count, and ID 202 for a full disk). That event log
// is the better completion signal on Windows and is planned as a later,
// additional source; the size-and-sharing check is what runs now, and it
// remains the fallback wherever the event log is unavailable.
//
// # Upload
//
// Uploads run one at a time per agent. Each starts by asking the controller
// for its committed offset (DumpOffset), then streams a header and chunks
// from that offset; every chunk is one independent zstd frame of at most
// Config.ChunkSize raw bytes, so the controller can commit any prefix. The
// controller verifies the SHA-256 at the end: UPLOADED means stored and
// verified, and only then is the local file deleted (unless
// Config.KeepAfterUpload). An offset mismatch (FailedPrecondition) or a hash
// mismatch (DataLoss) makes the agent ask for the offset again and resume or
// restart; transport errors are retried with jittered exponential backoff
// from 1s to 60s. A HASH_ONLY answer (the controller's per-signature quota)
// keeps the file for a later Pull.
//
// The state of every dump is persisted in <StateDir>/dumps.json, so an
// interrupted upload resumes after an agent restart.
//
// # Memory
//
// Hashing streams through a 1 MiB buffer and uploading holds one raw chunk
// and one compressed frame at a time, so memory use does not grow with the
// size of the dump.
package dumps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/atomicfile"
	"github.com/livedump/livedump/internal/ids"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// StateFile is the file in Config.StateDir that records every known dump.
const StateFile = "dumps.json"

// Defaults for the zero values of Config.
const (
	DefaultStableFor = 5 * time.Second
	DefaultRescan    = 2 * time.Second
	DefaultChunkSize = 1 << 20
)

const (
	// maxChunkSize bounds Config.ChunkSize: a compressed frame must fit a
	// gRPC message (4 MiB by default) with room to spare.
	maxChunkSize = 2 << 20
	// keepRetired is how many dumps whose file is gone stay in the state
	// file (and in Reports), newest first.
	keepRetired = 200
	// linkSlack allows for clock granularity between a trigger's time and
	// the creation time of the dump it asked for, which follows it.
	linkSlack = time.Second
	// expectTTL is how long an expectation waits for its dump: Windows may
	// throttle or fail a live dump, and an expectation must not then claim
	// an unrelated later dump. It is also the window within which a dump
	// is linked to the trigger closest before it.
	expectTTL = 10 * time.Minute
)

// Config configures a Manager. The functions in it are called from the
// pipeline's goroutines (Report from several at once) and must not block
// for long; none is called with the Manager's lock held except AgentID and
// Exclusive, which must not call back into the Manager.
type Config struct {
	// Events reads the Kernel-LiveDump event log (host.LiveDumpEvents);
	// nil relies on the stable-size rule alone.
	Events func(ctx context.Context, since time.Time) ([]host.LiveDumpEvent, error)
	// Dir returns the local folder Windows writes live dumps to (the
	// LiveKernelReports path). It is called on every scan, so a changed
	// path takes effect without a restart.
	Dir func() (string, error)
	// StateDir is where StateFile is kept.
	StateDir string
	// Client returns the mTLS client to the controller; it may fail while
	// the agent is disconnected.
	Client func() (livedumpv1.AgentServiceClient, error)
	// Report sends a DumpReport on the session stream, best effort: the
	// report after reconnecting (Reports) carries anything lost. May be nil.
	Report func(d *livedumpv1.Dump)
	// NoDump is told about each trigger that asked for a live dump and got
	// none: dropped because another live dump was being written (Windows
	// writes one at a time), or no dump appeared within ten minutes
	// (throttled or failed). reason is a sentence for the capture's detail.
	// May be nil; called without the Manager's lock.
	NoDump func(captureID, eventID string, at time.Time, reason string)
	// AgentID returns this agent's ID (empty before enrollment).
	AgentID func() string
	// StableFor is how long a dump's size must stay unchanged before it is
	// considered complete (default 5s).
	StableFor time.Duration
	// Rescan is the period of the rescan that backs up fsnotify (default 2s).
	Rescan time.Duration
	// BandwidthBytesPerSec caps the raw (uncompressed) upload rate of this
	// agent; 0 means unlimited.
	BandwidthBytesPerSec int64
	// KeepAfterUpload keeps the local file after a verified upload; by
	// default it is deleted.
	KeepAfterUpload bool
	// ChunkSize is the raw size of one zstd frame (default 1 MiB, at most
	// 2 MiB).
	ChunkSize int
	// Encoders is how many chunks are compressed at once (default
	// DefaultEncoders: the cores, at most 2). The level adapts to the link.
	Encoders int
	// Exclusive reports whether the file opens with no sharing, meaning that
	// Windows has closed it. Nil means always true. On Windows pass
	// OpensExclusively.
	Exclusive func(path string) bool
	Logger    *slog.Logger
	Clock     clockwork.Clock
	Metrics   prometheus.Registerer
}

// Manager runs the dump pipeline of one agent.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	clock clockwork.Clock
	met   *metrics
	limit *limiter
	// encoders compress upload chunks side by side; used by the uploader
	// goroutine's pipeline only.
	encoders []*chunkEncoder
	hashBuf  []byte // used by the hasher goroutine only

	// Retry bounds of the uploader; variables so tests can shorten them.
	backoffMin, backoffMax time.Duration

	hashKick   chan struct{}
	uploadKick chan struct{}

	mu      sync.Mutex
	dumps   map[string]*entry // by ID
	byPath  map[string]*entry // tracked files by absolute path
	expect  []expectation     // triggers waiting for their dump, oldest first
	notes   []noDump          // NoDump calls to make once m.mu is released
	changed chan struct{}     // closed and replaced when a dump is linked
	run     bool
}

// expectation is a trigger waiting for the dump it asked for.
type expectation struct {
	CaptureID string     `json:"capture_id,omitempty"`
	EventID   string     `json:"event_id,omitempty"`
	Signature string     `json:"signature,omitempty"`
	Mode      uploadMode `json:"mode"`
	At        time.Time  `json:"at"`
}

// savedState is the content of StateFile.
type savedState struct {
	Dumps        []*entry      `json:"dumps"`
	Expectations []expectation `json:"expectations,omitempty"`
}

// New loads the persisted dumps and prepares the Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == nil {
		return nil, errors.New("dump: Config.Dir is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("dump: Config.StateDir is required")
	}
	if cfg.Client == nil {
		return nil, errors.New("dump: Config.Client is required")
	}
	if cfg.AgentID == nil {
		cfg.AgentID = func() string { return "" }
	}
	if cfg.Report == nil {
		cfg.Report = func(*livedumpv1.Dump) {}
	}
	if cfg.Exclusive == nil {
		cfg.Exclusive = func(string) bool { return true }
	}
	if cfg.StableFor <= 0 {
		cfg.StableFor = DefaultStableFor
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = DefaultRescan
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("dump: ChunkSize %d is larger than %d", cfg.ChunkSize, maxChunkSize)
	}
	if cfg.BandwidthBytesPerSec < 0 {
		return nil, fmt.Errorf("dump: negative BandwidthBytesPerSec %d", cfg.BandwidthBytesPerSec)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Encoders <= 0 {
		cfg.Encoders = DefaultEncoders()
	}
	encoders := make([]*chunkEncoder, cfg.Encoders)
	for i := range encoders {
		encoders[i] = newChunkEncoder(cfg.ChunkSize)
	}
	m := &Manager{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "dump"),
		clock:      cfg.Clock,
		encoders:   encoders,
		limit:      newLimiter(cfg.Clock, cfg.BandwidthBytesPerSec, int64(cfg.ChunkSize)),
		backoffMin: time.Second,
		backoffMax: time.Minute,
		hashKick:   make(chan struct{}, 1),
		uploadKick: make(chan struct{}, 1),
		dumps:      map[string]*entry{},
		byPath:     map[string]*entry{},
		changed:    make(chan struct{}),
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	met, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	m.met = met
	return m, nil
}

// Run watches for dumps, hashes and uploads them until ctx ends. State is
// persisted as it changes, so a later Run (after New on the same StateDir)
// carries on where this one stopped.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.run {
		m.mu.Unlock()
		return errors.New("dump: Run called twice")
	}
	m.run = true
	m.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { m.hashLoop(ctx) })
	wg.Go(func() { m.uploadLoop(ctx) })
	m.watchLoop(ctx)
	wg.Wait()
	return nil
}

// Pull uploads a dump that was kept on the agent (hash-only, or failed
// earlier) now. Pulling a dump that is already uploaded or on its way is a
// no-op; an unknown ID, an aborted dump or one whose file is gone is an
// error.
func (m *Manager) Pull(dumpID string) error {
	if err := ids.DumpID(dumpID); err != nil {
		return err
	}
	m.mu.Lock()
	e, ok := m.dumps[dumpID]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("dump %s: not known on this agent", dumpID)
	}
	var out []*livedumpv1.Dump
	switch {
	case e.State == stateUploaded || e.State == stateUploading:
	case e.State == stateAborted:
		m.mu.Unlock()
		return fmt.Errorf("dump %s: aborted by Windows (%s)", dumpID, e.Detail)
	case e.State == stateTruncated:
		m.mu.Unlock()
		return fmt.Errorf("dump %s: truncated (%s)", dumpID, e.Detail)
	case e.Gone:
		m.mu.Unlock()
		return fmt.Errorf("dump %s: the local file is gone", dumpID)
	case e.State == stateWriting || e.State == stateHashed:
		e.Pulled, e.Mode = true, modeFull
		m.saveLocked()
	case e.State == stateHashOnly || e.State == stateFailed:
		if e.State == stateFailed {
			// Start again from the completion check: the file may have
			// changed, which is one way an upload fails.
			e.State, e.Complete, e.SHA256, e.lastChange = stateWriting, false, "", time.Time{}
		} else {
			e.State = stateHashed
		}
		e.Pulled, e.Mode, e.Detail = true, modeFull, "pulled"
		e.Updated = m.clock.Now()
		m.saveLocked()
		out = append(out, m.snapshot(e))
	}
	m.mu.Unlock()
	m.report(out...)
	kick(m.uploadKick)
	return nil
}

// Reports returns the current state of every known dump, oldest first, for
// the report after (re)connecting. Because it is called on every
// reconnect, it also cuts short the uploader's wait before its next retry.
func (m *Manager) Reports() []*livedumpv1.Dump {
	m.mu.Lock()
	es := make([]*entry, 0, len(m.dumps))
	for _, e := range m.dumps {
		es = append(es, e)
	}
	sortEntries(es)
	out := make([]*livedumpv1.Dump, 0, len(es))
	for _, e := range es {
		out = append(out, m.snapshot(e))
	}
	m.mu.Unlock()
	kick(m.uploadKick)
	return out
}

// entry is one dump as the agent tracks and persists it.
type entry struct {
	ID        string     `json:"id"`
	Root      string     `json:"root"` // the dump folder it was found in
	Path      string     `json:"path"` // relative to Root, slash-separated
	State     dumpState  `json:"state"`
	Detail    string     `json:"detail,omitempty"`
	Size      int64      `json:"size"`
	SHA256    string     `json:"sha256,omitempty"`
	CaptureID string     `json:"capture_id,omitempty"`
	EventID   string     `json:"event_id,omitempty"`
	Signature string     `json:"signature,omitempty"`
	Mode      uploadMode `json:"mode"`
	Linked    bool       `json:"linked,omitempty"`    // an expectation was consumed
	TriggerAt time.Time  `json:"trigger_at,omitzero"` // the linked trigger's time
	// Facts from the dump's own header, read when it is complete.
	DumpType   string    `json:"dump_type,omitempty"`
	BugCheck   uint32    `json:"bug_check,omitempty"`
	Build      uint32    `json:"build,omitempty"`
	Declared   int64     `json:"declared,omitempty"`
	Created    time.Time `json:"created"`          // creation or first-seen time (in the ID)
	Written    time.Time `json:"written,omitzero"` // modification time when complete
	Updated    time.Time `json:"updated"`
	Uploaded   int64     `json:"uploaded,omitempty"`
	Compressed int64     `json:"compressed,omitempty"`
	Complete   bool      `json:"complete,omitempty"` // stable and closed; to be hashed
	Pulled     bool      `json:"pulled,omitempty"`
	Gone       bool      `json:"gone,omitempty"` // the file was deleted or replaced

	lastSize   int64     // size at the last scan
	lastChange time.Time // when the size last changed (zero: not yet observed)
	mismatches int       // hash mismatches reported by the controller
}

func (e *entry) abs() string { return filepath.Join(e.Root, filepath.FromSlash(e.Path)) }

func (e *entry) linked() bool { return e.Linked || e.CaptureID != "" || e.EventID != "" }

// terminal reports whether nothing more happens to the dump by itself.
func (e *entry) terminal() bool {
	switch e.State {
	case stateUploaded, stateHashOnly, stateFailed, stateAborted, stateTruncated:
		return true
	}
	return false
}

// dumpID derives a dump's stable ID.
func dumpID(agentID, rel string, created time.Time) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", agentID, rel, created.UnixNano()))
	return hex.EncodeToString(h[:])[:32]
}

// snapshot renders a dump for the wire; the caller holds m.mu.
func (m *Manager) snapshot(e *entry) *livedumpv1.Dump {
	d := &livedumpv1.Dump{
		Id:         e.ID,
		AgentId:    m.cfg.AgentID(),
		CaptureId:  e.CaptureID,
		EventId:    e.EventID,
		FileName:   path.Base(e.Path),
		Size:       e.Size,
		Sha256:     e.SHA256,
		State:      livedumpv1.DumpState(e.State),
		Detail:     e.Detail,
		Uploaded:   e.Uploaded,
		Compressed: e.Compressed,
		Signature:  e.Signature,

		DumpType:     e.DumpType,
		BugCheckCode: e.BugCheck,
		OsBuild:      e.Build,
		DeclaredSize: e.Declared,
	}
	if !e.Written.IsZero() {
		d.Written = timestamppb.New(e.Written)
	}
	if !e.Updated.IsZero() {
		d.Updated = timestamppb.New(e.Updated)
	}
	return d
}

// report sends reports; the caller must not hold m.mu (the session may call
// Reports while it holds its own lock).
func (m *Manager) report(ds ...*livedumpv1.Dump) {
	for _, d := range ds {
		m.cfg.Report(d)
	}
}

// setState changes a dump's state and persists it, returning the report to
// send once m.mu is released; the caller holds m.mu.
func (m *Manager) setState(e *entry, st dumpState, detail string) *livedumpv1.Dump {
	e.State, e.Detail, e.Updated = st, detail, m.clock.Now()
	switch st {
	case stateAborted:
		m.met.result(resultAborted)
	case stateTruncated:
		m.met.result(resultTruncated)
	case stateFailed:
		m.met.result(resultFailed)
	case stateHashOnly:
		m.met.result(resultHashOnly)
	case stateUploaded:
		m.met.result(resultUploaded)
	}
	m.saveLocked()
	return m.snapshot(e)
}

func (m *Manager) load() error {
	b, err := os.ReadFile(filepath.Join(m.cfg.StateDir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", StateFile, err)
	}
	for _, e := range s.Dumps {
		if e == nil || e.ID == "" {
			continue
		}
		m.dumps[e.ID] = e
		if !e.Gone {
			m.byPath[e.abs()] = e
		}
	}
	m.expect = s.Expectations
	return nil
}

// saveLocked persists the state, dropping the oldest dumps whose file is
// gone beyond keepRetired; the caller holds m.mu. A failure is logged: the
// pipeline keeps going and the next change retries.
func (m *Manager) saveLocked() {
	var retired []*entry
	all := make([]*entry, 0, len(m.dumps))
	for _, e := range m.dumps {
		all = append(all, e)
		if e.Gone && e.terminal() {
			retired = append(retired, e)
		}
	}
	if len(retired) > keepRetired {
		slices.SortFunc(retired, func(a, b *entry) int { return b.Updated.Compare(a.Updated) })
		for _, e := range retired[keepRetired:] {
			delete(m.dumps, e.ID)
		}
		all = all[:0]
		for _, e := range m.dumps {
			all = append(all, e)
		}
	}
	sortEntries(all)
	b, err := json.MarshalIndent(savedState{Dumps: all, Expectations: m.expect}, "", "  ")
	if err == nil {
		err = atomicfile.Write(filepath.Join(m.cfg.StateDir, StateFile), b, 0o600)
	}
	if err != nil {
		m.log.Error("save dump state", "err", err)
	}
}

func sortEntries(es []*entry) {
	slices.SortFunc(es, func(a, b *entry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// kick wakes a worker without blocking.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// dumpState is a DumpState persisted by name.
type dumpState livedumpv1.DumpState

const (
	stateWriting   = dumpState(livedumpv1.DumpState_DUMP_STATE_WRITING)
	stateHashed    = dumpState(livedumpv1.DumpState_DUMP_STATE_HASHED)
	stateHashOnly  = dumpState(livedumpv1.DumpState_DUMP_STATE_HASH_ONLY)
	stateUploading = dumpState(livedumpv1.DumpState_DUMP_STATE_UPLOADING)
	stateUploaded  = dumpState(livedumpv1.DumpState_DUMP_STATE_UPLOADED)
	stateFailed    = dumpState(livedumpv1.DumpState_DUMP_STATE_FAILED)
	stateAborted   = dumpState(livedumpv1.DumpState_DUMP_STATE_ABORTED)
	stateTruncated = dumpState(livedumpv1.DumpState_DUMP_STATE_TRUNCATED)
)

func (s dumpState) MarshalText() ([]byte, error) {
	return []byte(livedumpv1.DumpState(s).String()), nil
}

func (s *dumpState) UnmarshalText(b []byte) error {
	v, ok := livedumpv1.DumpState_value[string(b)]
	if !ok {
		return fmt.Errorf("unknown dump state %q", b)
	}
	*s = dumpState(v)
	return nil
}

// uploadMode is an UploadMode persisted by name; UNSPECIFIED means FULL.
type uploadMode livedumpv1.UploadMode

const (
	modeFull     = uploadMode(livedumpv1.UploadMode_UPLOAD_MODE_FULL)
	modeHashOnly = uploadMode(livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY)
)

func (u uploadMode) MarshalText() ([]byte, error) {
	return []byte(livedumpv1.UploadMode(u).String()), nil
}

func (u *uploadMode) UnmarshalText(b []byte) error {
	v, ok := livedumpv1.UploadMode_value[string(b)]
	if !ok {
		return fmt.Errorf("unknown upload mode %q", b)
	}
	*u = uploadMode(v)
	return nil
}
