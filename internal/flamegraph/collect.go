package flamegraph

import (
	"context"
	"fmt"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// DefaultMaxEvents is Collect's bound when max <= 0.
const DefaultMaxEvents = 100_000

// pageLimit is the most events ListEvents returns in one page.
const pageLimit = 10_000

// Collect reads the first max events of a capture (max <= 0:
// DefaultMaxEvents), oldest first, following ListEvents' pages.
// truncated says the capture has more. Every call uses ctx: a caller that
// wants a timeout per page wraps the client.
func Collect(ctx context.Context, c livedumpv1.FleetServiceClient, captureID string, max int) (events []*livedumpv1.TriggerEvent, truncated bool, err error) {
	if max <= 0 {
		max = DefaultMaxEvents
	}
	after := ""
	for {
		// One more than wanted tells whether there are more.
		want := min(max+1-len(events), pageLimit)
		page, err := c.ListEvents(ctx, &livedumpv1.ListEventsRequest{CaptureId: captureID, Limit: int32(want), After: after})
		if err != nil {
			return nil, false, err
		}
		events = append(events, page.GetEvents()...)
		if len(events) > max {
			return events[:max:max], true, nil
		}
		next := page.GetNext()
		if next == "" || len(page.GetEvents()) == 0 {
			return events, false, nil
		}
		if next == after {
			return nil, false, fmt.Errorf("capture %s: the events do not advance past %q", captureID, after)
		}
		after = next
	}
}
