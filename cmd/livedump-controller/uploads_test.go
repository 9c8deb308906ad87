package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
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
	v := viper.New()
	for k, d := range defaults {
		if strings.HasPrefix(k, "dumps.") {
			v.SetDefault(k, d)
		}
	}
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
		w := viper.New()
		for k, d := range defaults {
			w.SetDefault(k, d)
		}
		w.Set(key, bad)
		if _, _, err := uploadsConfig(w); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%v: %v, want an error naming the key", key, bad, err)
		}
	}
}
