package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// tenFrames is a realistic 10-frame user stack as the controller stores it.
func tenFrames() string {
	type frame struct {
		Module   string `json:"module,omitempty"`
		Function string `json:"function,omitempty"`
		Offset   uint64 `json:"offset,omitempty"`
		Address  uint64 `json:"address,omitempty"`
	}
	fs := []frame{
		{"ntdll", "NtCreateFile", 0x14, 0}, {"KERNELBASE", "CreateFileW", 0x66, 0}, {"KERNELBASE", "CreateFileA", 0x2e, 0},
		{"ms-teams", "StorageOpen", 0x1a3, 0}, {"ms-teams", "CacheLoad", 0x88, 0}, {"ms-teams", "", 0, 0x7ff6a1b2c3d4},
		{"ms-teams", "MainLoop", 0x211, 0}, {"KERNEL32", "BaseThreadInitThunk", 0x1d, 0}, {"ntdll", "RtlUserThreadStart", 0x28, 0},
		{"", "", 0, 0x7ff6a1b20000},
	}
	b, _ := json.Marshal(fs)
	return string(b)
}

// BenchmarkInsertEvents measures trigger-event ingest into SQLite in the
// batches the controller uses (512 events per transaction), each event with
// a 10-frame user stack. Run:
//
//	go test ./controller/store/sqlite -run '^$' -bench InsertEvents -benchtime 20000x
func BenchmarkInsertEvents(b *testing.B) {
	for _, batch := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchInsertEvents(b, batch, sequentialID) })
	}
}

// BenchmarkInsertEventsRandomIDs is the same with random event IDs, as
// agents make them (a hash): each insert lands on a random page of the
// unique index on the ID, where sequential IDs always append.
func BenchmarkInsertEventsRandomIDs(b *testing.B) {
	for _, batch := range []int{512, 2048} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchInsertEvents(b, batch, randomID) })
	}
}

func sequentialID(i int) string { return fmt.Sprintf("%032x", i) }

func randomID(int) string { return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()) }

func benchInsertEvents(b *testing.B, batch int, id func(int) string) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	t0 := time.Now()
	if err := s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "a1", State: "armed"}}); err != nil {
		b.Fatal(err)
	}
	user := tenFrames()
	evs := make([]store.Event, 0, batch)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		evs = append(evs, store.Event{
			ID: id(i), CaptureID: "c1", AgentID: "a1", Time: t0.Add(time.Duration(i)), PID: 4242, TID: 17,
			Process: "ms-teams.exe", Probe: "NtCreateFile:return", Status: 0xC000000D, User: user, Kernel: "[]",
			Signature: "ntdll!NtCreateFile < KERNELBASE!CreateFileW < KERNELBASE!CreateFileA < ms-teams!StorageOpen < ms-teams!CacheLoad",
		})
		if len(evs) == batch || i == b.N-1 {
			if _, err := s.InsertEvents(ctx, evs); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
