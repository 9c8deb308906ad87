//go:build windows

package selftest_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/selftest"
)

// TestWindowsHostSelftest runs the self-test against the machine it is on
// through the Windows host: the real registry, GetDiskFreeSpaceEx,
// GlobalMemoryStatusEx, wevtutil and WMI. It reads only, so it is safe on
// any Windows machine; in CI it runs under Wine (.ci/run), where dtrace,
// the Kernel-LiveDump channel and the Device Guard WMI class do not exist,
// and each check must still answer with evidence instead of hanging or
// failing the run.
func TestWindowsHostSelftest(t *testing.T) {
	// Not t.TempDir: its cleanup fails under Wine 8 (unlinkat is missing),
	// and the self-test removes its own script anyway.
	st, err := selftest.New(selftest.Config{Host: host.NewWindows(), FireTimeout: 5 * time.Second, CheckTimeout: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := st.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_ = rep.WriteText(&b)
	t.Logf("selftest on this Windows host (build %s):\n%s", rep.OSBuild, b.String())
	if len(rep.Checks) != len(allChecks) || rep.OSBuild == "" {
		t.Fatalf("%d checks, build %q", len(rep.Checks), rep.OSBuild)
	}
	for _, c := range rep.Checks {
		if c.Evidence == "" || (c.Status != selftest.Pass && c.Status != selftest.Fail && c.Status != selftest.Unknown) {
			t.Errorf("%s: %q %q", c.Check, c.Status, c.Evidence)
		}
	}
	// The registry check read the real registry: it names what it read.
	if ev := evidence(rep, selftest.CheckLiveDumpReg); !strings.Contains(ev, "FullLiveReportsMax") {
		t.Errorf("registry evidence: %s", ev)
	}
	if ev := evidence(rep, selftest.CheckDiskFree); !strings.Contains(ev, "GiB free for") {
		t.Errorf("disk evidence: %s", ev)
	}
}
