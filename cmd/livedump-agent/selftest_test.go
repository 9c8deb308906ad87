package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestSelftestSimulate runs `livedump-agent selftest --simulate` on a fresh
// simulated machine, as CI and docs/selftest.md do: DTrace is not
// installed there, so the self-test fails (exit 1) with one line per check.
func TestSelftestSimulate(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"selftest", "--simulate", "--state-dir", dir, "--sim-hostname", "SELFTEST-CI", "--metrics-listen", "-"}, &out, &errb)
	if code != 1 || errb.Len() != 0 {
		t.Fatalf("exit %d, stderr %q, want 1 and nothing", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 10 || !strings.HasPrefix(lines[0], "FAIL     dtrace.present ") {
		t.Fatalf("output:\n%s", out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"selftest", "--simulate", "--state-dir", dir, "-o", "json"}, &out, &errb); code != 1 {
		t.Fatalf("-o json: exit %d", code)
	}
	var rep struct {
		Hostname string
		Checks   []struct{ Check, Status, Evidence string }
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Hostname != "SELFTEST-CI" || len(rep.Checks) != 10 {
		t.Fatalf("json: %v %+v", err, rep)
	}
	if code := run(context.Background(), []string{"selftest", "--simulate", "--state-dir", dir, "-o", "yaml"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--output") {
		t.Fatalf("-o yaml: exit %d, stderr %q", code, errb.String())
	}
}
