package main

import (
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/config"
)

func TestTransportConfig(t *testing.T) {
	load := func(set map[string]any) *config.Config {
		v := loadDefaults(t, defaults)
		for k, val := range set {
			v.Set(k, val)
		}
		return v
	}
	got, err := transportConfig(load(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxConnections != 0 || got.MaxAnonymousConnections != 1024 || got.MaxStreamsPerConnection != 128 ||
		got.HandshakeTimeout != 10*time.Second || got.AnonymousIdleTimeout != 10*time.Second ||
		got.AnonymousMaxLifetime != time.Minute || got.EnrollRate != 1 || got.EnrollBurst != 20 {
		t.Errorf("defaults: %+v", got)
	}
	if off, err := transportConfig(load(map[string]any{"transport.enroll_rate": "0"})); err != nil || off.EnrollRate >= 0 {
		t.Errorf("enroll_rate 0: %+v, %v; want the limit off", off, err)
	}
	for key, bad := range map[string]any{
		"transport.max_connections":            "many",
		"transport.max_anonymous_connections":  0,
		"transport.max_streams_per_connection": 1,
		"transport.handshake_timeout":          "10",
		"transport.anonymous_idle_timeout":     "0s",
		"transport.anonymous_max_lifetime":     "2h",
		"transport.enroll_rate":                -1,
		"transport.enroll_burst":               0,
	} {
		if _, err := transportConfig(load(map[string]any{key: bad})); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s = %v: err %v, want one naming the key", key, bad, err)
		}
	}
}
