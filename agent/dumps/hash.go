package dumps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"time"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// HashBufferSize is the read size of HashFile.
const HashBufferSize = 1 << 20

// HashFile returns the hex SHA-256 and the size of a file, streaming it
// through buf (allocated with HashBufferSize when nil), so a dump of many
// gigabytes costs no more memory than a small one. It stops early when ctx
// ends.
func HashFile(ctx context.Context, path string, buf []byte) (sum string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	if len(buf) == 0 {
		buf = make([]byte, HashBufferSize)
	}
	h := sha256.New()
	// ctxReader also hides (*os.File).WriteTo, which would make CopyBuffer
	// ignore buf and copy through a 32 KiB one.
	n, err := io.CopyBuffer(h, ctxReader{ctx: ctx, r: f}, buf)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ctxReader is a reader that fails once its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// hashLoop hashes complete dumps, one at a time, oldest first.
func (m *Manager) hashLoop(ctx context.Context) {
	if m.hashBuf == nil {
		m.hashBuf = make([]byte, HashBufferSize)
	}
	for {
		e := m.nextToHash()
		if e == nil {
			select {
			case <-ctx.Done():
				return
			case <-m.hashKick:
				continue
			}
		}
		m.mu.Lock()
		p, id := e.abs(), e.ID
		m.mu.Unlock()
		start := m.clock.Now()
		sum, n, err := HashFile(ctx, p, m.hashBuf)
		if ctx.Err() != nil {
			return
		}
		m.hashed(e, sum, n, err)
		m.log.Debug("hashed", "dump_id", id, "bytes", n, "took", m.clock.Since(start).Round(time.Millisecond), "err", err)
	}
}

// nextToHash returns the oldest complete dump without a hash.
func (m *Manager) nextToHash() *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next *entry
	for _, e := range m.dumps {
		if e.State == stateWriting && e.Complete && !e.Gone && (next == nil || e.Created.Before(next.Created)) {
			next = e
		}
	}
	return next
}

// hashed records a hash result.
func (m *Manager) hashed(e *entry, sum string, n int64, err error) {
	m.mu.Lock()
	var out []*livedumpv1.Dump
	upload := false
	switch {
	case e.State != stateWriting || !e.Complete:
		// Changed while hashing (written to again, aborted, ...): the scan
		// takes it from here.
	case errors.Is(err, fs.ErrNotExist):
		delete(m.byPath, e.abs())
		e.Gone = true
		out = append(out, m.setState(e, stateAborted, "the file disappeared before it was hashed"))
	case err != nil:
		out = append(out, m.setState(e, stateFailed, "hash: "+err.Error()))
	case n != e.Size:
		e.Complete = false // still changing; wait for it to settle again
	default:
		e.SHA256, e.Size = sum, n
		out = append(out, m.setState(e, stateHashed, ""))
		if e.Mode == modeHashOnly && !e.Pulled {
			out = append(out, m.setState(e, stateHashOnly, "hash-only capture: kept on the agent"))
		} else {
			upload = true
		}
	}
	m.mu.Unlock()
	m.report(out...)
	if upload {
		kick(m.uploadKick)
	}
}
