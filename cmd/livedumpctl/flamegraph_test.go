package main

import (
	"strings"
	"testing"

	"github.com/livedump/livedump/internal/flamegraph"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// flameNode finds the node at path (names from the root's child down).
func flameNode(t *testing.T, n *flamegraph.Node, path ...string) *flamegraph.Node {
	t.Helper()
next:
	for _, name := range path {
		for _, c := range n.Children {
			if c.Name == name {
				n = c
				continue next
			}
		}
		t.Fatalf("no frame %q under %q", name, n.Name)
	}
	return n
}

func decodeFlame(t *testing.T, out string) *flamegraph.Node {
	t.Helper()
	root, err := flamegraph.Decode(strings.NewReader(out))
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	return root
}

// TestFlamegraph: events flamegraph reads every page of the capture's
// events and draws them, outermost frame first, per machine and stack.
func TestFlamegraph(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "events", "flamegraph", "--capture", "c-1")
	if !strings.HasPrefix(out, "<svg ") || !strings.Contains(out, "capture c-1") || !strings.Contains(out, "8 events · user stacks · all agents") {
		t.Fatalf("not the graph of c-1:\n%s", out)
	}
	root := decodeFlame(t, out)
	if root.Count != fakeEvents || flameNode(t, root, "app!Main").Count != fakeEvents ||
		flameNode(t, root, "app!Main", "app!Open", "ntdll!NtCreateFile").Count != 4 || flameNode(t, root, "app!Main", "app!Save").Count != 4 {
		t.Errorf("counts:\n%s", out)
	}
	if n := len(tc.fake.received()); n != 3 {
		t.Errorf("%d calls, want 3 pages", n)
	}
	if again := runOK(t, "events", "flamegraph", "--capture", "c-1"); again != out {
		t.Error("a second run draws other bytes")
	}

	// One machine, by hostname in any case.
	tc.fake.reset()
	out = runOK(t, "events", "flamegraph", "--capture", "c-1", "--agent", "ws-0002")
	root = decodeFlame(t, out)
	if root.Count != 4 || len(flameNode(t, root, "app!Main").Children) != 1 || !strings.Contains(out, "agent ws-0002") {
		t.Errorf("--agent ws-0002:\n%s", out)
	}
	if calls := tc.fake.received(); calls[0].method != "ListAgents" {
		t.Errorf("first call %s, want ListAgents (resolving --agent)", calls[0].method)
	}

	// Kernel stacks; both.
	root = decodeFlame(t, runOK(t, "events", "flamegraph", "--capture", "c-1", "--stack", "kernel"))
	if root.Count != 8 || root.Self != 4 || flameNode(t, root, "nt!KiSystemServiceCopyEnd").Count != 4 {
		t.Errorf("--stack kernel: %d events, %d without frames", root.Count, root.Self)
	}
	root = decodeFlame(t, runOK(t, "events", "flamegraph", "--capture", "c-1", "--stack", "both", "--width", "600"))
	if flameNode(t, root, "app!Main", "app!Open", "ntdll!NtCreateFile", "nt!KiSystemServiceCopyEnd").Count != 4 {
		t.Error("--stack both: the kernel stack does not follow the user stack")
	}
}

// TestFlamegraphMaxEvents: a capture with more events than --max-events is
// drawn from the first ones, and the graph and stderr say so.
func TestFlamegraphMaxEvents(t *testing.T) {
	tc := startController(t)
	code, out, stderr := runCLI(t, "events", "flamegraph", "--capture", "c-1", "--max-events", "5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if root := decodeFlame(t, out); root.Count != 5 || !strings.Contains(out, "truncated") {
		t.Errorf("%d events drawn:\n%s", root.Count, out)
	}
	if !strings.Contains(stderr, "first 5 events") || !strings.Contains(stderr, "--max-events") {
		t.Errorf("stderr %q", stderr)
	}
	calls := tc.fake.received()
	if got := calls[0].req.(*livedumpv1.ListEventsRequest).GetLimit(); got != 6 {
		t.Errorf("first page asked for %d events, want 6 (one more tells whether there are more)", got)
	}
	code, _, stderr = runCLI(t, "events", "flamegraph", "--capture", "c-1", "--max-events", "8")
	if code != 0 || stderr != "" {
		t.Errorf("--max-events 8 of 8: exit %d, stderr %q", code, stderr)
	}
}

// TestFlamegraphBadInput: usage errors name the flag and call nothing.
func TestFlamegraphBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{}, []string{"--capture: required"}},
		{[]string{"--capture", "c-1", "--stack", "User"}, []string{"--stack", `"User"`, "user, kernel or both"}},
		{[]string{"--capture", "c-1", "--width", "20"}, []string{"--width", "200", "10000", "got 20"}},
		{[]string{"--capture", "c-1", "--width", "20000"}, []string{"--width"}},
		{[]string{"--capture", "c-1", "--max-events", "0"}, []string{"--max-events", "got 0"}},
		{[]string{"--capture", "c-1", "--max-events", "2000000"}, []string{"--max-events"}},
		{[]string{"--capture", "c-1", "-o", "json"}, []string{"-o json", "SVG"}},
		{[]string{"--capture", "c-1", "--agent", "WS 1"}, []string{"--agent", `"WS 1"`}},
	} {
		tc := startController(t)
		code, stdout, stderr := runCLI(t, append([]string{"events", "flamegraph"}, c.args...)...)
		wantOneLineError(t, code, stdout, stderr, append(c.want, "events flamegraph --help")...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", c.args, code, exitUsage)
		}
		if got := tc.fake.received(); len(got) != 0 {
			t.Errorf("%q reached the controller: %v", c.args, got)
		}
	}
	// An agent that is not there: ListAgents only.
	tc := startController(t)
	code, stdout, stderr := runCLI(t, "events", "flamegraph", "--capture", "c-1", "--agent", "WS-0003")
	wantOneLineError(t, code, stdout, stderr, `--agent "WS-0003": no agent`)
	for _, r := range tc.fake.received() {
		if r.method != "ListAgents" {
			t.Errorf("called %s", r.method)
		}
	}
}
