package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTailLines(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		fromStart bool
		max       int
		want      []string
		more      bool
	}{
		{"whole file", "a\nb\nc\n", true, 10, []string{"a", "b", "c"}, false},
		{"no final newline", "a\nb", true, 10, []string{"a", "b"}, false},
		{"crlf", "a\r\nb\r\n", true, 10, []string{"a", "b"}, false},
		{"last lines", "a\nb\nc\nd\n", true, 2, []string{"c", "d"}, true},
		{"partial first line dropped", "rtial\nb\nc\n", false, 10, []string{"b", "c"}, true},
		{"one cut line kept", "end of a very long line\n", false, 10, []string{"end of a very long line"}, true},
		{"empty file", "", true, 10, nil, false},
		{"invalid utf-8 replaced, never longer", "ok\xff\xfe\n", true, 10, []string{"ok?"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, more := tailLines([]byte(tc.in), tc.fromStart, tc.max)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || more != tc.more {
				t.Fatalf("tailLines(%q) = %q, %v; want %q, %v", tc.in, got, more, tc.want, tc.more)
			}
		})
	}
}

func TestLogTailReport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "livedump-agent.log")

	if r := LogTailReport("", 10, 0); !r.GetNoLogFile() || len(r.GetLines()) != 0 {
		t.Fatalf("no configured file: %v", r)
	}
	if r := LogTailReport(path, 10, 0); !r.GetNoLogFile() || r.GetError() != "" {
		t.Fatalf("missing file: %v", r)
	}

	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r := LogTailReport(path, 3, 0)
	if got := strings.Join(r.GetLines(), "|"); got != "line 997|line 998|line 999" || !r.GetTruncated() || r.GetFileName() != "livedump-agent.log" || r.GetFileSize() != int64(b.Len()) {
		t.Fatalf("tail of 3 = %q truncated=%v name=%q size=%d", got, r.GetTruncated(), r.GetFileName(), r.GetFileSize())
	}
	// A huge request is clamped to the agent's own bounds.
	if r := LogTailReport(path, 1<<30, 1<<30); len(r.GetLines()) != MaxLogLines {
		t.Fatalf("clamped tail has %d lines, want %d", len(r.GetLines()), MaxLogLines)
	}
	// The byte bound holds, and a cut first line is not sent.
	r = LogTailReport(path, MaxLogLines, 20)
	if got := strings.Join(r.GetLines(), "|"); got != "line 998|line 999" {
		t.Fatalf("tail of 20 bytes = %q", got)
	}

	// Just rotated: the current file is short, the rest comes from path.1.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("new 1\nnew 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = LogTailReport(path, 4, 0)
	if got := strings.Join(r.GetLines(), "|"); got != "line 998|line 999|new 1|new 2" || !r.GetTruncated() {
		t.Fatalf("tail across rotation = %q truncated=%v", got, r.GetTruncated())
	}

	// Not a regular file: an error, not its content.
	if r := LogTailReport(dir, 10, 0); r.GetError() == "" || len(r.GetLines()) != 0 {
		t.Fatalf("directory as log file: %v", r)
	}
}
