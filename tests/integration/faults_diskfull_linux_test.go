package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestFaultControllerDiskFull puts the controller's partial uploads on a
// small tmpfs, lets a dump upload fill it, then frees space.
func TestFaultControllerDiskFull(t *testing.T) {
	faultSize(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the disk-full fault needs root to mount a tmpfs, and CI is set")
		}
		t.Skip("needs root: the disk-full fault mounts a tmpfs over the controller's partial uploads")
	}
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", fmt.Sprint(faultRate))
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "32m")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.3")
	dataDir := t.TempDir()
	uploads := filepath.Join(dataDir, "blobs", "uploads")
	if err := os.MkdirAll(uploads, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", uploads).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", uploads).Run() })
	c := startController(t, controllerOpts{dataDir: dataDir, profile: fastProfile(), dtraceMSI: writeSimMSI(t)})
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, map[string]string{"role": "vdi"}), hostname: "FULL-01", bandwidth: 16 << 20})
	op := fleetClient(t, c, pki.RoleOperator)
	provisionAll(t, op, 1)
	id := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "role=vdi", OnDemand: true})
	eventually(t, 60*time.Second, "the controller's upload folder full", func() bool {
		var fs syscall.Statfs_t
		return syscall.Statfs(uploads, &fs) == nil && fs.Bavail*uint64(fs.Bsize) < 1<<20
	})
	refusedAt := time.Now()
	time.Sleep(time.Second) // a few retries against the full disk
	ds := listDumps(t, op, id)
	if len(ds) != 1 || ds[0].GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("dumps while the disk is full: %v", ds)
	}
	kept, _ := filepath.Glob(filepath.Join(a.stateDir, "host", "drive_c", "*", "*.dmp"))
	if len(kept) != 1 {
		t.Fatalf("the agent kept %d dump files while the controller's disk was full, want 1", len(kept))
	}
	freed := time.Now()
	if out, err := exec.Command("mount", "-o", "remount,size=128m", uploads).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v: %s", err, out)
	}
	eventually(t, 60*time.Second, "the upload completed after space was freed", func() bool {
		return allDumps(listDumps(t, op, id), 1, livedumpv1.DumpState_DUMP_STATE_UPLOADED)
	})
	after := time.Since(freed)
	if n := dumpsVerified(t, op, id); n != 1 {
		t.Fatalf("%d dumps verified", n)
	}
	within(t, "upload completed after space was freed", after, 30*time.Second)
	m := scrape(t, c.MetricsAddr())
	if !strings.Contains(m, `livedump_controller_dumps_total{result="failed"}`) || strings.Contains(m, `livedump_controller_dumps_total{result="failed"} 0`+"\n") {
		t.Fatalf("no upload failed against the full disk:\n%s", grepLines(m, "dumps_total"))
	}
	t.Logf("fault: controller disk full (8 MiB tmpfs under a 32 MiB dump): uploads refused for %s while the agent kept the dump; after space was freed the upload completed and verified in %s (bound 30s); %s",
		ms(freed.Sub(refusedAt)), ms(after), strings.TrimSpace(grepLines(m, `dumps_total{result="failed"}`)))
}
