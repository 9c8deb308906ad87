package main

import (
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/config"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[any]int64{"64GiB": 64 << 30, "1TiB": 1 << 40, "1048576": 1 << 20, 4096: 4096, "5 MiB": 5 << 20, "0": 0, "12B": 12} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%v) = %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []any{"64GB", "-1", -5, "lots", "1.5GiB", "99999999999TiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%v) accepted", in)
		}
	}
}

func TestUploadsConfig(t *testing.T) {
	dumps := map[string]any{}
	for k, d := range defaults {
		if strings.HasPrefix(k, "dumps.") {
			dumps[k] = d
		}
	}
	v := loadDefaults(t, dumps)
	b, slots, err := uploadsConfig(v)
	if err != nil || slots != 4 || b.HeaderTimeout != 30*time.Second || b.ChunkTimeout != time.Minute || b.MaxSize != 1<<40 ||
		b.QuotaPerAgent != 64<<30 || b.QuotaTotal != 1<<40 || b.PartialTTL != 24*time.Hour {
		t.Fatalf("defaults: %+v %d %v", b, slots, err)
	}
	v.Set("dumps.quota_total", 0)
	if b, _, err := uploadsConfig(v); err != nil || b.QuotaTotal >= 0 {
		t.Fatalf("quota_total 0: %+v %v, want no quota", b, err)
	}
	for key, bad := range map[string]any{"dumps.upload_slots": 0, "dumps.header_timeout": "10ms", "dumps.max_size": "2TiB",
		"dumps.quota_per_agent": "1KiB", "dumps.partial_ttl": "1s", "dumps.chunk_timeout": "soon"} {
		w := loadDefaults(t, defaults)
		w.Set(key, bad)
		if _, _, err := uploadsConfig(w); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%v: %v, want an error naming the key", key, bad, err)
		}
	}
}

// loadDefaults is the configuration of defs alone: no file, environment or
// flags.
func loadDefaults(t *testing.T, defs map[string]any) *config.Config {
	t.Helper()
	c, err := config.Load(config.Options{Defaults: defs})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
