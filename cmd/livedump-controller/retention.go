package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cast"

	"github.com/livedump/livedump/controller/retention"
	"github.com/livedump/livedump/internal/config"
)

// maxRetentionAge bounds an age limit: ten years.
const maxRetentionAge = 10 * 365 * 24 * time.Hour

var daysRe = regexp.MustCompile(`^\s*([0-9]+)d\s*$`)

// parseAge reads an age: a Go duration (720h) or whole days (30d); 0 is
// off.
func parseAge(key string, x any) (time.Duration, error) {
	s := strings.TrimSpace(cast.ToString(x))
	if m := daysRe.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > int64(maxRetentionAge/(24*time.Hour)) {
			return 0, fmt.Errorf("%s: %q is more than 3650d", key, s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an age: want days such as 30d, a duration such as 720h, or 0 for no limit", key, s)
	}
	return d, nil
}

// retentionConfig reads the retention.* keys. quotaTotal is the resolved
// dumps.quota_total (negative: none), which a percentage of
// retention.dumps.max_bytes refers to. Zero turns a limit off.
func retentionConfig(v *config.Config, quotaTotal int64) (retention.Policy, error) {
	var p retention.Policy
	interval, err := v.Duration("retention.interval")
	if err != nil {
		return p, err
	}
	if interval < time.Minute || interval > 24*time.Hour {
		return p, fmt.Errorf("retention.interval: %s is outside 1m-24h", interval)
	}
	p.Interval = interval
	for _, a := range []struct {
		key string
		to  *time.Duration
	}{
		{"retention.dumps.max_age", &p.DumpMaxAge},
		{"retention.events.max_age", &p.EventMaxAge},
	} {
		d, err := parseAge(a.key, v.Get(a.key))
		if err != nil {
			return p, err
		}
		switch {
		case d == 0:
			d = -1 // off; zero in retention.Policy is the default
		case d < time.Hour || d > maxRetentionAge:
			return p, fmt.Errorf("%s: %s is outside 1h-3650d (0: no limit)", a.key, d)
		}
		*a.to = d
	}
	if p.DumpMaxBytes, err = maxBytes(v.Get("retention.dumps.max_bytes"), quotaTotal); err != nil {
		return p, fmt.Errorf("retention.dumps.max_bytes: %w", err)
	}
	n, err := cast.ToInt64E(v.Get("retention.events.max_count"))
	if err != nil {
		return p, fmt.Errorf("retention.events.max_count: %v is not an integer", v.Get("retention.events.max_count"))
	}
	switch {
	case n == 0:
		n = -1
	case n < 1000 || n > 1e12:
		return p, fmt.Errorf("retention.events.max_count: %d is outside 1000-1000000000000 (0: no limit)", n)
	}
	p.EventMaxCount = n
	return p, nil
}

// maxBytes reads retention.dumps.max_bytes: a size (at least 1MiB), a
// percentage of the total dump quota (off when there is none), or 0 (off,
// returned as -1).
func maxBytes(x any, quotaTotal int64) (int64, error) {
	s := strings.TrimSpace(cast.ToString(x))
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(pct))
		if err != nil || n < 1 || n > 100 {
			return 0, fmt.Errorf("%q: want a percentage of dumps.quota_total from 1%% to 100%%, a size such as 500GiB, or 0 for no limit", s)
		}
		if quotaTotal <= 0 {
			return -1, nil // no quota to be a percentage of
		}
		return quotaTotal / 100 * int64(n), nil
	}
	n, err := parseBytes(x)
	if err != nil {
		return 0, err
	}
	switch {
	case n == 0:
		return -1, nil
	case n < 1<<20:
		return 0, fmt.Errorf("%d bytes is less than 1MiB", n)
	}
	return n, nil
}
