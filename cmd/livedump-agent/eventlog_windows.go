//go:build windows

package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/sys/windows/svc/eventlog"
)

// Event IDs the agent writes in the Application log under its source. The
// MSI registers the source with EventCreate.exe as the message file, which
// shows the text as written for IDs 1 to 1000.
const (
	eventInfo    = 1
	eventWarning = 2
	eventError   = 3
)

// eventLogHandler is a slog.Handler writing records at min and above to
// the Windows Event Log, formatted by a text handler (without the time,
// which the event carries).
type eventLogHandler struct {
	text slog.Handler
	sink *eventSink
	min  slog.Level
}

// eventSink receives the text handler's one Write per record and reports
// it with the level of the record being handled.
type eventSink struct {
	mu    sync.Mutex
	log   *eventlog.Log
	level slog.Level
}

func newEventLogHandler(l *eventlog.Log, min slog.Level) *eventLogHandler {
	sink := &eventSink{log: l}
	text := slog.NewTextHandler(sink, &slog.HandlerOptions{
		Level: min,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return &eventLogHandler{text: text, sink: sink, min: min}
}

func (h *eventLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *eventLogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	h.sink.level = r.Level
	return h.text.Handle(ctx, r)
}

func (h *eventLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &eventLogHandler{text: h.text.WithAttrs(as), sink: h.sink, min: h.min}
}

func (h *eventLogHandler) WithGroup(name string) slog.Handler {
	return &eventLogHandler{text: h.text.WithGroup(name), sink: h.sink, min: h.min}
}

// Write is called with h.sink.mu held by Handle.
func (s *eventSink) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	var err error
	switch {
	case s.level >= slog.LevelError:
		err = s.log.Error(eventError, msg)
	case s.level >= slog.LevelWarn:
		err = s.log.Warning(eventWarning, msg)
	default:
		err = s.log.Info(eventInfo, msg)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
