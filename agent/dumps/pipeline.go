package dumps

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// chunk is one upload chunk on its way through the pipeline.
type chunk struct {
	n     int
	raw   []byte // a pool buffer, returned once encoded
	level level
	probe level // also encode at this level to compare (probeNone: no)
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

// encodeWithProbe encodes c at its level and, for a probe, at the probe's
// level too, tells the adapter the two sizes, and returns the smaller frame
// (both are valid).
func encodeWithProbe(enc *chunkEncoder, ad *adapter, c *chunk, dst []byte) ([]byte, error) {
	frame, err := enc.encode(c.level, c.raw, dst)
	if err != nil || c.probe == probeNone {
		return frame, err
	}
	other, err := enc.encode(c.probe, c.raw, enc.scratch)
	if err != nil {
		return frame, nil
	}
	ad.probed(c.level, c.probe, len(frame), len(other))
	if len(other) < len(frame) {
		frame, other = other, frame
	}
	enc.scratch = other[:0]
	return frame, nil
}

// Adapter tuning.
const (
	// adaptChunks is how many chunks the adapter measures between
	// decisions.
	adaptChunks = 8
	// probeEvery: about one chunk in probeEvery, picked at random (dumps
	// have periodic patterns), is also encoded at the level below or, while
	// the link is the bottleneck, the level above.
	probeEvery = 4
	// minGain is how much smaller (raw/wire) a level must make the frames
	// than the level below to be worth its CPU.
	minGain = 1.10
	// probeNone marks a chunk that is not probed.
	probeNone level = -1
)

// adapter picks the compression level from what the sender measures, as
// `zstd --adapt` does. The level goes down when the sender waits for the
// encoders more than for the link (the link is faster than compression),
// or when probes show that the level below makes frames nearly as small
// (less than minGain larger: the compression does not pay for its CPU). It
// goes up when the sender waits for the link and probes show that the
// level above would make the frames at least minGain smaller. On a fast
// link (a LAN, loopback) or with data that does not compress, dumps are
// framed nearly for free with their zero pages cut out; on a slow one (a
// WAN, or upload_bytes_per_sec) they are compressed.
type adapter struct {
	mu        sync.Mutex
	lvl       level
	probeUp   bool // the next probe is of the level above
	counted   int  // chunks sent since the last decision
	encWait   time.Duration
	linkWait  time.Duration
	linkBound bool
	// Wire bytes of the chunks probed: at the level and the one above,
	// at the level and the one below.
	upAt, up, downAt, down int64
	changes                int
	byLevel                [numLevels]int // chunks sent
}

func newAdapter() *adapter { return &adapter{lvl: startLevel} }

func (a *adapter) level() level {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lvl
}

// next returns the level of the next chunk read, and the level to probe
// it at (probeNone: none).
func (a *adapter) next() (level, level) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rand.IntN(probeEvery) != 0 {
		return a.lvl, probeNone
	}
	canUp := a.linkBound && a.lvl+1 < numLevels
	canDown := a.lvl > levelStore
	a.probeUp = !a.probeUp
	switch {
	case canUp && (a.probeUp || !canDown):
		return a.lvl, a.lvl + 1
	case canDown:
		return a.lvl, a.lvl - 1
	}
	return a.lvl, probeNone
}

func (a *adapter) waitedEncoders(d time.Duration) {
	a.mu.Lock()
	a.encWait += d
	a.mu.Unlock()
}

// probed records a chunk encoded at level at (wire bytes) and at level
// other (otherWire bytes).
func (a *adapter) probed(at, other level, wire, otherWire int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case at != a.lvl: // from before a change
	case other == at+1:
		a.upAt += int64(wire)
		a.up += int64(otherWire)
	case other == at-1:
		a.downAt += int64(wire)
		a.down += int64(otherWire)
	}
}

// sent records a chunk sent after waiting d for the link (flow control and
// the bandwidth limit), and decides every adaptChunks chunks.
func (a *adapter) sent(c *chunk, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c != nil {
		a.byLevel[c.level]++
	}
	a.linkWait += d
	if a.counted++; a.counted < adaptChunks {
		return
	}
	a.linkBound = a.encWait <= a.linkWait
	switch {
	case !a.linkBound && a.lvl > levelStore:
		a.set(a.lvl - 1)
	case a.lvl > levelStore && a.downAt > 0 && float64(a.down)/float64(a.downAt) < minGain:
		a.set(a.lvl - 1)
	case a.linkBound && a.lvl+1 < numLevels && a.up > 0 && float64(a.upAt)/float64(a.up) >= minGain:
		a.set(a.lvl + 1)
	default:
		// Older probes count less.
		a.upAt, a.up, a.downAt, a.down = a.upAt/2, a.up/2, a.downAt/2, a.down/2
	}
	a.counted, a.encWait, a.linkWait = 0, 0, 0
}

func (a *adapter) set(l level) {
	a.lvl = l
	a.changes++
	a.upAt, a.up, a.downAt, a.down = 0, 0, 0, 0
}

// summary says how many chunks were sent at each level ("store 480,
// fastest 32").
func (a *adapter) summary() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var parts []string
	for l, n := range a.byLevel {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", level(l), n))
		}
	}
	return strings.Join(parts, ", ")
}
