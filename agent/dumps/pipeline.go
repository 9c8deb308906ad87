package dumps

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// chunk is one upload chunk on its way through the pipeline.
type chunk struct {
	n     int
	raw   []byte // a pool buffer, returned once encoded
	level level
	probe bool // also encode at level+1, to measure what it would save
	frame []byte
	err   error
	done  chan struct{} // closed when frame or err is set
}

// pipeline reads a dump and compresses it ahead of the sender: one reader
// goroutine, a few encoder goroutines each compressing a whole chunk into
// its own frame, and the chunks handed to the sender in file order. Memory
// is bounded by the encoders, not the dump: one read buffer per encoder,
// about 2×encoders+1 frames (their buffers reused), and per encoder
// goroutine one zstd encoder per level in use and a scratch frame for
// probes.
type pipeline struct {
	ctx    context.Context
	order  chan *chunk // chunks in file order
	frames chan []byte // frame buffers the sender is done with
	ad     *adapter
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startPipeline starts reading [from, size) of f. The caller reads chunks
// with next and calls stop when done.
func (m *Manager) startPipeline(ctx context.Context, f io.Reader, from, size int64) *pipeline {
	ctx, cancel := context.WithCancel(ctx)
	workers := len(m.encoders)
	p := &pipeline{ctx: ctx, order: make(chan *chunk, workers), frames: make(chan []byte, workers), ad: newAdapter(), cancel: cancel}
	pool := make(chan []byte, workers)
	for range workers {
		pool <- nil // allocated on first use: a small dump needs no more than one
	}
	work := make(chan *chunk)
	for _, enc := range m.encoders {
		p.wg.Go(func() {
			for {
				var c *chunk
				select {
				case c = <-work:
				case <-ctx.Done():
					return
				}
				var dst []byte
				select {
				case dst = <-p.frames:
				default:
				}
				c.frame, c.err = encodeWithProbe(enc, p.ad, c, dst)
				pool <- c.raw
				c.raw = nil
				close(c.done)
			}
		})
	}
	p.wg.Go(func() {
		defer close(p.order)
		for pos := from; pos < size; {
			var buf []byte
			select {
			case buf = <-pool:
			case <-ctx.Done():
				return
			}
			if buf == nil {
				buf = make([]byte, m.cfg.ChunkSize)
			}
			n := int(min(int64(len(buf)), size-pos))
			c := &chunk{n: n, raw: buf[:n], done: make(chan struct{})}
			if _, err := io.ReadFull(f, c.raw); err != nil {
				c.err = permanent(fmt.Sprintf("the file shrank while being uploaded (read at %d: %v)", pos, err), err)
				close(c.done)
				select {
				case p.order <- c:
				case <-ctx.Done():
				}
				return
			}
			c.level, c.probe = p.ad.next()
			select {
			case p.order <- c:
			case <-ctx.Done():
				return
			}
			select {
			case work <- c:
			case <-ctx.Done():
				return
			}
			pos += int64(n)
		}
	})
	return p
}

// next returns the next chunk, encoded, or false when the pipeline ended
// (its context ended). The time it waits counts as waiting for encoders.
func (p *pipeline) next() (*chunk, bool) {
	start := time.Now()
	defer func() { p.ad.waitedEncoders(time.Since(start)) }()
	c, ok := <-p.order
	if !ok {
		return nil, false
	}
	select {
	case <-c.done:
		return c, true
	case <-p.ctx.Done():
		return nil, false
	}
}

// sent takes back the frame of a chunk sent. grpc-go marshals a message
// into its own buffer before SendMsg returns (the proto codec copies bytes
// fields), and the agent installs no stats handler or binary logger that
// could look at a message later, so the frame's buffer is reused rather
// than left to the garbage collector: 1 MiB per chunk at hundreds of MiB/s
// made the heap swing by tens of MiB.
func (p *pipeline) sent(c *chunk) {
	select {
	case p.frames <- c.frame[:0]:
	default:
	}
	c.frame = nil
}

// stop ends the pipeline's goroutines and waits for them (the reader no
// longer touches the file once stop returns).
func (p *pipeline) stop() {
	p.cancel()
	p.wg.Wait()
}

// encodeWithProbe encodes c at its level and, for a probe, at the next
// level too, tells the adapter what the next level saved, and returns the
// smaller frame (both are valid).
func encodeWithProbe(enc *chunkEncoder, ad *adapter, c *chunk, dst []byte) ([]byte, error) {
	frame, err := enc.encode(c.level, c.raw, dst)
	if err != nil || !c.probe || c.level+1 >= numLevels {
		return frame, err
	}
	better, err := enc.encode(c.level+1, c.raw, enc.scratch)
	if err != nil {
		return frame, nil
	}
	ad.probed(c.level, len(frame), len(better))
	if len(better) < len(frame) {
		frame, better = better, frame
	}
	enc.scratch = better[:0]
	return frame, nil
}

// Adapter tuning.
const (
	// adaptChunks is how many chunks the adapter measures between
	// decisions.
	adaptChunks = 8
	// probeEvery: while the link is the bottleneck, one chunk in
	// probeEvery is also encoded at the next level.
	probeEvery = 4
	// minGain is how much smaller the next level must make the frames
	// (raw/wire ratio) before the uploader moves up to it.
	minGain = 1.10
)

// adapter picks the compression level from what the sender measures, as
// `zstd --adapt` does: when the sender waits for the encoders more than for
// the link (the link is faster than compression), the level goes down; when
// it waits for the link, and probes show that the next level would make
// the frames at least minGain smaller, it goes up. On a fast link (a LAN,
// loopback) dumps are framed nearly for free with their zero pages cut
// out; on a slow one (a WAN, or upload_bytes_per_sec) they are compressed.
type adapter struct {
	mu        sync.Mutex
	lvl       level
	issued    int // chunks given a level
	counted   int // chunks sent since the last decision
	encWait   time.Duration
	linkWait  time.Duration
	linkBound bool
	probeAt   int64 // wire bytes of probed chunks at lvl
	probeUp   int64 // ... and at lvl+1
	changes   int
}

func newAdapter() *adapter { return &adapter{lvl: startLevel} }

func (a *adapter) level() level {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lvl
}

// next returns the level of the next chunk read and whether to probe.
func (a *adapter) next() (level, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.issued++
	return a.lvl, a.linkBound && a.lvl+1 < numLevels && a.issued%probeEvery == 0
}

func (a *adapter) waitedEncoders(d time.Duration) {
	a.mu.Lock()
	a.encWait += d
	a.mu.Unlock()
}

func (a *adapter) probed(at level, wire, up int) {
	a.mu.Lock()
	if at == a.lvl {
		a.probeAt += int64(wire)
		a.probeUp += int64(up)
	}
	a.mu.Unlock()
}

// sent records a chunk sent after waiting d for the link (flow control and
// the bandwidth limit), and decides every adaptChunks chunks.
func (a *adapter) sent(_ *chunk, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.linkWait += d
	if a.counted++; a.counted < adaptChunks {
		return
	}
	switch {
	case a.encWait > a.linkWait:
		a.linkBound = false
		if a.lvl > levelStore {
			a.set(a.lvl - 1)
		}
	default:
		a.linkBound = true
		if a.lvl+1 < numLevels && a.probeUp > 0 && float64(a.probeAt)/float64(a.probeUp) >= minGain {
			a.set(a.lvl + 1)
		}
	}
	a.counted, a.encWait, a.linkWait = 0, 0, 0
	a.probeAt, a.probeUp = a.probeAt/2, a.probeUp/2 // older probes count less
}

func (a *adapter) set(l level) {
	a.lvl = l
	a.changes++
	a.probeAt, a.probeUp = 0, 0
}
