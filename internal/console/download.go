package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// unsafeName matches what what may not stay in a hostname that becomes part of a
// download's file name: it becomes '_'.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// downloadName is <hostname>-<id>.dmp, as `livedumpctl dumps get` names it.
func downloadName(d *livedumpv1.Dump) string {
	host := unsafeName.ReplaceAllString(d.GetHostname(), "_")
	if host == "" || len(host) > 64 {
		host = "dump"
	}
	return host + "-" + d.GetId() + ".dmp"
}

// downloadDump streams a dump from the controller to the browser, hashing
// it on the way. The size and the SHA-256 the controller recorded when the
// agent's upload was verified are sent first (Content-Length, and
// Repr-Digest of RFC 9530); if the bytes that came do not hash to it, the
// response is aborted before its end, so the browser marks the download
// failed instead of keeping a wrong file.
func (s *Server) downloadDump(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r, "dump")
	if !ok {
		return
	}
	select {
	case s.download <- struct{}{}:
		defer func() { <-s.download }()
	default:
		s.refuse(w, r, http.StatusServiceUnavailable, fmt.Sprintf("%d downloads are running already: wait for one to finish", MaxDownloads), "downloads at their limit")
		return
	}
	stream, err := s.cfg.Client.GetDump(r.Context(), &livedumpv1.GetDumpRequest{Id: id})
	if err != nil {
		s.fail(w, r, "download dump "+id, err, "")
		return
	}
	first, err := stream.Recv()
	if err != nil {
		s.fail(w, r, "download dump "+id, err, "")
		return
	}
	d := first.GetDump()
	sum, err := hex.DecodeString(d.GetSha256())
	if d == nil || d.GetId() != id || err != nil || len(sum) != sha256.Size || d.GetSize() < 0 {
		s.fail(w, r, "download dump "+id, errors.New("the controller's answer does not describe the dump (no SHA-256 or size)"), "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(d.GetSize(), 10))
	h.Set("Content-Disposition", `attachment; filename="`+downloadName(d)+`"`)
	h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum)+":")
	w.WriteHeader(http.StatusOK)
	// The browser shows the download (name, size) before the first bytes.
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// The last chunk is held back until the whole dump is verified: were
	// every byte sent before the check, the response would be complete
	// and the browser would keep a wrong file.
	hash := sha256.New()
	var n int64
	var held []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.abortDownload(id, fmt.Sprintf("the stream broke at %d of %d bytes: %v", n, d.GetSize(), err))
		}
		chunk := m.GetChunk()
		if n+int64(len(chunk)) > d.GetSize() {
			s.abortDownload(id, fmt.Sprintf("the controller sent more than the dump's %d bytes", d.GetSize()))
		}
		if len(chunk) == 0 {
			continue
		}
		hash.Write(chunk)
		n += int64(len(chunk))
		if held != nil {
			if _, err := w.Write(held); err != nil {
				return // the browser went away
			}
		}
		held = chunk
	}
	if n != d.GetSize() {
		s.abortDownload(id, fmt.Sprintf("got %d of %d bytes", n, d.GetSize()))
	}
	if got := hash.Sum(nil); !bytes.Equal(got, sum) {
		s.abortDownload(id, fmt.Sprintf("SHA-256 %x, want %s", got, d.GetSha256()))
	}
	if _, err := w.Write(held); err != nil {
		return
	}
	s.cfg.Log.Info("console: dump downloaded and verified", "dump", id, "bytes", n, "sha256", d.GetSha256())
}

// abortDownload cuts the response short, so the browser does not keep the
// file as complete.
func (s *Server) abortDownload(id, why string) {
	s.cfg.Log.Error("console: dump download aborted", "dump", id, "reason", why)
	panic(http.ErrAbortHandler)
}
