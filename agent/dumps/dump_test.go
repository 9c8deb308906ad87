package dumps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/livedump/livedump/internal/kdump"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

const (
	writing   = livedumpv1.DumpState_DUMP_STATE_WRITING
	hashedSt  = livedumpv1.DumpState_DUMP_STATE_HASHED
	hashOnly  = livedumpv1.DumpState_DUMP_STATE_HASH_ONLY
	uploading = livedumpv1.DumpState_DUMP_STATE_UPLOADING
	uploaded  = livedumpv1.DumpState_DUMP_STATE_UPLOADED
	failed    = livedumpv1.DumpState_DUMP_STATE_FAILED
	aborted   = livedumpv1.DumpState_DUMP_STATE_ABORTED
	truncated = livedumpv1.DumpState_DUMP_STATE_TRUNCATED
)

// dumpLike returns size bytes that look like a kernel dump: mostly zero
// pages, pages of repeated structures, and some random pages.
func dumpLike(size int, seed uint64) []byte {
	const page = 4096
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	// A 64-bit dump header declaring the file's size, as Windows writes it
	// first (internal/kdump).
	copy(b, kdump.Header{Build: 26100, BugCheckCode: kdump.BugCheckManuallyInitiated, DumpType: kdump.DumpTypeFull, RequiredDumpSpace: uint64(size)}.Marshal())
	for off := page; off < size; off += page {
		p := b[off:min(off+page, size)]
		switch v := r.IntN(100); {
		case v < 55: // zero page
		case v < 85: // page-table-like entries and pool headers
			base := r.Uint64() &^ 0xfff
			for i := 0; i+8 <= len(p); i += 8 {
				binary.LittleEndian.PutUint64(p[i:], base+uint64(i/8)*page|0x63)
			}
			if len(p) >= 16 {
				copy(p[:16], "Proc\x00\x00\x00\x00Thre\x00\x00\x00\x00")
			}
		default: // random data
			for i := range p {
				p[i] = byte(r.Uint32())
			}
		}
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

var idRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestUploadRoundTrip(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewPedanticRegistry()
	cfg := h.config()
	cfg.Metrics = reg
	h.start(&cfg)
	content := dumpLike(3<<20+123, 1)
	p := filepath.Join(h.dir, "DTRACE-20261126-1405.dmp")
	writeFile(t, p, content)

	d := h.wait("DTRACE-20261126-1405.dmp", uploaded)
	if !idRe.MatchString(d.GetId()) {
		t.Errorf("dump ID %q: want 32 hex digits", d.GetId())
	}
	if d.GetSize() != int64(len(content)) || d.GetSha256() != sum(content) || d.GetAgentId() != "agent-1" {
		t.Errorf("report = %v", d)
	}
	got, gotSum, ok := h.fake.stored(d.GetId())
	if !ok || !bytes.Equal(got, content) || gotSum != sum(content) {
		t.Fatalf("controller holds %d bytes (sha %s), want %d (sha %s)", len(got), gotSum, len(content), sum(content))
	}
	if offs := h.fake.offsetsFor(d.GetId()); !slices.Equal(offs, []int64{0}) {
		t.Errorf("header offsets %v, want [0]", offs)
	}
	want := []livedumpv1.DumpState{writing, hashedSt, uploading, uploaded}
	if got := h.states("DTRACE-20261126-1405.dmp"); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	waitFor(t, "the uploaded file to be deleted", func() bool { return !exists(p) })

	if v := value(h.m.met.dumps.WithLabelValues("uploaded")); v != 1 {
		t.Errorf("dumps_total{uploaded} = %v", v)
	}
	if v := value(h.m.met.raw); v != float64(len(content)) {
		t.Errorf("bytes uploaded = %v, want %d", v, len(content))
	}
	if c := value(h.m.met.compressed); c <= 0 || c >= float64(len(content)) {
		t.Errorf("compressed bytes = %v for %d raw", c, len(content))
	}
	// Reports after reconnecting show the final state.
	rs := h.m.Reports()
	if len(rs) != 1 || rs[0].GetState() != uploaded || rs[0].GetUploaded() != int64(len(content)) {
		t.Errorf("Reports() = %v", rs)
	}
}

func TestMetricsPassPromlint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newHarness(t)
	cfg := h.config()
	cfg.Metrics = reg
	h.start(&cfg)
	writeFile(t, filepath.Join(h.dir, "DTRACE-20261126-1405.dmp"), dumpLike(200<<10, 2))
	h.wait("DTRACE-20261126-1405.dmp", uploaded)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"livedump_agent_dumps_total", "livedump_agent_dump_bytes_uploaded_total",
		"livedump_agent_dump_upload_compressed_bytes_total", "livedump_agent_dump_upload_seconds",
		"livedump_agent_dump_upload_resumes_total"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestGrowingFileUploadedOnlyWhenStable(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.StableFor = 500 * time.Millisecond
	h.start(&cfg)
	name := "DTRACE-20261126-1405.dmp"
	p := filepath.Join(h.dir, name)
	content := dumpLike(1<<20, 3)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	step := len(content) / 10
	for i := 0; i < 10; i++ {
		if _, err := f.Write(content[i*step : (i+1)*step]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond) // well under StableFor
		if n := h.fake.headerCount(); n != 0 {
			t.Fatalf("upload started while the file was still growing (step %d)", i)
		}
		if h.find(name, hashedSt) != nil {
			t.Fatalf("hashed while the file was still growing (step %d)", i)
		}
	}
	if _, err := f.Write(content[10*step:]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	h.wait(name, writing)
	d := h.wait(name, uploaded)
	if d.GetSize() != int64(len(content)) || d.GetSha256() != sum(content) {
		t.Fatalf("uploaded %d bytes sha %s; want %d sha %s", d.GetSize(), d.GetSha256(), len(content), sum(content))
	}
	if got, _, _ := h.fake.stored(d.GetId()); !bytes.Equal(got, content) {
		t.Fatal("content differs")
	}
	if n := h.fake.headerCount(); n != 1 {
		t.Errorf("%d uploads, want 1", n)
	}
}

func TestWaitsForExclusiveOpen(t *testing.T) {
	h := newHarness(t)
	var closed atomic.Bool
	cfg := h.config()
	cfg.Exclusive = func(string) bool { return closed.Load() }
	h.start(&cfg)
	name := "DTRACE-20261126-1405.dmp"
	writeFile(t, filepath.Join(h.dir, name), dumpLike(100<<10, 4))
	h.wait(name, writing)
	time.Sleep(3 * cfg.StableFor) // stable, but Windows still has it open
	if h.find(name, hashedSt) != nil || h.fake.headerCount() != 0 {
		t.Fatal("a file still open by its writer was treated as complete")
	}
	closed.Store(true)
	h.wait(name, uploaded)
}

func TestTwoDumpsInOneMinute(t *testing.T) {
	h := newHarness(t)
	h.start(nil)
	files := map[string][]byte{
		"DTRACE-20261126-1405.dmp":        dumpLike(300<<10, 5),
		"DTRACE-20261126-1405-2.dmp":      dumpLike(200<<10, 6),
		"DTRACE/DTRACE-20261126-1405.dmp": dumpLike(100<<10, 7), // a minidump, same name, subfolder
	}
	for rel, b := range files {
		writeFile(t, filepath.Join(h.dir, filepath.FromSlash(rel)), b)
	}
	waitFor(t, "three uploads", func() bool {
		n := 0
		for _, d := range h.m.Reports() {
			if d.GetState() == uploaded {
				n++
			}
		}
		return n == 3
	})
	ids := map[string]bool{}
	for _, d := range h.m.Reports() {
		ids[d.GetId()] = true
		got, _, ok := h.fake.stored(d.GetId())
		if !ok {
			t.Fatalf("%s not stored", d.GetId())
		}
		var match bool
		for _, b := range files {
			match = match || bytes.Equal(got, b)
		}
		if !match || d.GetSha256() != sum(got) {
			t.Errorf("dump %s (%s): content matches no file", d.GetId(), d.GetFileName())
		}
	}
	if len(ids) != 3 {
		t.Errorf("%d distinct IDs, want 3", len(ids))
	}
}

func TestOtherComponentsIgnored(t *testing.T) {
	h := newHarness(t)
	h.start(nil)
	others := []string{
		"WinsockAFD-20150114-1722.dmp",
		"WATCHDOG/WATCHDOG-20261126-1405.dmp",
		"USBHUB3/USBHUB3-20261126-1405.dmp",
		"DTRACE-notes.txt",
		"XDTRACE-20261126-1405.dmp",
		"DTRACE/deep/DTRACE-20261126-1405.dmp", // deeper than one subfolder
	}
	for _, rel := range others {
		writeFile(t, filepath.Join(h.dir, filepath.FromSlash(rel)), []byte("not ours"))
	}
	writeFile(t, filepath.Join(h.dir, "dtrace-20261126-1406.dmp"), dumpLike(10<<10, 8)) // case-insensitive
	// Any DTRACE*.dmp is ours, whatever follows the prefix; one without a
	// valid dump header is reported truncated, never uploaded.
	writeFile(t, filepath.Join(h.dir, "DTRACE-2026.dmp"), []byte("not a dump"))
	h.wait("dtrace-20261126-1406.dmp", uploaded)
	if d := h.wait("DTRACE-2026.dmp", truncated); !strings.Contains(d.GetDetail(), "no valid dump header") {
		t.Errorf("detail %q", d.GetDetail())
	}
	time.Sleep(5 * h.config().Rescan)
	if rs := h.m.Reports(); len(rs) != 2 {
		t.Errorf("Reports() has %d dumps, want only ours: %v", len(rs), rs)
	}
	for _, rel := range others {
		if !exists(filepath.Join(h.dir, filepath.FromSlash(rel))) {
			t.Errorf("%s was touched", rel)
		}
	}
}

func TestIsDumpName(t *testing.T) {
	for name, want := range map[string]bool{
		"DTRACE-20261126-1405.dmp":     true,
		"DTRACE-20261126-1405-2.dmp":   true,
		"DTRACE-20261126-1405-12.dmp":  true,
		"dtrace-20261126-1405.DMP":     true,
		"DTRACE-20261126-1405.dmp.tmp": false,
		"DTRACE-2026112-1405.dmp":      true, // DTRACE*.dmp: Windows' suffix scheme is not documented
		"DTRACE.dmp":                   true,
		"XDTRACE-20261126-1405.dmp":    false,
		"WinsockAFD-20150114-1722.dmp": false,
		"LiveDump.dmp":                 false,
	} {
		if got := IsDumpName(name); got != want {
			t.Errorf("IsDumpName(%q) = %v", name, got)
		}
	}
}

func TestResumeAfterMidUploadFailure(t *testing.T) {
	h := newHarness(t)
	h.fake.set(func(f *fakeController) { f.failAfter = 5 })
	h.start(nil)
	name := "DTRACE-20261126-1405.dmp"
	content := dumpLike(1<<20+7, 9)
	writeFile(t, filepath.Join(h.dir, name), content)
	d := h.wait(name, uploaded)
	chunk := int64(h.config().ChunkSize)
	if offs := h.fake.offsetsFor(d.GetId()); !slices.Equal(offs, []int64{0, 5 * chunk}) {
		t.Errorf("header offsets %v, want [0 %d]: the retry must resume at the committed offset", offs, 5*chunk)
	}
	if got, s, _ := h.fake.stored(d.GetId()); !bytes.Equal(got, content) || s != sum(content) {
		t.Fatal("content differs after a resumed upload")
	}
	if v := value(h.m.met.resumes); v != 1 {
		t.Errorf("resumes = %v, want 1", v)
	}
}

func TestHashMismatchRestartsFromZero(t *testing.T) {
	h := newHarness(t)
	name := "DTRACE-20261126-1405.dmp"
	p := filepath.Join(h.dir, name)
	var fileDuringRetry atomic.Int32 // 1: present when the agent asked for the offset again
	h.fake.set(func(f *fakeController) {
		f.mismatchOnce = true
		calls := 0
		f.onOffset = func(string) {
			calls++
			if calls == 2 {
				if exists(p) {
					fileDuringRetry.Store(1)
				} else {
					fileDuringRetry.Store(2)
				}
			}
		}
	})
	h.start(nil)
	content := dumpLike(512<<10, 10)
	writeFile(t, p, content)
	d := h.wait(name, uploaded)
	if offs := h.fake.offsetsFor(d.GetId()); !slices.Equal(offs, []int64{0, 0}) {
		t.Errorf("header offsets %v, want [0 0]", offs)
	}
	if got, _, _ := h.fake.stored(d.GetId()); !bytes.Equal(got, content) {
		t.Fatal("content differs")
	}
	// KeepAfterUpload is false: the file survived the rejected upload and
	// went only after the verified one.
	if fileDuringRetry.Load() != 1 {
		t.Errorf("file present after the rejected upload: %v", fileDuringRetry.Load() == 1)
	}
	waitFor(t, "deletion after the verified upload", func() bool { return !exists(p) })
}

func TestKeepAfterUpload(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.KeepAfterUpload = true
	h.start(&cfg)
	name := "DTRACE-20261126-1405.dmp"
	p := filepath.Join(h.dir, name)
	writeFile(t, p, dumpLike(100<<10, 11))
	h.wait(name, uploaded)
	time.Sleep(5 * cfg.Rescan)
	if !exists(p) {
		t.Fatal("file deleted despite KeepAfterUpload")
	}
	if n := h.fake.headerCount(); n != 1 {
		t.Errorf("%d uploads of a kept file, want 1", n)
	}
}

func TestHashOnlyModeAndPull(t *testing.T) {
	h := newHarness(t)
	m := h.start(nil)
	m.Expect("cap-1", "ev-1", "sig-1", livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY, time.Now())
	name := "DTRACE-20261126-1405.dmp"
	p := filepath.Join(h.dir, name)
	content := dumpLike(256<<10, 12)
	writeFile(t, p, content)
	d := h.wait(name, hashOnly)
	if d.GetSha256() != sum(content) || d.GetSize() != int64(len(content)) || d.GetCaptureId() != "cap-1" || d.GetEventId() != "ev-1" || d.GetSignature() != "sig-1" {
		t.Fatalf("hash-only report = %v", d)
	}
	time.Sleep(5 * h.config().Rescan)
	if n := h.fake.headerCount(); n != 0 || !exists(p) {
		t.Fatalf("hash-only dump: %d uploads, file kept %v", n, exists(p))
	}
	if err := m.Pull("0123456789abcdef0123456789abcdef"); err == nil {
		t.Error("Pull of an unknown dump succeeded")
	}
	if err := m.Pull(d.GetId()); err != nil {
		t.Fatal(err)
	}
	up := h.wait(name, uploaded)
	if up.GetCaptureId() != "cap-1" {
		t.Errorf("uploaded report lost its capture: %v", up)
	}
	if got, _, _ := h.fake.stored(d.GetId()); !bytes.Equal(got, content) {
		t.Fatal("pulled content differs")
	}
	waitFor(t, "deletion after the pull", func() bool { return !exists(p) })
}

func TestControllerQuotaKeepsHashOnly(t *testing.T) {
	h := newHarness(t)
	h.fake.set(func(f *fakeController) { f.hashOnly = true })
	m := h.start(nil)
	name := "DTRACE-20261126-1405.dmp"
	p := filepath.Join(h.dir, name)
	writeFile(t, p, dumpLike(128<<10, 13))
	d := h.wait(name, hashOnly)
	if !exists(p) {
		t.Fatal("a dump kept by the quota was deleted")
	}
	h.fake.set(func(f *fakeController) { f.hashOnly = false })
	if err := m.Pull(d.GetId()); err != nil {
		t.Fatal(err)
	}
	h.wait(name, uploaded)
}

// TestExpectLinksDumpsByName: triggers at the same time meet dumps that
// started at the same time in the order of their names; a trigger that
// arrives after its file is linked to it.
func TestExpectLinksDumpsByName(t *testing.T) {
	h := newHarness(t)
	late := "DTRACE-20261126-1407.dmp"
	var closed atomic.Bool
	cfg := h.config()
	cfg.Exclusive = func(p string) bool { return !strings.HasSuffix(p, late) || closed.Load() }
	m := h.start(&cfg)
	now := time.Now()
	m.Expect("cap-1", "ev-a", "sig", livedumpv1.UploadMode_UPLOAD_MODE_FULL, now)
	m.Expect("cap-1", "ev-b", "sig", livedumpv1.UploadMode_UPLOAD_MODE_FULL, now)
	// Both appear at once (a folder renamed into place): the same-minute
	// suffix orders them.
	tmp := filepath.Join(tempDir(t), "DTRACE")
	writeFile(t, filepath.Join(tmp, "DTRACE-20261126-1405-2.dmp"), dumpLike(64<<10, 14))
	writeFile(t, filepath.Join(tmp, "DTRACE-20261126-1405.dmp"), dumpLike(64<<10, 15))
	if err := os.Rename(tmp, filepath.Join(h.dir, "DTRACE")); err != nil {
		t.Fatal(err)
	}
	if d := h.wait("DTRACE-20261126-1405.dmp", uploaded); d.GetEventId() != "ev-a" {
		t.Errorf("first dump linked to %q, want ev-a", d.GetEventId())
	}
	if d := h.wait("DTRACE-20261126-1405-2.dmp", uploaded); d.GetEventId() != "ev-b" {
		t.Errorf("second dump linked to %q, want ev-b", d.GetEventId())
	}
	// No expectation left: reported unlinked.
	writeFile(t, filepath.Join(h.dir, "DTRACE-20261126-1406.dmp"), dumpLike(64<<10, 16))
	if d := h.wait("DTRACE-20261126-1406.dmp", uploaded); d.GetCaptureId() != "" || d.GetEventId() != "" {
		t.Errorf("unexpected dump linked to %q/%q", d.GetCaptureId(), d.GetEventId())
	}
	// The file shows up before the trigger event reaches the agent.
	trigger := time.Now()
	writeFile(t, filepath.Join(h.dir, late), dumpLike(64<<10, 17))
	h.wait(late, writing)
	m.Expect("cap-2", "ev-c", "sig-c", livedumpv1.UploadMode_UPLOAD_MODE_FULL, trigger)
	closed.Store(true)
	if d := h.wait(late, uploaded); d.GetEventId() != "ev-c" || d.GetCaptureId() != "cap-2" {
		t.Errorf("late trigger not linked: %v", d)
	}
}

func TestAbortedDumps(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Exclusive = func(p string) bool { return strings.HasSuffix(p, "1401.dmp") } // the others stay open
	h.start(&cfg)
	// Stays empty.
	writeFile(t, filepath.Join(h.dir, "DTRACE-20261126-1401.dmp"), nil)
	if d := h.wait("DTRACE-20261126-1401.dmp", aborted); !strings.Contains(d.GetDetail(), "empty") {
		t.Errorf("detail %q", d.GetDetail())
	}
	// Shrinks.
	p2 := filepath.Join(h.dir, "DTRACE-20261126-1402.dmp")
	writeFile(t, p2, make([]byte, 100<<10))
	h.wait("DTRACE-20261126-1402.dmp", writing)
	time.Sleep(3 * cfg.Rescan)
	if err := os.Truncate(p2, 10<<10); err != nil {
		t.Fatal(err)
	}
	if d := h.wait("DTRACE-20261126-1402.dmp", aborted); !strings.Contains(d.GetDetail(), "shrank") {
		t.Errorf("detail %q", d.GetDetail())
	}
	// Disappears.
	p3 := filepath.Join(h.dir, "DTRACE-20261126-1403.dmp")
	writeFile(t, p3, make([]byte, 10<<10))
	h.wait("DTRACE-20261126-1403.dmp", writing)
	os.Remove(p3)
	if d := h.wait("DTRACE-20261126-1403.dmp", aborted); !strings.Contains(d.GetDetail(), "disappeared") {
		t.Errorf("detail %q", d.GetDetail())
	}
	if n := h.fake.headerCount(); n != 0 {
		t.Errorf("%d uploads of aborted dumps", n)
	}
	if v := value(h.m.met.dumps.WithLabelValues("aborted")); v != 3 {
		t.Errorf("dumps_total{aborted} = %v", v)
	}
}

func TestRestartResumesInterruptedUpload(t *testing.T) {
	h := newHarness(t)
	h.fake.set(func(f *fakeController) { f.blockAfter = 4 })
	h.start(nil)
	name := "DTRACE-20261126-1405.dmp"
	content := dumpLike(1<<20, 18)
	writeFile(t, filepath.Join(h.dir, name), content)
	<-h.fake.blocked // 4 chunks committed, the stream hangs
	first := h.wait(name, uploading)
	h.stop() // the agent stops mid-upload

	b, err := os.ReadFile(filepath.Join(h.state, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var saved savedState
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}
	if len(saved.Dumps) != 1 || saved.Dumps[0].State != stateUploading || saved.Dumps[0].ID != first.GetId() || saved.Dumps[0].SHA256 != sum(content) {
		t.Fatalf("persisted state: %s", b)
	}

	h.start(nil) // a new Manager on the same StateDir
	d := h.wait(name, uploaded)
	if d.GetId() != first.GetId() {
		t.Errorf("dump ID changed across the restart: %s -> %s", first.GetId(), d.GetId())
	}
	chunk := int64(h.config().ChunkSize)
	if offs := h.fake.offsetsFor(d.GetId()); !slices.Equal(offs, []int64{0, 4 * chunk}) {
		t.Errorf("header offsets %v, want [0 %d]", offs, 4*chunk)
	}
	if got, _, _ := h.fake.stored(d.GetId()); !bytes.Equal(got, content) {
		t.Fatal("content differs after the restart")
	}
}

func TestRetriesWhileDisconnected(t *testing.T) {
	h := newHarness(t)
	var down atomic.Bool
	down.Store(true)
	h.clientErr = func() error {
		if down.Load() {
			return errors.New("not connected")
		}
		return nil
	}
	m := h.start(nil)
	name := "DTRACE-20261126-1405.dmp"
	writeFile(t, filepath.Join(h.dir, name), dumpLike(64<<10, 19))
	h.wait(name, uploading)
	time.Sleep(100 * time.Millisecond)
	if h.fake.headerCount() != 0 {
		t.Fatal("uploaded while disconnected")
	}
	down.Store(false)
	m.Reports() // what the session does on reconnect
	h.wait(name, uploaded)
}

func TestBandwidthLimitEndToEnd(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.ChunkSize = 256 << 10
	cfg.BandwidthBytesPerSec = 4 << 20
	h.start(&cfg)
	name := "DTRACE-20261126-1405.dmp"
	writeFile(t, filepath.Join(h.dir, name), dumpLike(3<<20, 20))
	d := h.wait(name, uploaded)
	h.fake.mu.Lock()
	start, end := h.fake.headers[0].at, h.fake.dumps[d.GetId()].done
	h.fake.mu.Unlock()
	// The bucket holds one chunk: the rest (2.75 MiB) needs ~0.69s at
	// 4 MiB/s. Only the lower bound is asserted; a slow machine is slower.
	if took := end.Sub(start); took < 600*time.Millisecond {
		t.Errorf("3 MiB at 4 MiB/s took %v", took)
	}
}

func TestLimiterMath(t *testing.T) {
	clk := clockwork.NewFakeClock()
	l := newLimiter(clk, 1<<20, 256<<10) // 1 MiB/s, burst one 256 KiB chunk
	if d := l.delay(256 << 10); d != 0 {
		t.Fatalf("first chunk waits %v; the bucket starts full", d)
	}
	if d := l.delay(256 << 10); d != 250*time.Millisecond {
		t.Fatalf("second chunk waits %v, want 250ms", d)
	}
	clk.Advance(250 * time.Millisecond)
	if d := l.delay(512 << 10); d != 500*time.Millisecond {
		t.Fatalf("a 512 KiB chunk waits %v, want 500ms (larger than the bucket: debt)", d)
	}
	clk.Advance(500 * time.Millisecond)
	// A long idle period refills only up to the burst.
	clk.Advance(time.Hour)
	if d := l.delay(256 << 10); d != 0 {
		t.Fatalf("after idling: %v", d)
	}
	if d := l.delay(1 << 20); d != time.Second {
		t.Fatalf("after the burst: %v, want 1s", d)
	}
	clk.Advance(time.Second)
	// Long-run rate: 40 chunks of 256 KiB = 10 MiB take 10s of waiting
	// minus the initial empty bucket.
	var total time.Duration
	for range 40 {
		d := l.delay(256 << 10)
		total += d
		clk.Advance(d)
	}
	if total != 10*time.Second {
		t.Fatalf("10 MiB at 1 MiB/s waited %v, want 10s", total)
	}
	// wait blocks on the clock.
	done := make(chan error, 1)
	go func() { done <- l.wait(context.Background(), 128<<10) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(124 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("wait returned early")
	case <-time.After(20 * time.Millisecond):
	}
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if newLimiter(clk, 0, 1).delay(1<<30) != 0 {
		t.Fatal("rate 0 must be unlimited")
	}
}

func TestHashFileStreams(t *testing.T) {
	p := filepath.Join(tempDir(t), "f")
	content := dumpLike(3<<20+5, 21)
	writeFile(t, p, content)
	got, n, err := HashFile(context.Background(), p, nil)
	if err != nil || got != sum(content) || n != int64(len(content)) {
		t.Fatalf("HashFile = %s %d %v", got, n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := HashFile(ctx, p, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled HashFile: %v", err)
	}
}

// TestMemoryFlat uploads a large dump and samples the heap: it must stay
// far below the dump's size.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: writes and uploads 256 MiB")
	}
	const size = 256 << 20
	h := newHarness(t)
	h.fake.set(func(f *fakeController) { f.keepContent = false })
	cfg := h.config()
	cfg.ChunkSize = 1 << 20
	h.start(&cfg)
	name := "DTRACE-20261126-1405.dmp"
	p := filepath.Join(h.dir, name)
	f, err := os.Create(p + ".tmp")
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	for i := range size / (8 << 20) {
		b := dumpLike(8<<20, uint64(100+i))
		want.Write(b)
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		for {
			select {
			case <-stop:
				peak <- max
				return
			case <-time.After(10 * time.Millisecond):
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > max {
					max = ms.HeapInuse
				}
			}
		}
	}()
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	d := h.wait(name, uploaded)
	close(stop)
	top := <-peak
	if d.GetSha256() != hex.EncodeToString(want.Sum(nil)) {
		t.Fatal("sha256 differs")
	}
	_, s, _ := h.fake.stored(d.GetId())
	if s != d.GetSha256() {
		t.Fatal("controller's sha256 differs")
	}
	growth := int64(top) - int64(base)
	t.Logf("heap in use: %d MiB before, %d MiB peak while hashing and uploading 256 MiB", base>>20, top>>20)
	// The bound holds whatever the dump's size: the uploader's two encoders
	// side by side (a zstd encoder per level in use, ≈ 4.5 MiB each, a read
	// buffer and frames), the fake controller's buffers in this process,
	// and the garbage collector's headroom over all of it.
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB for a %d MiB dump", growth>>20, size>>20)
	}
}

// value reads a counter (prometheus/testutil would pull in a module this
// repository does not require).
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestOrderKey(t *testing.T) {
	names := []string{
		"DTRACE-20261126-1405.dmp",
		"DTRACE-20261126-1405-2.dmp",
		"DTRACE-20261126-1405-10.dmp",
		"DTRACE-20261126-1406.dmp",
	}
	for i := 1; i < len(names); i++ {
		if orderKey(names[i-1]) >= orderKey(names[i]) {
			t.Errorf("%s does not sort before %s", names[i-1], names[i])
		}
	}
}

// FuzzDumpName feeds file names as a folder listing would: matching and
// ordering never panic, and a matched name sorts between the unsuffixed
// name of its minute and the largest suffix.
// stampedName is the documented DTRACE-YYYYMMDD-HHMM[-N].dmp form that
// orderKey sorts by time.
var stampedName = regexp.MustCompile(`(?i)^DTRACE-[0-9]{8}-[0-9]{4}(-[0-9]{1,4})?\.dmp$`)

func FuzzDumpName(f *testing.F) {
	for _, s := range []string{"DTRACE-20261126-1405.dmp", "DTRACE-20261126-1405-2.dmp", "dtrace-20261126-1405-0017.DMP", "x-y-z-w", "", "-", "DTRACE-1-2-x.dmp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		k := orderKey(name)
		if !strings.HasSuffix(k, "|"+name) {
			t.Fatalf("orderKey(%q) = %q loses the name", name, k)
		}
		if !IsDumpName(name) || !stampedName.MatchString(name) {
			return
		}
		head := func(k string) string { return k[:strings.LastIndex(k, "|")] }
		stamp := strings.ToUpper(name[:len("DTRACE-YYYYMMDD-HHMM")])
		lo, hi := head(orderKey(stamp+".dmp")), head(orderKey(stamp+"-9999.dmp"))
		if h := head(k); h < lo || h > hi {
			t.Fatalf("orderKey(%q) = %q, not within [%q, %q]", name, h, lo, hi)
		}
	})
}
