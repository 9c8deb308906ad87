package dumps

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkHash hashes a 256 MiB file through HashFile (the page cache
// holds it after the first pass, so this is the hashing rate, not the
// disk's).
func BenchmarkHash(b *testing.B) {
	const size = 256 << 20
	p := filepath.Join(tempDir(b), "DTRACE-20261126-1405.dmp")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	for i := range size / (16 << 20) {
		if _, err := f.Write(dumpLike(16<<20, uint64(i))); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, HashBufferSize)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, n, err := HashFile(context.Background(), p, buf); err != nil || n != size {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkCompress compresses dump-like data (about half zero pages, a
// third repeated structures, the rest random) into upload frames at each
// level, as one encoder of the uploader does, and reports the compression
// ratio (raw/compressed).
func BenchmarkCompress(b *testing.B) {
	const size = 64 << 20
	data := dumpLike(size, 42)
	for l := range numLevels {
		b.Run(l.String(), func(b *testing.B) {
			enc := newChunkEncoder(DefaultChunkSize)
			var frame []byte
			var wire int64
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				wire = 0
				for off := 0; off < size; off += DefaultChunkSize {
					var err error
					if frame, err = enc.encode(l, data[off:off+DefaultChunkSize], frame); err != nil {
						b.Fatal(err)
					}
					wire += int64(len(frame))
				}
			}
			b.ReportMetric(float64(size)/float64(wire), "ratio")
		})
	}
}
