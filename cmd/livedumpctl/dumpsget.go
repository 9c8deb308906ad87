package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/internal/ids"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxWait bounds --wait: a dump that has not finished uploading in a day
// will not finish while someone watches.
const maxWait = 24 * time.Hour

// dumpPollInterval is how often --wait asks the controller about a dump
// still on its way. Tests shorten it.
var dumpPollInterval = 2 * time.Second

// stderrIsTerminal says whether progress may be drawn on w: only on a
// terminal, never into a file, a pipe or a CI log. Tests replace it.
var stderrIsTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

const dumpsGetLong = `Download a dump into <hostname>-<dump id>.dmp in the current directory
(--dir DIR for another directory, -f FILE for another name), and keep it only
if the SHA-256 of the whole file matches the dump's.

The bytes go into FILE.part first. If the download is interrupted, running the
same command again resumes it: the .part's bytes are hashed, the rest is asked
from the controller from that offset, and the whole file is verified. A .part
that does not verify is discarded and the dump downloaded again from the start,
once. An existing FILE is never overwritten without --force.

--capture ID fetches every dump of a capture, each to its own name; a file
that is already there and matches its dump's SHA-256 is kept and counted as
present. A summary table follows. The exit status is 1 when a dump failed
or was not fetched (still uploading, or kept hash-only on its agent: see
"dumps pull"); dumps the agent lost (aborted, truncated, failed) are listed
but do not change it.

--wait DURATION waits up to DURATION for a dump that is still being written
or uploaded, polling its state.

Progress, with an ETA, is drawn on stderr when stderr is a terminal.`

// getFlags are the flags of dumps get.
type getFlags struct {
	file, dir, capture string
	force              bool
	wait               time.Duration
}

func (a *app) dumpsGetCmd() *cobra.Command {
	var fl getFlags
	cmd := &cobra.Command{
		Use:   "get (ID | --capture ID) [-f FILE | --dir DIR] [--force] [--wait DURATION]",
		Short: "Download dumps to unique names, resuming and verifying each (-o json: print their descriptions)",
		Long:  dumpsGetLong,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf(cmd, "want one dump ID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			if err := fl.check(cmd, id); err != nil {
				return err
			}
			client, s, closeConn, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			g := &dumpGetter{a: a, client: client, s: s, fl: fl, progress: stderrIsTerminal(a.stderr)}
			if fl.wait > 0 {
				g.deadline = time.Now().Add(fl.wait)
			}
			if fl.capture != "" {
				return g.getCapture(cmd.Context(), fl.capture)
			}
			return g.getOne(cmd.Context(), id)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.file, "file", "f", "", "output `FILE` (default <hostname>-<dump id>.dmp)")
	f.StringVar(&fl.dir, "dir", "", "directory to write into (default the current directory)")
	f.StringVar(&fl.capture, "capture", "", "fetch every dump of capture `ID`")
	f.BoolVar(&fl.force, "force", false, "overwrite an existing file")
	f.DurationVar(&fl.wait, "wait", 0, "wait up to `DURATION` (at most 24h) for a dump still being written or uploaded")
	_ = cmd.MarkFlagFilename("file")
	_ = cmd.MarkFlagDirname("dir")
	return cmd
}

// check validates the command line before anything is asked of the
// controller.
func (fl *getFlags) check(cmd *cobra.Command, id string) error {
	switch {
	case id != "" && fl.capture != "":
		return usageErrorf(cmd, "give a dump ID or --capture ID, not both")
	case cmd.Flags().Changed("capture") && strings.TrimSpace(fl.capture) == "":
		return usageErrorf(cmd, "--capture: must not be empty")
	case id == "" && fl.capture == "":
		return usageErrorf(cmd, "want a dump ID or --capture ID")
	case fl.file != "" && fl.capture != "":
		return usageErrorf(cmd, "-f: names one file, but --capture fetches each dump to its own name (--dir DIR chooses the directory)")
	case fl.file != "" && fl.dir != "":
		return usageErrorf(cmd, "-f and --dir: give one of them")
	case cmd.Flags().Changed("file") && fl.file == "":
		return usageErrorf(cmd, "-f: must not be empty")
	case fl.wait < 0 || fl.wait > maxWait:
		return usageErrorf(cmd, "--wait: %s: must be between 0 and %s", fl.wait, "24h")
	}
	if id != "" {
		if err := ids.DumpID(id); err != nil {
			return usageErrorf(cmd, "ID: %v", err)
		}
	}
	if fl.capture != "" {
		if err := ids.CaptureID(fl.capture); err != nil {
			return usageErrorf(cmd, "--capture: %v", err)
		}
	}
	if fl.dir != "" {
		if st, err := os.Stat(fl.dir); err != nil || !st.IsDir() {
			return usageErrorf(cmd, "--dir: %s is not a directory", fl.dir)
		}
	}
	if fl.file != "" {
		if st, err := os.Stat(fl.file); err == nil && st.IsDir() {
			return usageErrorf(cmd, "-f: %s is a directory (--dir DIR writes into a directory)", fl.file)
		}
	}
	return nil
}

// dumpFileName is the default name of a downloaded dump:
// <hostname>-<dump id>.dmp, unique across a fleet and a capture, and safe
// as a file name on Windows and Linux whatever the agent reported as its
// hostname.
func dumpFileName(d *livedumpv1.Dump) string {
	host := safeNamePart(d.GetHostname(), 63)
	if host == "" {
		host = safeNamePart(d.GetAgentId(), 63)
	}
	if host == "" {
		host = "unknown"
	}
	return host + "-" + safeNamePart(d.GetId(), 64) + ".dmp"
}

// safeNamePart keeps letters, digits, '.', '_' and '-' of s, replaces any
// other character with '_', and drops leading dots and dashes (no hidden
// file, nothing that reads as an option), cut to max bytes.
func safeNamePart(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= max {
			break
		}
	}
	out := strings.TrimLeft(b.String(), ".-")
	if len(out) > max {
		out = out[:max]
	}
	return strings.TrimRight(out, ".")
}

// dumpGetter downloads dumps over one connection.
type dumpGetter struct {
	a        *app
	client   fleetClient
	s        settings
	fl       getFlags
	progress bool
	deadline time.Time // end of --wait; zero without it
}

// dumpStream is an open GetDump stream whose first message, the dump's
// description, has been read.
type dumpStream struct {
	st     grpc.ServerStreamingClient[livedumpv1.GetDumpResponse]
	cancel context.CancelFunc
	d      *livedumpv1.Dump
	offset int64
}

// open starts a download of dump id at offset and reads its description.
func (g *dumpGetter) open(ctx context.Context, id string, offset int64) (*dumpStream, error) {
	sctx, cancel := context.WithCancel(ctx)
	st, err := g.client.GetDump(sctx, &livedumpv1.GetDumpRequest{Id: id, Offset: offset})
	var first *livedumpv1.GetDumpResponse
	if err == nil {
		first, err = st.Recv()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	d := first.GetDump()
	switch {
	case d == nil:
		cancel()
		return nil, fmt.Errorf("dump %s: controller sent data before the dump's description", id)
	case d.GetId() != id || ids.SHA256(d.GetSha256()) != nil || d.GetSize() < 0:
		cancel()
		return nil, fmt.Errorf("dump %s: controller sent a description of dump %q with sha256 %q and size %d", id, d.GetId(), d.GetSha256(), d.GetSize())
	}
	return &dumpStream{st: st, cancel: cancel, d: d, offset: offset}, nil
}

// openWhenUploaded opens dump id at offset 0, waiting for it to be
// uploaded when --wait allows.
func (g *dumpGetter) openWhenUploaded(ctx context.Context, id string) (*dumpStream, error) {
	captureID, said := "", ""
	for {
		ds, err := g.open(ctx, id, 0)
		if status.Code(err) != codes.FailedPrecondition {
			if err != nil {
				return nil, g.rpcError(err)
			}
			return ds, nil
		}
		if g.deadline.IsZero() {
			return nil, fmt.Errorf("%w (--wait DURATION waits for a dump still uploading)", g.rpcError(err))
		}
		d, err := g.lookup(ctx, id, captureID)
		if err != nil {
			return nil, err
		}
		captureID = d.GetCaptureId()
		if !dumpOnItsWay(d.GetState()) && d.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			return nil, fmt.Errorf("dump %s: %s", id, notUploadedReason(d))
		}
		if now := time.Now(); !now.Before(g.deadline) {
			return nil, fmt.Errorf("dump %s on %s is still %s after waiting %s (--wait)", id, d.GetHostname(), progressOf(d), g.fl.wait)
		}
		if msg := fmt.Sprintf("dump %s on %s is %s", id, d.GetHostname(), dumpStateName(d.GetState())); msg != said {
			said = msg
			fmt.Fprintf(g.a.stderr, "livedumpctl: dump %s on %s is %s; waiting (--wait %s, %s left)\n", id, cell(d.GetHostname()), progressOf(d), g.fl.wait, left(g.deadline))
		}
		if err := g.sleep(ctx); err != nil {
			return nil, err
		}
	}
}

// left renders the time left until deadline, to the second (to the
// millisecond under a second).
func left(deadline time.Time) string {
	d := max(time.Until(deadline), 0)
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// sleep waits one poll interval, or until the --wait deadline.
func (g *dumpGetter) sleep(ctx context.Context) error {
	d := min(dumpPollInterval, max(time.Until(g.deadline), 0))
	select {
	case <-ctx.Done():
		return errors.New("interrupted")
	case <-time.After(d):
		return nil
	}
}

// dumpOnItsWay says whether a dump in state s will be uploaded without
// anyone's help.
func dumpOnItsWay(s livedumpv1.DumpState) bool {
	switch s {
	case livedumpv1.DumpState_DUMP_STATE_UNSPECIFIED, livedumpv1.DumpState_DUMP_STATE_WRITING,
		livedumpv1.DumpState_DUMP_STATE_HASHED, livedumpv1.DumpState_DUMP_STATE_UPLOADING:
		return true
	}
	return false
}

// dumpLost says whether the agent lost dump d: there is nothing to fetch, ever.
func dumpLost(s livedumpv1.DumpState) bool {
	switch s {
	case livedumpv1.DumpState_DUMP_STATE_FAILED, livedumpv1.DumpState_DUMP_STATE_ABORTED, livedumpv1.DumpState_DUMP_STATE_TRUNCATED:
		return true
	}
	return false
}

// notUploadedReason says why dump d, neither uploaded nor on its way,
// cannot be downloaded.
func notUploadedReason(d *livedumpv1.Dump) string {
	if d.GetState() == livedumpv1.DumpState_DUMP_STATE_HASH_ONLY {
		return fmt.Sprintf("kept hash-only on %s (livedumpctl dumps pull %s uploads it)", cell(d.GetHostname()), d.GetId())
	}
	s := dumpStateName(d.GetState()) + " on the agent, nothing to download"
	if d.GetDetail() != "" {
		s += ": " + d.GetDetail()
	}
	return s
}

// progressOf names a dump's state, with the bytes uploaded so far.
func progressOf(d *livedumpv1.Dump) string {
	s := dumpStateName(d.GetState())
	if d.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADING && d.GetSize() > 0 {
		s += fmt.Sprintf(" (%s of %s)", humanSize(d.GetUploaded()), humanSize(d.GetSize()))
	}
	return s
}

// lookup finds dump id in the controller's list: in its capture's dumps
// when the capture is known, else in all of them.
func (g *dumpGetter) lookup(ctx context.Context, id, captureID string) (*livedumpv1.Dump, error) {
	ds, err := g.list(ctx, captureID)
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		if d.GetId() == id {
			return d, nil
		}
	}
	return nil, fmt.Errorf("dump %s: no longer listed by the controller", id)
}

// list reads every page of ListDumps, each page bounded by the timeout.
func (g *dumpGetter) list(ctx context.Context, captureID string) ([]*livedumpv1.Dump, error) {
	var all []*livedumpv1.Dump
	after := ""
	for {
		pctx, cancel := context.WithTimeout(ctx, g.s.timeout)
		page, err := g.client.ListDumps(pctx, &livedumpv1.ListDumpsRequest{CaptureId: captureID, After: after})
		cancel()
		if err != nil {
			return nil, g.rpcError(err)
		}
		all = append(all, page.GetDumps()...)
		if page.GetNext() == "" {
			return all, nil
		}
		if page.GetNext() == after {
			return nil, fmt.Errorf("controller %s: the list does not advance past page token %q", g.s.controller, after)
		}
		after = page.GetNext()
	}
}

func (g *dumpGetter) rpcError(err error) error { return rpcError(err, g.s) }

// errExists refuses to overwrite a file.
func errExists(id, path string) error {
	return fmt.Errorf("dump %s: %s already exists; not overwriting it (--force replaces it)", id, path)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// getOne downloads one dump.
func (g *dumpGetter) getOne(ctx context.Context, id string) error {
	if g.fl.file != "" && !g.fl.force && exists(g.fl.file) {
		return errExists(id, g.fl.file)
	}
	ds, err := g.openWhenUploaded(ctx, id)
	if err != nil {
		return err
	}
	out := g.fl.file
	if out == "" {
		out = filepath.Join(g.fl.dir, dumpFileName(ds.d))
	}
	if !g.fl.force && exists(out) {
		ds.cancel()
		return errExists(id, out)
	}
	d, sum, err := g.download(ctx, ds, out)
	if err != nil {
		return err
	}
	if g.s.output == outputJSON {
		// The verified dump's description, header facts included
		// (dump_type, bug_check_code, os_build, declared_size).
		return writeJSON(g.a.stdout, d)
	}
	fmt.Fprintf(g.a.stdout, "%s  %s (verified)\n", sum, out)
	return nil
}

// download writes the dump that ds describes into out.part, resuming from
// the part's size, verifies the whole file and renames it to out. ds is
// closed on return.
func (g *dumpGetter) download(ctx context.Context, ds *dumpStream, out string) (*livedumpv1.Dump, string, error) {
	defer func() { ds.cancel() }()
	d := ds.d
	part := out + ".part"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("dump %s: %w", d.GetId(), err)
	}
	defer f.Close()
	h := sha256.New()
	offset, err := g.resumeFrom(f, h, d)
	if err != nil {
		return nil, "", err
	}
	if offset != ds.offset {
		ds.cancel()
		if ds, err = g.open(ctx, d.GetId(), offset); err != nil {
			return nil, "", fmt.Errorf("dump %s: resume at %d: %w", d.GetId(), offset, g.rpcError(err))
		}
		if ds.d.GetSha256() != d.GetSha256() || ds.d.GetSize() != d.GetSize() {
			return nil, "", fmt.Errorf("dump %s: the controller's description changed between two requests", d.GetId())
		}
		fmt.Fprintf(g.a.stderr, "livedumpctl: resuming %s at %s of %s\n", part, humanSize(offset), humanSize(d.GetSize()))
	}
	got, err := g.receive(ds, f, h, filepath.Base(out), offset, d.GetSize())
	if err != nil {
		return nil, "", fmt.Errorf("dump %s: download interrupted at %s of %s: %w; %s is kept: run the same command again to resume", d.GetId(), humanSize(got), humanSize(d.GetSize()), err, part)
	}
	if err := f.Sync(); err != nil {
		return nil, "", fmt.Errorf("dump %s: %w", d.GetId(), err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if got != d.GetSize() || sum != d.GetSha256() {
		f.Close()
		os.Remove(part)
		if offset > 0 {
			// The bytes kept from an earlier try were wrong (a different
			// file of the same name, a disk error): once more from 0.
			fmt.Fprintf(g.a.stderr, "livedumpctl: %s did not verify after resuming at %s; discarded, downloading dump %s again from the start\n", part, humanSize(offset), d.GetId())
			ds, err := g.open(ctx, d.GetId(), 0)
			if err != nil {
				return nil, "", g.rpcError(err)
			}
			return g.download(ctx, ds, out)
		}
		return nil, "", fmt.Errorf("dump %s: received %d bytes hashing to %s, want %d bytes with sha256 %s; nothing was kept", d.GetId(), got, sum, d.GetSize(), d.GetSha256())
	}
	if err := f.Close(); err != nil {
		return nil, "", fmt.Errorf("dump %s: %w", d.GetId(), err)
	}
	if !g.fl.force && exists(out) {
		return nil, "", fmt.Errorf("dump %s: %s appeared during the download; not overwriting it (--force replaces it; the verified download is %s)", d.GetId(), out, part)
	}
	if err := os.Rename(part, out); err != nil {
		return nil, "", fmt.Errorf("dump %s: %w", d.GetId(), err)
	}
	return d, sum, nil
}

// resumeFrom hashes what f already holds of dump d and returns the offset
// to ask for next: f's size, or 0 (f emptied) if f is longer than the dump.
func (g *dumpGetter) resumeFrom(f *os.File, h hash.Hash, d *livedumpv1.Dump) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("dump %s: %w", d.GetId(), err)
	}
	size := st.Size()
	if size > d.GetSize() {
		fmt.Fprintf(g.a.stderr, "livedumpctl: %s is larger than dump %s (%d of %d bytes); downloading again from the start\n", f.Name(), d.GetId(), size, d.GetSize())
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("dump %s: %w", d.GetId(), err)
		}
		size = 0
	}
	if size > 0 {
		if _, err := io.CopyN(h, f, size); err != nil {
			return 0, fmt.Errorf("dump %s: read %s: %w", d.GetId(), f.Name(), err)
		}
	}
	_, err = f.Seek(size, io.SeekStart)
	return size, err
}

// receive writes the stream's chunks to f and h, drawing progress on a
// terminal, and returns the offset reached.
func (g *dumpGetter) receive(ds *dumpStream, f *os.File, h hash.Hash, name string, offset, size int64) (int64, error) {
	got := offset
	var bar *progressbar.ProgressBar
	if g.progress {
		desc := name
		if offset > 0 {
			desc += " (from " + humanSize(offset) + ")"
		}
		bar = progressbar.NewOptions64(size-offset,
			progressbar.OptionSetWriter(g.a.stderr),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionShowCount(),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(g.a.stderr) }),
		)
		defer bar.Exit() //nolint:errcheck // drawing only
	}
	for {
		m, err := ds.st.Recv()
		if errors.Is(err, io.EOF) {
			if bar != nil {
				_ = bar.Finish()
			}
			return got, nil
		}
		if err != nil {
			return got, g.rpcError(err)
		}
		c := m.GetChunk()
		if got+int64(len(c)) > size {
			return got, fmt.Errorf("controller sent more than the dump's %d bytes", size)
		}
		if _, err := f.Write(c); err != nil {
			return got, err
		}
		h.Write(c)
		got += int64(len(c))
		if bar != nil {
			_ = bar.Add64(int64(len(c)))
		}
	}
}

// humanSize renders a size in IEC units without a space ("1.5GiB"), so
// that table columns stay countable with awk.
func humanSize(n int64) string {
	if n < 0 {
		n = 0
	}
	return strings.ReplaceAll(humanize.IBytes(uint64(n)), " ", "")
}

// ageMagnitudes render an age kubectl-style: 45s, 12m, 5h, 3d.
var ageMagnitudes = []humanize.RelTimeMagnitude{
	{D: time.Minute, Format: "%ds", DivBy: time.Second},
	{D: time.Hour, Format: "%dm", DivBy: time.Minute},
	{D: 48 * time.Hour, Format: "%dh", DivBy: time.Hour},
	{D: humanize.LongTime, Format: "%dd", DivBy: humanize.Day},
}

// age renders how long before now ts was ("-" when unknown).
func age(now time.Time, ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	t := ts.AsTime()
	if t.After(now) {
		t = now
	}
	return humanize.CustomRelTime(t, now, "", "", ageMagnitudes)
}

// captureResult is what became of one dump of a capture.
type captureResult struct {
	d       *livedumpv1.Dump
	file    string
	outcome string // fetched, present, not-fetched, lost, failed
	reason  string
	sum     string
}

// getCapture fetches every dump of capture id.
func (g *dumpGetter) getCapture(ctx context.Context, captureID string) error {
	done := map[string]*captureResult{}
	var order []string
	waiting := ""
	for {
		ds, err := g.list(ctx, captureID)
		if err != nil {
			return err
		}
		if len(ds) == 0 && len(order) == 0 {
			if _, err := g.client.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: captureID}); err != nil {
				return g.rpcError(err)
			}
		}
		var pending []*livedumpv1.Dump
		for _, d := range ds {
			if _, ok := done[d.GetId()]; ok {
				continue
			}
			if dumpOnItsWay(d.GetState()) {
				pending = append(pending, d)
				continue
			}
			order = append(order, d.GetId())
			done[d.GetId()] = g.fetchForCapture(ctx, d)
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
		}
		if len(pending) == 0 || g.deadline.IsZero() || !time.Now().Before(g.deadline) {
			for _, d := range pending {
				r := &captureResult{d: d, outcome: "not-fetched", reason: "still " + progressOf(d) + " (--wait DURATION waits for it)"}
				if !g.deadline.IsZero() {
					r.reason = fmt.Sprintf("still %s after waiting %s (--wait)", progressOf(d), g.fl.wait)
				}
				order = append(order, d.GetId())
				done[d.GetId()] = r
			}
			break
		}
		var names []string
		for _, d := range pending {
			names = append(names, d.GetId()+" on "+cell(d.GetHostname())+": "+progressOf(d))
		}
		if msg := strings.Join(names, ", "); msg != waiting {
			waiting = msg
			fmt.Fprintf(g.a.stderr, "livedumpctl: waiting for %d dump(s) still on their way (--wait %s, %s left): %s\n", len(pending), g.fl.wait, left(g.deadline), msg)
		}
		if err := g.sleep(ctx); err != nil {
			return err
		}
	}
	results := make([]*captureResult, 0, len(order))
	for _, id := range order {
		results = append(results, done[id])
	}
	return g.reportCapture(captureID, results)
}

// fetchForCapture fetches dump d of a capture unless its file is already
// there and verified.
func (g *dumpGetter) fetchForCapture(ctx context.Context, d *livedumpv1.Dump) *captureResult {
	r := &captureResult{d: d}
	if err := ids.DumpID(d.GetId()); err != nil {
		r.outcome, r.reason = "failed", "controller listed an invalid dump: "+err.Error()
		return r
	}
	r.file = filepath.Join(g.fl.dir, dumpFileName(d))
	if dumpLost(d.GetState()) {
		r.outcome, r.reason, r.file = "lost", notUploadedReason(d), ""
		return r
	}
	if exists(r.file) && !g.fl.force {
		sum, err := fileSHA256(r.file)
		switch {
		case err != nil:
			r.outcome, r.reason = "failed", err.Error()
		case sum == d.GetSha256():
			r.outcome, r.sum = "present", sum
		default:
			r.outcome, r.reason = "failed", fmt.Sprintf("%s already exists and does not match the dump's SHA-256; not overwriting it (--force replaces it)", r.file)
		}
		return r
	}
	if d.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		r.outcome, r.reason, r.file = "not-fetched", notUploadedReason(d), ""
		return r
	}
	ds, err := g.open(ctx, d.GetId(), 0)
	if err != nil {
		r.outcome, r.reason = "failed", g.rpcError(err).Error()
		return r
	}
	if _, r.sum, err = g.download(ctx, ds, r.file); err != nil {
		r.outcome, r.reason = "failed", err.Error()
		return r
	}
	r.outcome = "fetched"
	return r
}

// fileSHA256 hashes the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// reportCapture prints the summary of dumps get --capture and turns
// failures into the exit status.
func (g *dumpGetter) reportCapture(captureID string, results []*captureResult) error {
	count := map[string]int{}
	for _, r := range results {
		count[r.outcome]++
	}
	if g.s.output == outputJSON {
		if err := writeCaptureDumpsJSON(g.a.stdout, captureID, results); err != nil {
			return err
		}
	} else {
		if len(results) == 0 {
			fmt.Fprintf(g.a.stdout, "capture %s has no dumps\n", captureID)
			return nil
		}
		t := newTable(g.a.stdout, "DUMP", "HOSTNAME", "FILE", "SHA256", "RESULT")
		for _, r := range results {
			res := r.outcome
			switch r.outcome {
			case "fetched":
				res = "fetched (verified)"
			case "present":
				res = "already present (verified)"
			}
			if r.reason != "" {
				res += ": " + r.reason
			}
			t.row(r.d.GetId(), r.d.GetHostname(), r.file, r.sum, res)
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintf(g.a.stdout, "capture %s: %d dump(s): %d fetched, %d already present, %d not fetched, %d failed, %d lost on the agent\n",
			captureID, len(results), count["fetched"], count["present"], count["not-fetched"], count["failed"], count["lost"])
	}
	if bad := count["failed"] + count["not-fetched"]; bad > 0 {
		return fmt.Errorf("capture %s: %d of %d dump(s) not on disk: %d not fetched, %d failed (see the RESULT column)", captureID, bad, len(results), count["not-fetched"], count["failed"])
	}
	return nil
}

// writeCaptureDumpsJSON prints the results of dumps get --capture: each dump's
// description as -o json shows it everywhere, with the file and outcome.
func writeCaptureDumpsJSON(w io.Writer, captureID string, results []*captureResult) error {
	type item struct {
		Dump    json.RawMessage `json:"dump"`
		File    string          `json:"file,omitempty"`
		Outcome string          `json:"outcome"`
		Reason  string          `json:"reason,omitempty"`
	}
	doc := struct {
		CaptureID string `json:"capture_id"`
		Results   []item `json:"results"`
	}{CaptureID: captureID, Results: []item{}}
	for _, r := range results {
		b, err := jsonOptions.Marshal(r.d)
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		file := r.file
		if r.outcome != "fetched" && r.outcome != "present" {
			file = ""
		}
		doc.Results = append(doc.Results, item{Dump: b, File: file, Outcome: r.outcome, Reason: r.reason})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
