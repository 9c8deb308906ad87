package main

import (
	"strings"
	"testing"
	"time"
)

func TestRetentionConfig(t *testing.T) {
	v := loadDefaults(t, defaults)
	p, err := retentionConfig(v, 1<<40)
	if err != nil || p.Interval != 10*time.Minute || p.DumpMaxAge != 30*24*time.Hour || p.EventMaxAge != 30*24*time.Hour ||
		p.DumpMaxBytes != (1<<40)/100*90 || p.EventMaxCount != 10_000_000 {
		t.Fatalf("defaults: %+v %v", p, err)
	}
	// A percentage of no quota is off, and so is 0 for every limit.
	if p, err := retentionConfig(v, -1); err != nil || p.DumpMaxBytes >= 0 {
		t.Fatalf("90%% of no quota: %+v %v, want off", p, err)
	}
	for key, val := range map[string]any{"retention.dumps.max_age": "0", "retention.events.max_age": 0, "retention.dumps.max_bytes": 0, "retention.events.max_count": 0} {
		w := loadDefaults(t, defaults)
		w.Set(key, val)
		p, err := retentionConfig(w, 1<<40)
		off := map[string]bool{"retention.dumps.max_age": p.DumpMaxAge < 0, "retention.events.max_age": p.EventMaxAge < 0,
			"retention.dumps.max_bytes": p.DumpMaxBytes < 0, "retention.events.max_count": p.EventMaxCount < 0}[key]
		if err != nil || !off {
			t.Errorf("%s=0: %+v %v, want that limit off", key, p, err)
		}
	}
	for key, good := range map[string]any{"retention.dumps.max_age": "720h", "retention.dumps.max_bytes": "500GiB", "retention.events.max_age": "7d"} {
		w := loadDefaults(t, defaults)
		w.Set(key, good)
		if _, err := retentionConfig(w, 1<<40); err != nil {
			t.Errorf("%s=%v: %v", key, good, err)
		}
	}
	for key, bad := range map[string]any{
		"retention.interval": "5s", "retention.dumps.max_age": "99999d", "retention.events.max_age": "30m", "retention.dumps.max_bytes": "150%",
		"retention.events.max_count": 10,
	} {
		w := loadDefaults(t, defaults)
		w.Set(key, bad)
		if _, err := retentionConfig(w, 1<<40); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%v: %v, want an error naming the key", key, bad, err)
		}
	}
	w := loadDefaults(t, defaults)
	w.Set("retention.dumps.max_bytes", "1KiB")
	if _, err := retentionConfig(w, 1<<40); err == nil || !strings.Contains(err.Error(), "retention.dumps.max_bytes") {
		t.Errorf("1KiB: %v", err)
	}
}
