// Package retention keeps the controller's disk in check: a background
// sweep deletes dumps past their age, the oldest dumps while all dumps
// together hold more than a byte limit, events past their age or beyond a
// count (in bounded batches, so the store stays responsive), and ended
// captures with nothing left in them. It never deletes a dump being
// downloaded, on this replica or another (store.MarkDumpRead), nor one
// being uploaded here; among replicas one sweeps at a time (a lease in the
// store). Operators delete dumps and captures through the same code.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/controller/store"
)

// Defaults of a Policy.
const (
	DefaultDumpMaxAge    = 30 * 24 * time.Hour
	DefaultEventMaxAge   = 30 * 24 * time.Hour
	DefaultEventMaxCount = 10_000_000
	DefaultInterval      = 10 * time.Minute
	// DefaultMaxBytesPercent is the default dump byte limit, as a
	// percentage of the total dump quota (dumps.quota_total): the sweep
	// makes room before uploads are refused.
	DefaultMaxBytesPercent = 90
	DefaultEventBatch      = 10_000
	DefaultBatchPause      = 200 * time.Millisecond
	// UploadQuiet is how long a dump in an uploading state must have made
	// no progress before it may be deleted: an upload commits every few
	// MiB, and its chunks arrive within dumps.chunk_timeout.
	UploadQuiet = 15 * time.Minute
	// leaseName names the sweep's lease in the store.
	leaseName = "retention"
	// maxDumpsPerSweep bounds the dumps one pass looks at per rule.
	maxDumpsPerSweep = 10_000
	pageSize         = 100
)

// Errors of DeleteDump and DeleteCapture. Each is a store.ErrInUse.
var (
	ErrDownloading   error = inUse("is being downloaded")
	ErrUploading     error = inUse("is still uploading")
	ErrCaptureActive error = inUse("is active")
)

// inUse is an error that is store.ErrInUse with its own words.
type inUse string

func (e inUse) Error() string        { return string(e) }
func (e inUse) Is(target error) bool { return target == store.ErrInUse }

// Policy says what the sweep deletes. For each limit zero takes the
// default and a negative value turns it off.
type Policy struct {
	// DumpMaxAge: dumps last updated (for an uploaded dump: when its upload
	// finished) longer ago are deleted (default 30 days).
	DumpMaxAge time.Duration
	// DumpMaxBytes: while dumps together hold more bytes (as
	// store.DumpBytes counts them), uploaded dumps are deleted oldest
	// first. Zero is meant to be set by the caller (the controller uses
	// DefaultMaxBytesPercent of its total dump quota); New leaves it off.
	DumpMaxBytes int64
	// EventMaxAge: events whose time is older are deleted (default 30
	// days). A capture that ended longer ago, with no dumps and no
	// events left, is deleted with its targets.
	EventMaxAge time.Duration
	// EventMaxCount: only the newest events are kept (default 10 million).
	EventMaxCount int64
	// Interval between sweeps (default 10 minutes).
	Interval time.Duration
	// EventBatch is how many events one statement deletes (default
	// 10,000); BatchPause the pause between two batches (default 200ms; a
	// negative pause: none).
	EventBatch int
	BatchPause time.Duration
}

func (p Policy) withDefaults() Policy {
	dflt := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	dflt(&p.DumpMaxAge, DefaultDumpMaxAge)
	dflt(&p.EventMaxAge, DefaultEventMaxAge)
	dflt(&p.Interval, DefaultInterval)
	dflt(&p.BatchPause, DefaultBatchPause)
	if p.EventMaxCount == 0 {
		p.EventMaxCount = DefaultEventMaxCount
	}
	if p.EventBatch <= 0 || p.EventBatch > store.MaxEventPrune {
		p.EventBatch = DefaultEventBatch
	}
	return p
}

// Transfers says which dumps this replica is moving (dumps.Receiver).
type Transfers interface {
	Reading(id string) bool
	Uploading(id string) bool
}

// Blobs removes dump content (blobstore.Blobs).
type Blobs interface {
	Delete(ctx context.Context, sum string) error
	DiscardUpload(ctx context.Context, id string) error
}

// Config configures a Sweeper.
type Config struct {
	Store     store.Store
	Blobs     Blobs
	Transfers Transfers
	Policy    Policy
	// Holder names this replica in the sweep's lease.
	Holder  string
	Logger  *slog.Logger
	Clock   clockwork.Clock
	Metrics prometheus.Registerer
}

// Sweeper enforces the retention policy and deletes what operators ask.
type Sweeper struct {
	cfg Config
	p   Policy
	m   metrics
}

type metrics struct {
	held      prometheus.Gauge
	limit     prometheus.Gauge
	reclaimed prometheus.Counter
	deleted   *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	lastSweep prometheus.Gauge
	errors    prometheus.Counter
}

// New returns a Sweeper.
func New(cfg Config) *Sweeper {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	s := &Sweeper{cfg: cfg, p: cfg.Policy.withDefaults(), m: metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livedump_controller_retention_bytes_held",
			Help: "Bytes dumps hold (uploaded dumps and committed parts of unfinished uploads), as the last sweep counted them.", ConstLabels: prometheus.Labels{"kind": "dumps"}}),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livedump_controller_retention_limit_bytes",
			Help: "retention.dumps.max_bytes: past it the sweep deletes the oldest dumps; 0 when off.", ConstLabels: prometheus.Labels{"kind": "dumps"}}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_retention_reclaimed_bytes_total",
			Help: "Bytes of dumps deleted by the retention sweep and by operators.", ConstLabels: prometheus.Labels{"kind": "dumps"}}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_retention_deleted_total",
			Help: "Items deleted, by kind (dumps, events, captures) and reason (age, size, count, operator)."}, []string{"kind", "reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_retention_skipped_total",
			Help: "Dumps the sweep would have deleted but kept, by reason (downloading, uploading)."}, []string{"reason"}),
		lastSweep: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livedump_controller_retention_last_sweep_timestamp_seconds",
			Help: "When this replica last finished a retention sweep (0: never; replicas take turns)."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_retention_errors_total",
			Help: "Retention sweeps or deletions that failed (see the log)."}),
	}}
	for _, kr := range [][2]string{{"dumps", "age"}, {"dumps", "size"}, {"dumps", "operator"}, {"events", "age"}, {"events", "count"}, {"events", "operator"}, {"captures", "age"}, {"captures", "operator"}} {
		s.m.deleted.WithLabelValues(kr[0], kr[1])
	}
	for _, r := range []string{"downloading", "uploading"} {
		s.m.skipped.WithLabelValues(r)
	}
	s.m.limit.Set(float64(max(s.p.DumpMaxBytes, 0)))
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(s.m.held, s.m.limit, s.m.reclaimed, s.m.deleted, s.m.skipped, s.m.lastSweep, s.m.errors)
	}
	return s
}

// Policy is the policy in force, defaults filled in.
func (s *Sweeper) Policy() Policy { return s.p }

// Run sweeps every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	t := s.cfg.Clock.NewTicker(s.p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.m.errors.Inc()
			s.cfg.Logger.Warn("retention sweep", "err", err)
		}
	}
}

// Result is what one sweep did.
type Result struct {
	Swept      bool // false: another replica holds the lease
	Dumps      int
	Bytes      int64 // reclaimed
	Events     int
	Captures   int
	Kept       int // dumps kept because they are being downloaded or uploaded
	BytesAfter int64
}

// Sweep runs one pass if this replica holds (or takes) the sweep lease.
func (s *Sweeper) Sweep(ctx context.Context) (res Result, err error) {
	defer s.refreshHeld(ctx, &res)
	ok, err := s.hold(ctx)
	if err != nil || !ok {
		return res, err
	}
	res.Swept = true
	now := s.cfg.Clock.Now().UTC()
	if s.p.DumpMaxAge > 0 {
		if err := s.dumpsByAge(ctx, now, &res); err != nil {
			return res, err
		}
	}
	if s.p.DumpMaxBytes > 0 {
		if err := s.dumpsBySize(ctx, now, &res); err != nil {
			return res, err
		}
	}
	if s.p.EventMaxAge > 0 {
		n, err := s.deleteEvents(ctx, store.EventPrune{Before: now.Add(-s.p.EventMaxAge)}, "age")
		res.Events += n
		if err != nil {
			return res, err
		}
	}
	if s.p.EventMaxCount > 0 {
		upTo, err := s.cfg.Store.EventSeqBeyond(ctx, int(min(s.p.EventMaxCount, 1<<40)))
		if err != nil {
			return res, err
		}
		if upTo > 0 {
			n, err := s.deleteEvents(ctx, store.EventPrune{UpToSeq: upTo}, "count")
			res.Events += n
			if err != nil {
				return res, err
			}
		}
	}
	if s.p.EventMaxAge > 0 {
		ids, err := s.cfg.Store.EndedCaptures(ctx, now.Add(-s.p.EventMaxAge), 1000)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			if err := s.cfg.Store.DeleteCapture(ctx, id); err != nil {
				if errors.Is(err, store.ErrInUse) || errors.Is(err, store.ErrNotFound) {
					continue // it changed since it was listed
				}
				return res, err
			}
			res.Captures++
			s.m.deleted.WithLabelValues("captures", "age").Inc()
		}
	}
	s.m.lastSweep.Set(float64(s.cfg.Clock.Now().Unix()))
	if res.Dumps+res.Events+res.Captures > 0 {
		s.cfg.Logger.Info("retention sweep", "dumps", res.Dumps, "bytes", res.Bytes, "events", res.Events, "captures", res.Captures, "kept", res.Kept)
	}
	return res, nil
}

// hold takes or renews the sweep lease; a sweep renews it between steps,
// so a long sweep is not taken over.
func (s *Sweeper) hold(ctx context.Context) (bool, error) {
	ttl := max(2*s.p.Interval, 5*time.Minute)
	return s.cfg.Store.AcquireLease(ctx, leaseName, s.cfg.Holder, s.cfg.Clock.Now().UTC(), ttl)
}

func (s *Sweeper) refreshHeld(ctx context.Context, res *Result) {
	held, err := s.cfg.Store.DumpBytes(ctx, "")
	if err != nil {
		return
	}
	res.BytesAfter = held
	s.m.held.Set(float64(held))
}

// dumpsByAge deletes the dumps last updated before now-DumpMaxAge.
func (s *Sweeper) dumpsByAge(ctx context.Context, now time.Time, res *Result) error {
	q := store.DumpAgeQuery{UpdatedBefore: now.Add(-s.p.DumpMaxAge), Limit: pageSize}
	for seen := 0; seen < maxDumpsPerSweep; {
		page, err := s.cfg.Store.OldestDumps(ctx, q)
		if err != nil || len(page) == 0 {
			return err
		}
		for _, d := range page {
			if _, err := s.deleteDump(ctx, d, now, "age", res); err != nil {
				return err
			}
		}
		seen += len(page)
		last := page[len(page)-1]
		q.AfterUpdated, q.AfterID = last.Updated, last.ID
	}
	return nil
}

// dumpsBySize deletes uploaded dumps, oldest first, until the dumps hold
// at most DumpMaxBytes.
func (s *Sweeper) dumpsBySize(ctx context.Context, now time.Time, res *Result) error {
	held, err := s.cfg.Store.DumpBytes(ctx, "")
	if err != nil {
		return err
	}
	q := store.DumpAgeQuery{UploadedOnly: true, Limit: pageSize}
	for seen := 0; held > s.p.DumpMaxBytes && seen < maxDumpsPerSweep; {
		page, err := s.cfg.Store.OldestDumps(ctx, q)
		if err != nil || len(page) == 0 {
			return err
		}
		for _, d := range page {
			if held <= s.p.DumpMaxBytes {
				break
			}
			freed, err := s.deleteDump(ctx, d, now, "size", res)
			if err != nil {
				return err
			}
			held -= freed
		}
		seen += len(page)
		last := page[len(page)-1]
		q.AfterUpdated, q.AfterID = last.Updated, last.ID
	}
	if held > s.p.DumpMaxBytes {
		s.cfg.Logger.Warn("dumps hold more than retention.dumps.max_bytes after the sweep: the rest are being downloaded or uploaded",
			"held", held, "max_bytes", s.p.DumpMaxBytes)
	}
	return nil
}

// deleteDump deletes a dump the sweep chose unless it is in use, which is
// counted and skipped. It returns the bytes freed.
func (s *Sweeper) deleteDump(ctx context.Context, d store.Dump, now time.Time, reason string, res *Result) (int64, error) {
	freed, err := s.remove(ctx, d, now)
	switch {
	case errors.Is(err, ErrDownloading):
		s.m.skipped.WithLabelValues("downloading").Inc()
		res.Kept++
		return 0, nil
	case errors.Is(err, ErrUploading):
		s.m.skipped.WithLabelValues("uploading").Inc()
		res.Kept++
		return 0, nil
	case errors.Is(err, store.ErrNotFound):
		return 0, nil // deleted meanwhile
	case err != nil:
		return 0, err
	}
	res.Dumps++
	res.Bytes += freed
	s.m.deleted.WithLabelValues("dumps", reason).Inc()
	s.cfg.Logger.Info("dump deleted", "dump_id", d.ID, "agent_id", d.AgentID, "reason", reason, "bytes", freed)
	return freed, nil
}

// held is what a dump counts for in store.DumpBytes.
func held(d store.Dump) int64 {
	if d.State == store.DumpUploaded {
		return d.Size
	}
	return d.Committed
}

// remove deletes one dump: its row (refused while a download holds it,
// on any replica), then its content if nothing else names it, or its
// partial upload. It returns the bytes the dump held.
func (s *Sweeper) remove(ctx context.Context, d store.Dump, now time.Time) (int64, error) {
	if s.cfg.Transfers != nil {
		if s.cfg.Transfers.Reading(d.ID) {
			return 0, ErrDownloading
		}
		if s.cfg.Transfers.Uploading(d.ID) {
			return 0, ErrUploading
		}
	}
	if d.State != store.DumpUploaded && d.Committed > 0 && now.Sub(d.Updated) < UploadQuiet {
		return 0, ErrUploading
	}
	gone, err := s.cfg.Store.DeleteDump(ctx, d.ID, now)
	if errors.Is(err, store.ErrInUse) {
		return 0, ErrDownloading
	}
	if err != nil {
		return 0, err
	}
	freed := held(gone)
	s.m.reclaimed.Add(float64(freed))
	if gone.State != store.DumpUploaded {
		if err := s.cfg.Blobs.DiscardUpload(ctx, gone.ID); err != nil {
			s.cfg.Logger.Warn("discard the partial upload of a deleted dump", "dump_id", gone.ID, "err", err)
		}
	}
	if gone.SHA256 == "" || gone.State != store.DumpUploaded {
		return freed, nil
	}
	ref, err := s.cfg.Store.BlobReferenced(ctx, gone.SHA256)
	if err == nil && !ref {
		err = s.cfg.Blobs.Delete(ctx, gone.SHA256)
	}
	if err != nil {
		// The row is gone: the content is left behind, logged to remove by hand.
		s.m.errors.Inc()
		s.cfg.Logger.Error("dump deleted but its content was not", "dump_id", gone.ID, "sha256", gone.SHA256, "err", err)
	}
	return freed, nil
}

// deleteEvents deletes the events p selects in batches of EventBatch,
// pausing between batches and renewing the lease, until a batch comes
// back short.
func (s *Sweeper) deleteEvents(ctx context.Context, p store.EventPrune, reason string) (int, error) {
	p.Limit = s.p.EventBatch
	total := 0
	for {
		n, err := s.cfg.Store.DeleteEvents(ctx, p)
		total += n
		s.m.deleted.WithLabelValues("events", reason).Add(float64(n))
		if err != nil || n < p.Limit {
			return total, err
		}
		if s.p.BatchPause > 0 {
			select {
			case <-ctx.Done():
				return total, ctx.Err()
			case <-s.cfg.Clock.After(s.p.BatchPause):
			}
		}
		if reason != "operator" {
			if ok, err := s.hold(ctx); err != nil || !ok {
				return total, err // another replica took over
			}
		}
	}
}

// DeleteDump deletes one dump as an operator asked: ErrDownloading while
// a download of it is under way on any replica, ErrUploading while it is
// being uploaded, store.ErrNotFound if there is none.
func (s *Sweeper) DeleteDump(ctx context.Context, id string) (store.Dump, error) {
	d, err := s.cfg.Store.GetDump(ctx, id)
	if err != nil {
		return store.Dump{}, err
	}
	if _, err := s.remove(ctx, d, s.cfg.Clock.Now().UTC()); err != nil {
		return d, err
	}
	s.m.deleted.WithLabelValues("dumps", "operator").Inc()
	return d, nil
}

// CaptureDeletion is what DeleteCapture deleted.
type CaptureDeletion struct {
	Dumps  int
	Bytes  int64
	Events int
}

// DeleteCapture deletes an ended capture as an operator asked: its dumps
// (content included), its events in batches, then the capture and its
// targets. ErrCaptureActive while it runs; a dump being downloaded or
// uploaded stops it with that error, after the dumps deleted before it
// (the capture is kept; deleting again finishes the job).
func (s *Sweeper) DeleteCapture(ctx context.Context, id string) (CaptureDeletion, error) {
	var del CaptureDeletion
	c, err := s.cfg.Store.GetCapture(ctx, id)
	if err != nil {
		return del, err
	}
	if c.State == "active" {
		return del, ErrCaptureActive
	}
	ds, err := s.cfg.Store.ListDumps(ctx, id)
	if err != nil {
		return del, err
	}
	now := s.cfg.Clock.Now().UTC()
	// Refuse before deleting anything when this replica sees a transfer.
	for _, d := range ds {
		if s.cfg.Transfers != nil && s.cfg.Transfers.Reading(d.ID) {
			return del, fmt.Errorf("dump %s %w", d.ID, ErrDownloading)
		}
	}
	for _, d := range ds {
		freed, err := s.remove(ctx, d, now)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return del, fmt.Errorf("dump %s %w (deleted %d of the capture's %d dumps)", d.ID, err, del.Dumps, len(ds))
		}
		del.Dumps++
		del.Bytes += freed
		s.m.deleted.WithLabelValues("dumps", "operator").Inc()
	}
	if del.Events, err = s.deleteEvents(ctx, store.EventPrune{CaptureID: id}, "operator"); err != nil {
		return del, err
	}
	if err := s.cfg.Store.DeleteCapture(ctx, id); err != nil {
		return del, err
	}
	s.m.deleted.WithLabelValues("captures", "operator").Inc()
	return del, nil
}
