package host

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kernel-LiveDump events the agent reads (channel
// Microsoft-Windows-Kernel-LiveDump/Operational).
const (
	LiveDumpChannel     = "Microsoft-Windows-Kernel-LiveDump/Operational"
	EventDumpWriteStart = 3   // Writing dump file started
	EventDumpWriteEnd   = 4   // Writing dump file ended (NTStatus, TotalBytes, ...)
	EventDumpDiskFull   = 202 // the dump could not be written: disk full
)

// LiveDumpEvent is one Kernel-LiveDump event.
type LiveDumpEvent struct {
	ID         int
	Time       time.Time
	NTStatus   uint32 // event 4 and 202: how the write ended
	TotalBytes uint64 // event 4: bytes written
	// Component is the live dump's component (e.g. DTRACE) when the event
	// names one; the documented fields of events 4 and 202 do not, so it
	// is usually empty.
	Component string
}

// eventsXML is wevtutil's `/f:xml /e:Events` output.
type eventsXML struct {
	Events []struct {
		System struct {
			EventID     int `xml:"EventID"`
			TimeCreated struct {
				SystemTime string `xml:"SystemTime,attr"`
			} `xml:"TimeCreated"`
		} `xml:"System"`
		Data []struct {
			Name  string `xml:"Name,attr"`
			Value string `xml:",chardata"`
		} `xml:"EventData>Data"`
	} `xml:"Event"`
}

// ParseLiveDumpEventsXML parses `wevtutil qe ... /f:xml /e:Events` output.
// Field names come from the event manifest, never from the localized
// message text.
func ParseLiveDumpEventsXML(b []byte) ([]LiveDumpEvent, error) {
	var doc eventsXML
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("event log xml: %w", err)
	}
	var out []LiveDumpEvent
	for _, e := range doc.Events {
		t, err := time.Parse(time.RFC3339Nano, e.System.TimeCreated.SystemTime)
		if err != nil {
			return nil, fmt.Errorf("event %d: TimeCreated %q: %w", e.System.EventID, e.System.TimeCreated.SystemTime, err)
		}
		ev := LiveDumpEvent{ID: e.System.EventID, Time: t.UTC()}
		for _, d := range e.Data {
			v := strings.TrimSpace(d.Value)
			switch d.Name {
			case "NTStatus", "Status":
				n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(v), "0x"), baseOf(v), 32)
				if err != nil {
					return nil, fmt.Errorf("event %d: %s %q: %w", ev.ID, d.Name, v, err)
				}
				ev.NTStatus = uint32(n)
			case "ComponentName", "Component":
				ev.Component = v
			case "TotalBytes":
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("event %d: TotalBytes %q: %w", ev.ID, v, err)
				}
				ev.TotalBytes = n
			}
		}
		out = append(out, ev)
	}
	return out, nil
}

func baseOf(v string) int {
	if strings.HasPrefix(strings.ToLower(v), "0x") {
		return 16
	}
	return 10
}

// LiveDumpEventsQuery is the XPath wevtutil uses: the write-ended and
// disk-full events since a time.
func LiveDumpEventsQuery(since time.Time) string {
	return fmt.Sprintf("*[System[(EventID=%d or EventID=%d) and TimeCreated[@SystemTime>='%s']]]",
		EventDumpWriteEnd, EventDumpDiskFull, since.UTC().Format("2006-01-02T15:04:05.000Z"))
}
