package host

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLiveDumpEventsXML(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "eventlog", "livedump.xml"))
	if err != nil {
		t.Fatal(err)
	}
	evs, err := ParseLiveDumpEventsXML(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	if e := evs[0]; e.ID != EventDumpWriteEnd || e.NTStatus != 0 || e.TotalBytes != 867205120 || !e.Time.Equal(time.Date(2026, 11, 26, 14, 5, 47, 123456700, time.UTC)) {
		t.Fatalf("event 4: %+v", e)
	}
	if e := evs[1]; e.ID != EventDumpDiskFull || e.NTStatus != 0xC000007F {
		t.Fatalf("event 202: %+v", e)
	}
	if _, err := ParseLiveDumpEventsXML([]byte("<Events><Event><System><TimeCreated SystemTime='yesterday'/></System></Event></Events>")); err == nil {
		t.Fatal("bad time accepted")
	}
	if evs, err := ParseLiveDumpEventsXML([]byte("<Events></Events>")); err != nil || len(evs) != 0 {
		t.Fatalf("empty log: %v %v", evs, err)
	}
	q := LiveDumpEventsQuery(time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC))
	if !strings.Contains(q, "EventID=4 or EventID=202") || !strings.Contains(q, "2026-11-26T14:00:00.000Z") {
		t.Fatalf("query %q", q)
	}
}
