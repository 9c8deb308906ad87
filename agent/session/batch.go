package session

import (
	"google.golang.org/protobuf/proto"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxBatchBytes bounds an EventBatch's encoded size: under 32 KiB the
// message fits gRPC's 32 KiB pooled buffer instead of its 1 MiB one, which
// both ends would clear for every message.
const maxBatchBytes = 30 << 10

// batchEvents joins runs of single trigger events in msgs into EventBatch
// messages of at most maxBatch events and about maxBatchBytes, keeping the
// order of everything else. maxBatch below 2 (a controller that takes no
// batches) leaves msgs as they are.
func batchEvents(msgs []*livedumpv1.ConnectRequest, maxBatch int) []*livedumpv1.ConnectRequest {
	if maxBatch < 2 {
		return msgs
	}
	out := make([]*livedumpv1.ConnectRequest, 0, len(msgs))
	var run []*livedumpv1.TriggerEvent
	size := 0
	flush := func() {
		switch len(run) {
		case 0:
		case 1:
			out = append(out, &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: run[0]}})
		default:
			out = append(out, &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_EventBatch{EventBatch: &livedumpv1.EventBatch{Events: run}}})
		}
		run, size = nil, 0
	}
	for _, m := range msgs {
		ev := m.GetEvent()
		if ev == nil {
			flush()
			out = append(out, m)
			continue
		}
		n := proto.Size(ev) + 8 // with its tag and length
		if len(run) == maxBatch || (len(run) > 0 && size+n > maxBatchBytes) {
			flush()
		}
		run = append(run, ev)
		size += n
	}
	flush()
	return out
}
