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
// the encoders, up while it waits for the link and the next level saves
// enough, and no higher when it does not.
func TestAdapter(t *testing.T) {
	a := newAdapter()
	window := func(enc, link time.Duration, probeAt, probeUp int) {
		for range adaptChunks {
			_, probe := a.next()
			if probe {
				a.probed(a.level(), probeAt, probeUp)
			}
			a.waitedEncoders(enc)
			a.sent(nil, link)
		}
	}
	window(time.Millisecond, 0, 0, 0)
	window(time.Millisecond, 0, 0, 0)
	if a.level() != levelStore {
		t.Fatalf("encoder-bound: level %s, want store", a.level())
	}
	window(0, time.Millisecond, 100, 99) // link-bound, nothing to gain
	window(0, time.Millisecond, 100, 99)
	if a.level() != levelStore {
		t.Fatalf("link-bound, next level saves 1%%: level %s, want store", a.level())
	}
	window(0, time.Millisecond, 100, 40)
	window(0, time.Millisecond, 100, 40)
	if a.level() == levelStore {
		t.Fatalf("link-bound, next level saves 60%%: still %s", a.level())
	}
	for range 4 {
		window(0, time.Millisecond, 100, 40)
	}
	if a.level() != levelDefault {
		t.Fatalf("link-bound: level %s, want default", a.level())
	}
}
