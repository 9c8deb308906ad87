package main

import (
	"strings"
	"testing"
)

// TestBadInput checks that malformed input fails locally, before any call
// reaches the controller, with one line on stderr that names the culprit.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		want  []string
		usage bool // a command-line usage error: exit status 2
	}{
		{name: "malformed selector", args: []string{"agents", "list", "-l", "role in (vdi"}, want: []string{"selector", "role in (vdi"}},
		{name: "selector with a bad key", args: []string{"agents", "list", "-l", "-bad=x"}, want: []string{"selector"}},
		{name: "bad label key", args: []string{"agents", "label", "ws-0001", "bad key=x"}, want: []string{`label key "bad key"`}},
		{name: "bad label value", args: []string{"agents", "label", "ws-0001", "role=not ok"}, want: []string{`"role"`, `"not ok"`}},
		{name: "label without = or -", args: []string{"agents", "label", "ws-0001", "role"}, want: []string{`"role"`, "KEY=VALUE"}},
		{name: "built-in label hostname", args: []string{"agents", "label", "ws-0001", "hostname=pc1"}, want: []string{`"hostname"`, "built-in"}},
		{name: "built-in label removed", args: []string{"agents", "label", "ws-0001", "os.build-"}, want: []string{`"os.build"`, "built-in"}},
		{name: "label set and removed", args: []string{"agents", "label", "ws-0001", "a=b", "a-"}, want: []string{`"a"`, "both"}},
		{name: "bad agent id", args: []string{"agents", "label", "WS 1", "a=b"}, want: []string{"agent id", `"WS 1"`}, usage: true},
		{name: "bad agent id to revoke", args: []string{"agents", "revoke", "../etc"}, want: []string{"agent id"}, usage: true},
		{name: "label without assignments", args: []string{"agents", "label", "ws-0001"}, want: []string{"KEY=VALUE"}, usage: true},
		{name: "revoke without agent", args: []string{"agents", "revoke"}, want: []string{"AGENT"}, usage: true},
		{name: "negative uses", args: []string{"tokens", "create", "--uses", "-1"}, want: []string{"--uses"}},
		{name: "zero uses", args: []string{"tokens", "create", "--uses=0"}, want: []string{"--uses"}},
		{name: "too many uses", args: []string{"tokens", "create", "--uses=100001"}, want: []string{"--uses"}},
		{name: "non-numeric uses", args: []string{"tokens", "create", "--uses=many"}, want: []string{"--uses"}, usage: true},
		{name: "negative ttl", args: []string{"tokens", "create", "--ttl", "-5m"}, want: []string{"--ttl"}},
		{name: "zero ttl", args: []string{"tokens", "create", "--ttl", "0s"}, want: []string{"--ttl"}},
		{name: "bad ttl", args: []string{"tokens", "create", "--ttl", "soon"}, want: []string{"--ttl", "soon"}, usage: true},
		{name: "bad token labels", args: []string{"tokens", "create", "--labels", "site"}, want: []string{"--labels", "KEY=VALUE"}},
		{name: "built-in token label", args: []string{"tokens", "create", "--labels", "os.build=1"}, want: []string{"--labels", "built-in"}},
		{name: "audit limit", args: []string{"audit", "list", "--limit", "0"}, want: []string{"--limit"}},
		{name: "audit since", args: []string{"audit", "list", "--since", "yesterday"}, want: []string{"--since", "yesterday"}},
		{name: "audit since negative", args: []string{"audit", "list", "--since", "-1h"}, want: []string{"--since"}},
		{name: "bad output", args: []string{"-o", "xml", "agents", "list"}, want: []string{"output", "xml"}},
		{name: "unknown flag", args: []string{"agents", "list", "--nope"}, want: []string{"--nope", "agents list --help"}, usage: true},
		{name: "unknown command", args: []string{"agents", "lst"}, want: []string{`"lst"`, `"list"`}, usage: true},
		{name: "unexpected argument", args: []string{"tokens", "list", "extra"}, want: []string{`"extra"`}, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := startController(t) // a working controller: the calls must not reach it
			code, stdout, stderr := runCLI(t, tt.args...)
			wantOneLineError(t, code, stdout, stderr, tt.want...)
			if want := exitError; tt.usage {
				if code != exitUsage {
					t.Errorf("exit %d, want %d (usage)", code, exitUsage)
				}
			} else if code != want {
				t.Errorf("exit %d, want %d", code, want)
			}
			if got := tc.fake.received(); len(got) != 0 {
				t.Errorf("bad input reached the controller: %v", got)
			}
			if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr has a stack or usage dump: %q", stderr)
			}
		})
	}
}
