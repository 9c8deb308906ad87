package dumps

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// level is how hard an upload chunk is compressed. The uploader moves
// between levels with what it measures (see adapter): on a link faster than
// the encoders, cheaper levels send more bytes sooner; on a slow one, zstd
// saves them.
type level int

const (
	// levelStore frames a chunk without compressing it: raw zstd blocks,
	// and RLE blocks for runs of zero pages, the bulk of most dumps. About
	// the cost of a copy.
	levelStore level = iota
	// levelFastest and levelDefault are klauspost/compress zstd levels.
	levelFastest
	levelDefault
	numLevels
)

func (l level) String() string {
	return [...]string{"store", "fastest", "default"}[l]
}

// startLevel is where every upload starts; the adapter moves from there.
const startLevel = levelFastest

// DefaultEncoders is how many chunks are compressed at once: consecutive
// chunks go to encoders side by side and are sent in order. Two at most:
// each costs up to 4.5 MiB (a zstd encoder per level in use and its
// buffers), and an agent must stay light on the machine it watches; on a
// link faster than two encoders the adapter stops compressing anyway.
func DefaultEncoders() int { return min(runtime.GOMAXPROCS(0), 2) }

// newEncoder returns a zstd encoder for upload chunks at level l (fastest
// or default): single-threaded (chunks are spread over encoders by the
// uploader instead), and a window no larger than a chunk: frames are
// independent, so a larger window would only cost memory. No frame
// checksum: TLS protects the chunks in transit and the controller checks
// the SHA-256 of the whole dump.
func newEncoder(chunkSize int, l level) (*zstd.Encoder, error) {
	window := zstd.MinWindowSize
	for window < chunkSize {
		window *= 2
	}
	zl := zstd.SpeedDefault
	if l == levelFastest {
		zl = zstd.SpeedFastest
	}
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zl),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(window),
		zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true),
		zstd.WithLowerEncoderMem(true))
}

// chunkEncoder encodes chunks at any level; its zstd encoders are made on
// first use. One goroutine uses it at a time.
type chunkEncoder struct {
	chunkSize int
	zstd      [numLevels]*zstd.Encoder
	scratch   []byte // the frame a probe did not send
}

func newChunkEncoder(chunkSize int) *chunkEncoder { return &chunkEncoder{chunkSize: chunkSize} }

// encode returns raw as one independent zstd frame at level l, appended to
// dst[:0].
func (c *chunkEncoder) encode(l level, raw, dst []byte) ([]byte, error) {
	if l == levelStore {
		return storeFrame(raw, dst[:0]), nil
	}
	if c.zstd[l] == nil {
		enc, err := newEncoder(c.chunkSize, l)
		if err != nil {
			return nil, err
		}
		c.zstd[l] = enc
	}
	return c.zstd[l].EncodeAll(raw, dst[:0]), nil
}

// Frame layout (RFC 8878, section 3.1.1).
const (
	zstdMagic    = 0xFD2FB528
	maxBlockSize = 128 << 10 // Block_Maximum_Size
	pageSize     = 4 << 10   // the unit of zero runs
	blockRaw     = 0
	blockRLE     = 1
)

var zeroPage [pageSize]byte

// storeFrame appends raw to dst as a zstd frame without compression: a
// single-segment frame with its content size, whose blocks are RLE blocks
// for runs of zero pages and raw blocks for the rest. Any zstd decoder
// reads it. Finding the zero pages costs one compare per page (it stops at
// the first non-zero byte); the rest is a copy.
func storeFrame(raw, dst []byte) []byte {
	n := len(raw)
	dst = binary.LittleEndian.AppendUint32(dst, zstdMagic)
	// Frame_Header_Descriptor: Single_Segment_flag, no checksum, no
	// dictionary; Frame_Content_Size in 1, 2, 4 or 8 bytes.
	switch {
	case n < 256:
		dst = append(dst, 0x20, byte(n))
	case n < 65536+256:
		dst = append(dst, 0x60)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(n-256))
	case uint64(n) < 1<<32:
		dst = append(dst, 0xA0)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	default:
		dst = append(dst, 0xE0)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(n))
	}
	if n == 0 {
		return appendBlockHeader(dst, true, blockRaw, 0)
	}
	if cap(dst)-len(dst) < n+3*(n/pageSize+2) {
		grown := make([]byte, len(dst), len(dst)+n+3*(n/pageSize+2))
		copy(grown, dst)
		dst = grown
	}
	for off := 0; off < n; {
		// A run of pages of one kind (zero or not), at most a block.
		end := min(off+pageSize, n)
		zero := isZero(raw[off:end])
		for end < n && end-off < maxBlockSize {
			next := min(end+pageSize, n, off+maxBlockSize)
			if isZero(raw[end:next]) != zero {
				break
			}
			end = next
		}
		last := end == n
		if zero {
			dst = appendBlockHeader(dst, last, blockRLE, end-off)
			dst = append(dst, 0)
		} else {
			dst = appendBlockHeader(dst, last, blockRaw, end-off)
			dst = append(dst, raw[off:end]...)
		}
		off = end
	}
	return dst
}

func isZero(p []byte) bool { return bytes.Equal(p, zeroPage[:len(p)]) }

// appendBlockHeader appends a 3-byte block header: Last_Block, Block_Type,
// Block_Size (for an RLE block, the size it regenerates).
func appendBlockHeader(dst []byte, last bool, typ, size int) []byte {
	if size > maxBlockSize {
		panic(fmt.Sprintf("zstd block of %d bytes", size))
	}
	h := uint32(size)<<3 | uint32(typ)<<1
	if last {
		h |= 1
	}
	return append(dst, byte(h), byte(h>>8), byte(h>>16))
}
