package session

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestBatchEvents(t *testing.T) {
	ev := func(i int, pad int) *livedumpv1.ConnectRequest {
		return &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: &livedumpv1.TriggerEvent{Id: fmt.Sprintf("ev-%04d", i), Process: strings.Repeat("p", pad)}}}
	}
	status := &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_CaptureStatus{CaptureStatus: &livedumpv1.CaptureStatus{CaptureId: "c-1"}}}
	var msgs []*livedumpv1.ConnectRequest
	msgs = append(msgs, status)
	for i := range 150 {
		msgs = append(msgs, ev(i, 10))
	}
	msgs = append(msgs, status, ev(150, 10), status)
	for i := 151; i < 161; i++ {
		msgs = append(msgs, ev(i, 10_000)) // 10 KiB each: three to a batch
	}

	// An older controller (no bound): unchanged.
	if got := batchEvents(msgs, 0); len(got) != len(msgs) {
		t.Fatalf("maxBatch 0: %d messages, want %d", len(got), len(msgs))
	}

	got := batchEvents(msgs, 64)
	var ids []string
	var shape []string
	for _, m := range got {
		switch {
		case m.GetEvent() != nil:
			ids = append(ids, m.GetEvent().GetId())
			shape = append(shape, "1")
		case m.GetEventBatch() != nil:
			b := m.GetEventBatch()
			if len(b.GetEvents()) > 64 || proto.Size(b) > 32<<10 {
				t.Errorf("batch of %d events, %d bytes", len(b.GetEvents()), proto.Size(b))
			}
			for _, e := range b.GetEvents() {
				ids = append(ids, e.GetId())
			}
			shape = append(shape, fmt.Sprint(len(b.GetEvents())))
		default:
			shape = append(shape, "s")
		}
	}
	if want := "s 64 64 22 s 1 s 3 3 3 1"; strings.Join(shape, " ") != want {
		t.Errorf("messages %q, want %q", strings.Join(shape, " "), want)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("ev-%04d", i); id != want {
			t.Fatalf("event %d is %s, want %s (order kept)", i, id, want)
		}
	}
}
