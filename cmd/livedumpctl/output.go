package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/internal/selector"
)

// jsonOptions is the -o json encoding: the proto field names, as the
// controller's API documents them.
var jsonOptions = protojson.MarshalOptions{
	Multiline:       true,
	Indent:          "  ",
	UseProtoNames:   true,
	EmitUnpopulated: false,
}

// writeJSON prints the whole response message and a newline. protojson
// deliberately varies its whitespace between builds; re-indenting with
// encoding/json makes the output byte-stable for scripts and diffs
// without changing a single token.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	return writeIndented(w, b)
}

// writeIndented prints JSON re-indented by encoding/json, and a newline.
func writeIndented(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// table writes aligned columns. Cells are sanitized: values that came from
// agents (hostnames, labels) must not be able to break the columns or send
// control sequences to the terminal.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// cell makes s safe for one table cell; an empty value shows as "-" so that
// columns stay countable with awk.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
}

// formatLabels renders labels as sorted k=v pairs separated by commas,
// optionally without the built-in labels.
func formatLabels(labels map[string]string, userOnly bool) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		if userOnly && selector.IsBuiltin(k) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// ago renders how long before now t was, coarsely: "5s ago", "3m ago",
// "2h ago", "4d ago".
func ago(now time.Time, ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	d := now.Sub(ts.AsTime())
	if d < time.Second {
		return "just now"
	}
	return span(d) + " ago"
}

// until renders how long after now t is: "in 23h", or "3m ago" if past.
func until(now time.Time, ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	d := ts.AsTime().Sub(now)
	if d < 0 {
		return ago(now, ts)
	}
	return "in " + span(d)
}

func span(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// formatTime renders a timestamp as RFC 3339 in the local time zone.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}
