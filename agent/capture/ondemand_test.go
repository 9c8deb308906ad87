//go:build !windows

package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func onDemandArm(id string) *livedumpv1.ArmCapture {
	return &livedumpv1.ArmCapture{CaptureId: id, OnDemand: true, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP,
		Expires: timestamppb.New(time.Now().Add(time.Hour))}
}

// TestOnDemandDumpsFromHelperProcess: the on-demand script names the
// helper's pid at a syscall return (never BEGIN), the helper (this test
// binary re-executed, see helper.go's init) runs while dtrace does and is
// gone after, and the capture is done once the dump file is known.
func TestOnDemandDumpsFromHelperProcess(t *testing.T) {
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen")
	script := filepath.Join(dir, "agent", "scripts", "od1.d")
	// The scripted dtrace checks that the pid in the script is a running
	// process, as the probe only fires in one.
	dtrace := fmt.Sprintf(`p=$(sed -n 's|^/pid == \([0-9]*\)/$|\1|p' %s); grep -q '^BEGIN' %s && exit 3; kill -0 "$p" && echo "$p" > %s`, script, script, seen)
	calls := make(chan string, 4)
	m, _, rec, _ := setupIn(t, dir, dtrace, func(c *Config) {
		c.OnDump = func(captureID, eventID string, _ livedumpv1.UploadMode, _ time.Time) {
			calls <- captureID
		}
		c.AwaitDump = func(ctx context.Context, captureID string) (string, error) {
			return "DTRACE-20261126-1405.dmp", nil
		}
	})
	if err := m.Arm(onDemandArm("od1")); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "od1", livedumpv1.TargetState_TARGET_STATE_DONE)
	if detail != "on-demand dump taken: DTRACE-20261126-1405.dmp" {
		t.Fatalf("detail %q", detail)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatalf("the scripted dtrace did not see a live helper pid: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || pid == os.Getpid() {
		t.Fatalf("helper pid %d", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the helper %d still runs after the dump: %v", pid, err)
	}
	if len(calls) != 1 || <-calls != "od1" {
		t.Fatal("OnDump was not called once for the on-demand dump")
	}
}

// TestOnDemandFailsWhenNoDumpAppears: lkd() ran (dtrace exited 0) but no
// file appeared within the bound: the capture fails with the reason.
func TestOnDemandFailsWhenNoDumpAppears(t *testing.T) {
	dir := t.TempDir()
	m, _, rec, _ := setupIn(t, dir, "exit 0", func(c *Config) {
		c.OnDemandTimeout = time.Second
		c.AwaitDump = func(ctx context.Context, captureID string) (string, error) {
			<-ctx.Done()
			return "", context.Cause(ctx)
		}
	})
	if err := m.Arm(onDemandArm("od2")); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "od2", livedumpv1.TargetState_TARGET_STATE_FAILED)
	if !strings.Contains(detail, "lkd() ran but no live dump file appeared within 1s") {
		t.Fatalf("detail %q", detail)
	}
}

// TestOnDemandFailsWhenProbeNeverFires: dtrace never exits (its probe in
// the helper never fired): killed at the bound, the capture fails.
func TestOnDemandFailsWhenProbeNeverFires(t *testing.T) {
	dir := t.TempDir()
	m, _, rec, _ := setupIn(t, dir, "exec sleep 60", func(c *Config) { c.OnDemandTimeout = time.Second })
	if err := m.Arm(onDemandArm("od3")); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "od3", livedumpv1.TargetState_TARGET_STATE_FAILED)
	if !strings.Contains(detail, "syscall::NtDelayExecution:return in the helper process") || !strings.Contains(detail, "did not fire within 1s") {
		t.Fatalf("detail %q", detail)
	}
}

// TestNoteNoDump: triggers without a dump are named on the target detail,
// bounded.
func TestNoteNoDump(t *testing.T) {
	m, _, rec, _ := setup(t, "exec sleep 60")
	if err := m.Arm(arm("nd1", 10, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	waitState(t, rec, "nd1", livedumpv1.TargetState_TARGET_STATE_ARMED)
	at := time.Date(2026, 11, 26, 14, 5, 1, 0, time.UTC)
	for i := range 5 {
		m.NoteNoDump("nd1", fmt.Sprintf("ev%d", i), at, "dump dropped (another live dump was being written)")
	}
	_, detail := rec.lastState("nd1")
	if !strings.HasPrefix(detail, "5 trigger(s) got no live dump; trigger ev0 at 14:05:01.000: dump dropped") || !strings.HasSuffix(detail, "; and 2 more") {
		t.Fatalf("detail %q", detail)
	}
}
