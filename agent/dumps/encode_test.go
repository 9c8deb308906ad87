package dumps

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// TestFramesDecode checks that every level's frames decode to the chunk
// with the controller's decoder settings (a frame expands to at most 8 MiB),
// for sizes around the block, page and frame-header boundaries.
func TestFramesDecode(t *testing.T) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	r := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	mixed := func(n int) []byte {
		b := make([]byte, n)
		for off := 0; off < n; off += pageSize {
			if r.IntN(2) == 0 {
				copy(b[off:min(off+pageSize, n)], random(pageSize))
			}
		}
		return b
	}
	cases := map[string][]byte{
		"one byte":             {7},
		"one zero":             {0},
		"255 zeros":            make([]byte, 255),
		"256 random":           random(256),
		"65791 random":         random(65536 + 255),
		"65792 zeros":          make([]byte, 65536+256),
		"block of zeros":       make([]byte, maxBlockSize),
		"block and a byte":     random(maxBlockSize + 1),
		"zeros past a block":   make([]byte, 3*maxBlockSize+100),
		"mixed pages, odd end": mixed(1<<20 + 1234),
		"dump-like 1 MiB":      dumpLike(1<<20, 3),
		"dump-like 2 MiB":      dumpLike(2<<20, 4),
		"random 2 MiB":         random(2 << 20),
	}
	for name, raw := range cases {
		for l := range numLevels {
			enc := newChunkEncoder(2 << 20)
			frame, err := enc.encode(l, raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dec.DecodeAll(frame, nil)
			if err != nil {
				t.Fatalf("%s, %s: %v", name, l, err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("%s, %s: decoded %d bytes, differ from the %d sent", name, l, len(got), len(raw))
			}
		}
	}
	// Zero pages cost next to nothing on the wire at any level.
	frame, _ := newChunkEncoder(1<<20).encode(levelStore, make([]byte, 1<<20), nil)
	if len(frame) > 64 {
		t.Errorf("1 MiB of zeros: %d-byte store frame", len(frame))
	}
}

// TestAdapter checks the level decisions: down while the sender waits for
// the encoders or while the level below is nearly as small, up while it
// waits for the link and the level above saves enough, and no higher when
// it does not.
func TestAdapter(t *testing.T) {
	a := newAdapter()
	// window sends adaptChunks chunks; probes say the level above would
	// make a chunk of 100 bytes up bytes, and the one below down bytes.
	window := func(enc, link time.Duration, up, down int) {
		for range adaptChunks {
			l := a.level()
			if l+1 < numLevels {
				a.probed(l, l+1, 100, up)
			}
			if l > levelStore {
				a.probed(l, l-1, 100, down)
			}
			a.waitedEncoders(enc)
			a.sent(&chunk{level: l}, link)
		}
	}
	ms := time.Millisecond
	if a.level() != levelFastest {
		t.Fatalf("starts at %s", a.level())
	}
	window(ms, 0, 50, 200)
	if a.level() != levelStore {
		t.Fatalf("encoder-bound: level %s, want store", a.level())
	}
	window(0, ms, 99, 0) // link-bound, the level above saves 1%
	window(0, ms, 99, 0)
	if a.level() != levelStore {
		t.Fatalf("link-bound, fastest saves 1%%: level %s, want store", a.level())
	}
	window(0, ms, 40, 0)
	if a.level() != levelFastest {
		t.Fatalf("link-bound, fastest saves 60%%: level %s, want fastest", a.level())
	}
	window(0, ms, 95, 250) // default saves 5%, store would cost 2.5×
	window(0, ms, 95, 250)
	if a.level() != levelFastest {
		t.Fatalf("link-bound, default saves 5%%: level %s, want fastest", a.level())
	}
	window(0, ms, 80, 250)
	if a.level() != levelDefault {
		t.Fatalf("link-bound, default saves 20%%: level %s, want default", a.level())
	}
	window(0, ms, 0, 102) // fastest is nearly as small: not worth the CPU
	if a.level() != levelFastest {
		t.Fatalf("default saves 2%% over fastest: level %s, want fastest", a.level())
	}
	window(0, ms, 100, 101) // zero pages and random data: store is as good
	if a.level() != levelStore {
		t.Fatalf("fastest saves 1%% over store: level %s, want store", a.level())
	}
	if a.changes != 5 || a.summary() == "" {
		t.Fatalf("%d changes, %q", a.changes, a.summary())
	}
}
