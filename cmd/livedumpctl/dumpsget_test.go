package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/internal/ids"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fixtureDump is a dump the fake controller serves with content.
type fixtureDump struct {
	d       *livedumpv1.Dump
	content []byte
	// uploadAfter: the dump is on its way until the fake has answered
	// this many ListDumps calls, then uploaded.
	uploadAfter int
	// cutAfter: the next download breaks after this many bytes of the
	// file (once).
	cutAfter int64
}

// dumpFixture is what the fake serves for dumps get.
type dumpFixture struct {
	mu      sync.Mutex
	dumps   []*fixtureDump
	offsets []int64 // the offset of every GetDump, in order
	polls   int
}

// dumpFixtures holds each fake controller's dump fixture (kept beside the
// fake rather than in it, so that the fake's struct stays as it is).
var dumpFixtures sync.Map // *fakeFleet -> *dumpFixture

// serveDumps makes the fake list and serve these dumps instead of its
// canned list.
func (f *fakeFleet) serveDumps(t *testing.T, dumps ...*fixtureDump) *dumpFixture {
	fx := &dumpFixture{dumps: dumps}
	dumpFixtures.Store(f, fx)
	t.Cleanup(func() { dumpFixtures.Delete(f) })
	return fx
}

func (fx *dumpFixture) requestedOffsets() []int64 {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return slices.Clone(fx.offsets)
}

// listedDumps is what the fake's ListDumps lists: the fixture's dumps, or
// the canned ones, of one capture or all.
func (f *fakeFleet) listedDumps(captureID string) []*livedumpv1.Dump {
	var ds []*livedumpv1.Dump
	if v, ok := dumpFixtures.Load(f); ok {
		fx := v.(*dumpFixture)
		fx.mu.Lock()
		fx.polls++
		for _, fd := range fx.dumps {
			if fd.uploadAfter > 0 && fx.polls >= fd.uploadAfter {
				fd.d.State, fd.d.Uploaded = livedumpv1.DumpState_DUMP_STATE_UPLOADED, fd.d.Size
			}
			ds = append(ds, cloneDump(fd.d))
		}
		fx.mu.Unlock()
	} else {
		ds = f.dumps()
	}
	if captureID == "" {
		return ds
	}
	var out []*livedumpv1.Dump
	for _, d := range ds {
		if d.GetCaptureId() == captureID {
			out = append(out, d)
		}
	}
	return out
}

func cloneDump(d *livedumpv1.Dump) *livedumpv1.Dump {
	return proto.Clone(d).(*livedumpv1.Dump)
}

// GetDump serves a fixture dump from the requested offset, in 1000-byte
// chunks, as the controller does (description first; FailedPrecondition
// for a dump not uploaded).
func (f *fakeFleet) GetDump(req *livedumpv1.GetDumpRequest, stream grpc.ServerStreamingServer[livedumpv1.GetDumpResponse]) error {
	if err := f.record(stream.Context(), "GetDump", req); err != nil {
		return err
	}
	v, ok := dumpFixtures.Load(f)
	if !ok {
		return status.Errorf(codes.NotFound, "dump %s not found", req.GetId())
	}
	fx := v.(*dumpFixture)
	fx.mu.Lock()
	fx.offsets = append(fx.offsets, req.GetOffset())
	var fd *fixtureDump
	for _, x := range fx.dumps {
		if x.d.GetId() == req.GetId() {
			fd = x
		}
	}
	if fd == nil {
		fx.mu.Unlock()
		return status.Errorf(codes.NotFound, "dump %s not found", req.GetId())
	}
	d, content, cut := cloneDump(fd.d), fd.content, fd.cutAfter
	fd.cutAfter = 0
	fx.mu.Unlock()
	if d.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		return status.Errorf(codes.FailedPrecondition, "dump %s is %s, not uploaded", d.GetId(), dumpStateName(d.GetState()))
	}
	if req.GetOffset() < 0 || req.GetOffset() > d.GetSize() {
		return status.Errorf(codes.InvalidArgument, "offset: must be between 0 and %d", d.GetSize())
	}
	if err := stream.Send(&livedumpv1.GetDumpResponse{Msg: &livedumpv1.GetDumpResponse_Dump{Dump: d}}); err != nil {
		return err
	}
	for off := req.GetOffset(); off < int64(len(content)); {
		if cut > 0 && off >= cut {
			return status.Error(codes.Unavailable, "connection reset")
		}
		end := min(off+1000, int64(len(content)))
		if cut > 0 {
			end = min(end, cut)
		}
		if err := stream.Send(&livedumpv1.GetDumpResponse{Msg: &livedumpv1.GetDumpResponse_Chunk{Chunk: content[off:end]}}); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// newFixtureDump is an uploaded dump of size bytes of random content.
func newFixtureDump(id, host, capture string, size int) *fixtureDump {
	content := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), uint64(len(id)+len(host))))
	for i := range content {
		content[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(content)
	return &fixtureDump{content: content, d: &livedumpv1.Dump{
		Id: id, AgentId: strings.ToLower(host), Hostname: host, CaptureId: capture, FileName: "DTRACE-20261126-1405.dmp",
		Size: int64(size), Sha256: hex.EncodeToString(sum[:]), State: livedumpv1.DumpState_DUMP_STATE_UPLOADED,
		Uploaded: int64(size), Written: ts(time.Now().Add(-time.Hour)),
	}}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fastPoll(t *testing.T) {
	old := dumpPollInterval
	dumpPollInterval = 10 * time.Millisecond
	t.Cleanup(func() { dumpPollInterval = old })
}

// TestDumpFileNameIsUniqueAndSafe: <hostname>-<dump id>.dmp, whatever the
// agent called itself.
func TestDumpFileNameIsUniqueAndSafe(t *testing.T) {
	for _, tc := range []struct {
		host, agent, id, want string
	}{
		{"WS-0001", "a1", "0123456789abcdef", "WS-0001-0123456789abcdef.dmp"},
		{"../../etc/passwd", "a1", "0123456789abcdef", "_.._etc_passwd-0123456789abcdef.dmp"},
		{`C:\Windows\x`, "a1", "0123456789abcdef", "C__Windows_x-0123456789abcdef.dmp"},
		{"ws 01\x1b[31m\n", "a1", "0123456789abcdef", "ws_01__31m_-0123456789abcdef.dmp"},
		{"-rf", "a1", "0123456789abcdef", "rf-0123456789abcdef.dmp"},
		{"", "agent-7", "0123456789abcdef", "agent-7-0123456789abcdef.dmp"},
		{"", "", "0123456789abcdef", "unknown-0123456789abcdef.dmp"},
		{"ÉCOLE-PC", "a1", "0123456789abcdef", "_COLE-PC-0123456789abcdef.dmp"},
		{strings.Repeat("h", 300), "a1", "0123456789abcdef", strings.Repeat("h", 63) + "-0123456789abcdef.dmp"},
	} {
		got := dumpFileName(&livedumpv1.Dump{Hostname: tc.host, AgentId: tc.agent, Id: tc.id})
		if got != tc.want {
			t.Errorf("host %q: %q, want %q", tc.host, got, tc.want)
		}
		if err := ids.FileName(got); err != nil || filepath.Base(got) != got {
			t.Errorf("host %q: %q is not a plain file name: %v", tc.host, got, err)
		}
	}
	a := dumpFileName(&livedumpv1.Dump{Hostname: "WS-0001", Id: "00000000000000aa"})
	b := dumpFileName(&livedumpv1.Dump{Hostname: "WS-0001", Id: "00000000000000bb"})
	if a == b {
		t.Errorf("two dumps of one host share the name %s", a)
	}
}

// TestDumpsGetNeverOverwrites: the default name, a refusal naming the file
// and --force, and --force replacing it.
func TestDumpsGetNeverOverwrites(t *testing.T) {
	tc := startController(t)
	fd := newFixtureDump("0123456789abcdef", "WS-0001", "c-1", 12345)
	tc.fake.serveDumps(t, fd)
	t.Chdir(t.TempDir())
	const name = "WS-0001-0123456789abcdef.dmp"

	code, stdout, stderr := runCLI(t, "dumps", "get", "0123456789abcdef")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if want := fd.d.GetSha256() + "  " + name + " (verified)\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if !bytes.Equal(readFile(t, name), fd.content) {
		t.Fatal("downloaded content differs")
	}
	if exists(name + ".part") {
		t.Error(".part left behind")
	}

	writeFile(t, name, "an analyst's notes")
	code, stdout, stderr = runCLI(t, "dumps", "get", "0123456789abcdef")
	wantOneLineError(t, code, stdout, stderr, "livedumpctl: dump 0123456789abcdef: WS-0001-0123456789abcdef.dmp already exists; not overwriting it (--force replaces it)")
	if code != exitError {
		t.Errorf("exit %d, want %d", code, exitError)
	}
	if string(readFile(t, name)) != "an analyst's notes" {
		t.Fatal("the existing file was overwritten")
	}
	// -f names the file: refused before anything is downloaded.
	tc.fake.reset()
	code, stdout, stderr = runCLI(t, "dumps", "get", "0123456789abcdef", "-f", name)
	wantOneLineError(t, code, stdout, stderr, "already exists", "--force")
	if n := len(tc.fake.received()); n != 0 {
		t.Errorf("-f on an existing file still made %d calls", n)
	}

	if code, _, stderr := runCLI(t, "dumps", "get", "0123456789abcdef", "--force"); code != 0 {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, name), fd.content) {
		t.Fatal("--force did not replace the file")
	}
}

// TestDumpsGetResumesAPartialDownload: an interrupted download keeps its
// .part; the next run asks for the rest from the .part's size and
// verifies the whole file.
func TestDumpsGetResumesAPartialDownload(t *testing.T) {
	tc := startController(t)
	fd := newFixtureDump("0123456789abcdef", "WS-0001", "c-1", 12345)
	fd.cutAfter = 5000
	fx := tc.fake.serveDumps(t, fd)
	dir := t.TempDir()
	name := filepath.Join(dir, "WS-0001-0123456789abcdef.dmp")

	code, stdout, stderr := runCLI(t, "dumps", "get", "0123456789abcdef", "--dir", dir)
	wantOneLineError(t, code, stdout, stderr, "download interrupted at 4.9KiB of 12KiB", "connection reset", name+".part is kept: run the same command again to resume")
	if got := readFile(t, name+".part"); !bytes.Equal(got, fd.content[:5000]) {
		t.Fatalf(".part holds %d bytes, want the first 5000", len(got))
	}
	if exists(name) {
		t.Fatal("a partial download took the dump's name")
	}

	code, stdout, stderr = runCLI(t, "dumps", "get", "0123456789abcdef", "--dir", dir)
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "resuming "+name+".part at 4.9KiB of 12KiB") {
		t.Errorf("stderr %q does not say it resumes", stderr)
	}
	if !strings.HasSuffix(stdout, name+" (verified)\n") || !bytes.Equal(readFile(t, name), fd.content) {
		t.Fatalf("resumed download: %q", stdout)
	}
	// First try from 0; second: the description at 0, then the rest at 5000.
	if got, want := fx.requestedOffsets(), []int64{0, 0, 5000}; !slices.Equal(got, want) {
		t.Errorf("offsets requested %v, want %v", got, want)
	}
}

// TestDumpsGetRestartsACorruptPart: a .part whose bytes are not the dump's
// fails the whole-file check and is downloaded again from 0; a .part
// longer than the dump is not resumed at all.
func TestDumpsGetRestartsACorruptPart(t *testing.T) {
	tc := startController(t)
	fd := newFixtureDump("0123456789abcdef", "WS-0001", "c-1", 12345)
	fx := tc.fake.serveDumps(t, fd)
	t.Chdir(t.TempDir())
	const name = "WS-0001-0123456789abcdef.dmp"

	bad := slices.Clone(fd.content[:4000])
	bad[100] ^= 0xff
	writeFile(t, name+".part", string(bad))
	code, _, stderr := runCLI(t, "dumps", "get", "0123456789abcdef")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, name+".part did not verify after resuming at 3.9KiB; discarded, downloading dump 0123456789abcdef again from the start") {
		t.Errorf("stderr %q", stderr)
	}
	if !bytes.Equal(readFile(t, name), fd.content) {
		t.Fatal("content differs")
	}
	if got, want := fx.requestedOffsets(), []int64{0, 4000, 0}; !slices.Equal(got, want) {
		t.Errorf("offsets %v, want %v", got, want)
	}

	os.Remove(name)
	writeFile(t, name+".part", string(fd.content)+"trailing junk")
	code, _, stderr = runCLI(t, "dumps", "get", "0123456789abcdef")
	if code != 0 || !strings.Contains(stderr, "is larger than dump 0123456789abcdef") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, name), fd.content) {
		t.Fatal("content differs")
	}
}

// TestDumpsGetWaitsForAnUpload: --wait polls until the dump is uploaded;
// it gives up at the bound; without it, the refusal says --wait.
func TestDumpsGetWaitsForAnUpload(t *testing.T) {
	fastPoll(t)
	tc := startController(t)
	fd := newFixtureDump("0123456789abcdef", "WS-0001", "c-1", 3000)
	fd.d.State, fd.d.Uploaded, fd.uploadAfter = livedumpv1.DumpState_DUMP_STATE_UPLOADING, 1000, 3
	tc.fake.serveDumps(t, fd)
	t.Chdir(t.TempDir())

	code, stdout, stderr := runCLI(t, "dumps", "get", "0123456789abcdef")
	wantOneLineError(t, code, stdout, stderr, "failed precondition: dump 0123456789abcdef is uploading, not uploaded (--wait DURATION waits for a dump still uploading)")

	code, stdout, stderr = runCLI(t, "dumps", "get", "0123456789abcdef", "--wait", "10s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "livedumpctl: dump 0123456789abcdef on WS-0001 is uploading (1000B of 2.9KiB); waiting (--wait 10s, 10s left)") {
		t.Errorf("stderr %q", stderr)
	}
	if !strings.Contains(stdout, "(verified)") {
		t.Errorf("stdout %q", stdout)
	}

	fd2 := newFixtureDump("00000000000000aa", "WS-0002", "c-1", 3000)
	fd2.d.State, fd2.uploadAfter = livedumpv1.DumpState_DUMP_STATE_WRITING, 1<<30
	hashOnly := newFixtureDump("00000000000000bb", "WS-0002", "c-1", 3000)
	hashOnly.d.State = livedumpv1.DumpState_DUMP_STATE_HASH_ONLY
	tc.fake.serveDumps(t, fd2, hashOnly)
	start := time.Now()
	code, stdout, stderr = runCLI(t, "dumps", "get", "00000000000000aa", "--wait", "200ms")
	// What it waits for, then why it stopped.
	if !strings.HasPrefix(stderr, "livedumpctl: dump 00000000000000aa on WS-0002 is writing; waiting (--wait 200ms, ") {
		t.Errorf("stderr %q", stderr)
	}
	lines := strings.SplitAfter(stderr, "\n")
	wantOneLineError(t, code, stdout, lines[len(lines)-2], "dump 00000000000000aa on WS-0002 is still writing after waiting 200ms (--wait)")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("--wait 200ms took %s", took)
	}
	code, stdout, stderr = runCLI(t, "dumps", "get", "00000000000000bb", "--wait", "1m")
	wantOneLineError(t, code, stdout, stderr, "dump 00000000000000bb: kept hash-only on WS-0002 (livedumpctl dumps pull 00000000000000bb uploads it)")
}

// TestDumpsGetCapture fetches every dump of a capture to its own name,
// keeps one already there, reports those it cannot fetch, and exits 1 when
// a dump that could be fetched is missing.
func TestDumpsGetCapture(t *testing.T) {
	fastPoll(t)
	tc := startController(t)
	a := newFixtureDump("000000000000000a", "WS-0001", "c-1", 2500)
	b := newFixtureDump("000000000000000b", "WS-0002", "c-1", 3500)
	c := newFixtureDump("000000000000000c", "WS-0003", "c-1", 100)
	c.d.State = livedumpv1.DumpState_DUMP_STATE_HASH_ONLY
	d := newFixtureDump("000000000000000d", "WS-0003", "c-1", 100)
	d.d.State, d.d.Detail = livedumpv1.DumpState_DUMP_STATE_ABORTED, "Windows aborted the dump"
	other := newFixtureDump("000000000000000e", "WS-0001", "c-2", 100)
	tc.fake.serveDumps(t, a, b, c, d, other)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "WS-0001-000000000000000a.dmp"), string(a.content))

	code, stdout, stderr := runCLI(t, "dumps", "get", "--capture", "c-1", "--dir", dir)
	if code != exitError {
		t.Fatalf("exit %d, want 1 (a hash-only dump was not fetched): %s", code, stderr)
	}
	if want := "livedumpctl: capture c-1: 1 of 4 dump(s) not on disk: 1 not fetched, 0 failed (see the RESULT column)\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	for _, want := range []string{
		"000000000000000a  WS-0001   " + filepath.Join(dir, "WS-0001-000000000000000a.dmp") + "  " + a.d.GetSha256() + "  already present (verified)\n",
		"000000000000000b  WS-0002   " + filepath.Join(dir, "WS-0002-000000000000000b.dmp") + "  " + b.d.GetSha256() + "  fetched (verified)\n",
		"not-fetched: kept hash-only on WS-0003 (livedumpctl dumps pull 000000000000000c uploads it)",
		"lost: aborted on the agent, nothing to download: Windows aborted the dump",
		"capture c-1: 4 dump(s): 1 fetched, 1 already present, 1 not fetched, 0 failed, 1 lost on the agent",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "WS-0002-000000000000000b.dmp")), b.content) {
		t.Error("b's content differs")
	}
	if exists(filepath.Join(dir, "WS-0001-000000000000000e.dmp")) {
		t.Error("a dump of another capture was fetched")
	}

	// Once the hash-only dump is pulled (on its way, then uploaded),
	// --wait fetches it and the capture is complete.
	c.d.State, c.d.Uploaded, c.uploadAfter = livedumpv1.DumpState_DUMP_STATE_UPLOADING, 40, 3
	tc.fake.serveDumps(t, a, b, c, d)
	code, stdout, stderr = runCLI(t, "dumps", "get", "--capture", "c-1", "--dir", dir, "--wait", "10s", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc struct {
		CaptureID string `json:"capture_id"`
		Results   []struct {
			Dump    struct{ ID string }
			File    string
			Outcome string
		}
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("-o json: %v\n%s", err, stdout)
	}
	outcomes := map[string]string{}
	for _, r := range doc.Results {
		outcomes[r.Dump.ID] = r.Outcome
	}
	want := map[string]string{"000000000000000a": "present", "000000000000000b": "present", "000000000000000c": "fetched", "000000000000000d": "lost"}
	if doc.CaptureID != "c-1" || !mapsEqual(outcomes, want) {
		t.Errorf("outcomes %v, want %v", outcomes, want)
	}
	if !strings.Contains(stderr, "livedumpctl: waiting for 1 dump(s) still on their way (--wait 10s, 10s left): 000000000000000c on WS-0003: uploading (40B of 100B)") {
		t.Errorf("stderr does not say it waits: %q", stderr)
	}

	// A capture that does not exist is an error, not an empty success.
	code, stdout, stderr = runCLI(t, "dumps", "get", "--capture", "c-404")
	wantOneLineError(t, code, stdout, stderr, "not found: capture c-404 not found")
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestDumpsGetUsageErrors: bad command lines exit 2 naming the flag.
func TestDumpsGetUsageErrors(t *testing.T) {
	startController(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "want a dump ID or --capture ID"},
		{[]string{"0123456789abcdef", "--capture", "c-1"}, "give a dump ID or --capture ID, not both"},
		{[]string{"0123456789abcdef", "fedcba9876543210"}, "want one dump ID, got 2 arguments"},
		{[]string{"--capture", "c-1", "-f", "x.dmp"}, "-f: names one file, but --capture fetches each dump to its own name"},
		{[]string{"0123456789abcdef", "-f", "x.dmp", "--dir", dir}, "-f and --dir: give one of them"},
		{[]string{"0123456789abcdef", "--wait", "-1s"}, "--wait: -1s: must be between 0 and 24h"},
		{[]string{"0123456789abcdef", "--wait", "25h"}, "--wait: 25h0m0s: must be between 0 and 24h"},
		{[]string{"0123456789abcdef", "--wait", "soon"}, `invalid argument "soon" for "--wait"`},
		{[]string{"XYZ"}, `ID: dump_id "XYZ": want 8 to 64 lower-case hex digits`},
		{[]string{"--capture", "C 1"}, `--capture: capture_id "C 1"`},
		{[]string{"0123456789abcdef", "--dir", filepath.Join(dir, "nope")}, "--dir: " + filepath.Join(dir, "nope") + " is not a directory"},
		{[]string{"0123456789abcdef", "-f", dir}, "-f: " + dir + " is a directory"},
	} {
		code, stdout, stderr := runCLI(t, append([]string{"dumps", "get"}, tc.args...)...)
		wantOneLineError(t, code, stdout, stderr, tc.want)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tc.args, code, exitUsage)
		}
	}
}

// TestDumpsGetProgressOnlyOnATerminal: no progress in a pipe; a bar with
// an ETA on a terminal.
func TestDumpsGetProgressOnlyOnATerminal(t *testing.T) {
	tc := startController(t)
	tc.fake.serveDumps(t, newFixtureDump("0123456789abcdef", "WS-0001", "c-1", 50000))
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "dumps", "get", "0123456789abcdef", "--dir", dir)
	if code != 0 || stderr != "" {
		t.Fatalf("not a terminal: exit %d, stderr %q", code, stderr)
	}
	old := stderrIsTerminal
	stderrIsTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { stderrIsTerminal = old })
	code, _, stderr = runCLI(t, "dumps", "get", "0123456789abcdef", "--dir", dir, "--force")
	if code != 0 || !strings.Contains(stderr, "WS-0001-0123456789abcdef.dmp") || !strings.Contains(stderr, "100%") || !strings.Contains(stderr, "KiB") {
		t.Fatalf("terminal: exit %d, stderr %q", code, stderr)
	}
}

// TestDumpsListHumanizesSizeAndAge: SIZE and AGE for people; -o json keeps
// the exact numbers and times.
func TestDumpsListHumanizesSizeAndAge(t *testing.T) {
	startController(t)
	out := runOK(t, "dumps", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.Contains(lines[0], "SIZE") || !strings.Contains(lines[0], "AGE") {
		t.Fatalf("header %q", lines[0])
	}
	for _, want := range []string{"1.0GiB", "3.0GiB", " 1h", " 4h"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, l := range lines {
		if n := len(strings.Fields(l)); n != 8 {
			t.Errorf("%d columns in %q, want 8", n, l)
		}
	}
	js := runOK(t, "dumps", "list", "-o", "json")
	if !strings.Contains(js, `"size": "1073741824"`) || !strings.Contains(js, `"written": "`) {
		t.Errorf("-o json changed:\n%s", js)
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {45 * time.Second, "45s"}, {12 * time.Minute, "12m"}, {5 * time.Hour, "5h"},
		{47 * time.Hour, "47h"}, {72 * time.Hour, "3d"}, {-time.Hour, "0s"},
	} {
		if got := age(now, ts(now.Add(-tc.ago))); got != tc.want {
			t.Errorf("%s ago: %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := age(now, nil); got != "" {
		t.Errorf("nil: %q", got)
	}
}
