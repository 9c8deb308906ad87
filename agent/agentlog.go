package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Bounds of the log tail the controller may ask for (agents describe):
// whatever the directive says, the agent sends at most this much.
const (
	MaxLogLines     = 200
	MaxLogBytes     = 64 << 10
	defaultLogLines = 50
)

// sendLogTail answers an AgentLogDirective with the tail of the agent's
// own log file. The file is the one the agent's local configuration names
// (Config.LogFile), never one the directive names: a controller cannot read
// anything else through it.
func (a *Agent) sendLogTail(id string, d *livedumpv1.AgentLogDirective) {
	rep := LogTailReport(a.cfg.LogFile, int(d.GetMaxLines()), int(d.GetMaxBytes()))
	rep.DirectiveId = id
	if err := a.session.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_AgentLogReport{AgentLogReport: rep}}); err != nil {
		a.cfg.Logger.Warn("log tail not delivered", "directive_id", id, "err", err)
	}
}

// LogTailReport reads the last lines of the log file at path (and, when
// that file was just rotated and holds fewer, of path.1 before it) within
// the agent's bounds: maxLines and maxBytes are clamped to MaxLogLines and
// MaxLogBytes (0 means the default of 50 lines, 64 KiB). An empty path is
// an agent without a log file.
func LogTailReport(path string, maxLines, maxBytes int) *livedumpv1.AgentLogReport {
	if maxLines <= 0 {
		maxLines = defaultLogLines
	}
	if maxBytes <= 0 {
		maxBytes = MaxLogBytes
	}
	maxLines, maxBytes = min(maxLines, MaxLogLines), min(maxBytes, MaxLogBytes)
	rep := &livedumpv1.AgentLogReport{}
	if path == "" {
		rep.NoLogFile = true
		return rep
	}
	rep.FileName = filepath.Base(path)
	lines, more, size, mod, err := tailFile(path, maxLines, maxBytes)
	if errors.Is(err, fs.ErrNotExist) {
		rep.NoLogFile = true
		return rep
	}
	if err != nil {
		rep.Error = boundString(err.Error(), 512)
		return rep
	}
	rep.FileSize, rep.Modified = size, timestamppb.New(mod)
	if !more && len(lines) < maxLines {
		// The file was rotated recently: the lines before it are in path.1.
		used := 0
		for _, l := range lines {
			used += len(l) + 1
		}
		if older, olderMore, _, _, err := tailFile(path+".1", maxLines-len(lines), maxBytes-used); err == nil {
			lines, more = append(older, lines...), olderMore
		}
	}
	rep.Lines, rep.Truncated = lines, more
	return rep
}

// tailFile reads at most maxBytes from the end of the regular file at path
// and splits them with tailLines. It returns the file's size and
// modification time too.
func tailFile(path string, maxLines, maxBytes int) (lines []string, more bool, size int64, mod time.Time, err error) {
	if maxLines <= 0 || maxBytes <= 0 {
		return nil, true, 0, time.Time{}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false, 0, time.Time{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, 0, time.Time{}, err
	}
	if !st.Mode().IsRegular() {
		return nil, false, 0, time.Time{}, fmt.Errorf("%s is not a regular file", filepath.Base(path))
	}
	size, mod = st.Size(), st.ModTime()
	off := max(size-int64(maxBytes), 0)
	buf := make([]byte, size-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, 0, time.Time{}, err
	}
	lines, more = tailLines(buf[:n], off == 0, maxLines)
	return lines, more, size, mod, nil
}

// tailLines splits the end of a log into at most maxLines lines, oldest
// first. fromStart says whether b begins at the start of the file; if not,
// its first line is partial and dropped (unless it is the only one, which
// is then kept as cut). Line ends (\n, \r\n) are removed and each run of invalid
// UTF-8 is replaced by one '?', so the text never grows. more reports
// that older text exists that is not in lines.
func tailLines(b []byte, fromStart bool, maxLines int) (lines []string, more bool) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) == 0 {
		return nil, !fromStart
	}
	parts := bytes.Split(b, []byte("\n"))
	if !fromStart {
		more = true
		if len(parts) > 1 {
			parts = parts[1:]
		}
	}
	if len(parts) > maxLines {
		parts, more = parts[len(parts)-maxLines:], true
	}
	lines = make([]string, len(parts))
	for i, p := range parts {
		lines[i] = strings.ToValidUTF8(string(bytes.TrimSuffix(p, []byte("\r"))), "?")
	}
	return lines, more
}

// boundString cuts s to at most n bytes of valid UTF-8.
func boundString(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}
