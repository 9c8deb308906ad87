package selftest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/livedump/livedump/agent/host"
)

// eventWindow is how far back the event channel check reads.
const eventWindow = 30 * 24 * time.Hour

// eventChannel reads Microsoft-Windows-Kernel-LiveDump/Operational through
// the host (wevtutil on Windows), which is where the agent learns that a
// dump was written (event 4) or the disk was full (202).
func (r *run) eventChannel(ctx context.Context) (Status, string) {
	since := r.t.cfg.Now().Add(-eventWindow)
	evs, err := r.h.LiveDumpEvents(ctx, since)
	if err != nil {
		return Fail, fmt.Sprintf("cannot read %s: %v", host.LiveDumpChannel, err)
	}
	ev := fmt.Sprintf("%s readable: %d dump events (ID %d written, %d disk full) in the last %d days",
		host.LiveDumpChannel, len(evs), host.EventDumpWriteEnd, host.EventDumpDiskFull, int(eventWindow.Hours()/24))
	if n := len(evs); n > 0 {
		last := evs[n-1]
		ev += fmt.Sprintf("; last: ID %d at %s, NTSTATUS 0x%08X, %d bytes", last.ID, last.Time.UTC().Format(time.RFC3339), last.NTStatus, last.TotalBytes)
	}
	return Pass, ev
}

// Live kernel report settings (WINDOWS-NOTES "Live dump registry", from
// learn.microsoft.com/windows-hardware/drivers/debugger/
// kernel-live-dump-code-reference and the WER settings page).
const (
	fullLiveKernelReportsKey = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\FullLiveKernelReports`
	crashControlKey          = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl`
	defaultReportsMax        = 1
	defaultSystemThrottle    = 120 // hours
	defaultComponentThrottle = 168 // hours
)

// dword reads a REG_DWORD, with def when it is absent.
func dword(h host.Host, key, name string, def uint32) (val uint32, set bool, err error) {
	v, err := h.GetValue(key, name)
	if errors.Is(err, host.ErrNotExist) {
		return def, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if v.Type != host.DWord {
		return 0, true, fmt.Errorf("%s\\%s is %s, Windows reads a %s", key, name, v.Type, host.DWord)
	}
	return uint32(v.Num), true, nil
}

func shown(v uint32, unit string, set bool) string {
	if set {
		return fmt.Sprint(v, unit)
	}
	return fmt.Sprintf("%d%s (not set: default)", v, unit)
}

// registry reads the live kernel report settings as Windows reads them and
// says whether the values provisioning wrote wait for a reboot.
func (r *run) registry(ctx context.Context) (Status, string) {
	var problems, facts []string
	maxN, maxSet, err := dword(r.h, fullLiveKernelReportsKey, "FullLiveReportsMax", defaultReportsMax)
	if err != nil {
		return Fail, err.Error()
	}
	sys, sysSet, err := dword(r.h, fullLiveKernelReportsKey, "SystemThrottleThreshold", defaultSystemThrottle)
	if err != nil {
		return Fail, err.Error()
	}
	comp, compSet, err := dword(r.h, fullLiveKernelReportsKey, "ComponentThrottleThreshold", defaultComponentThrottle)
	if err != nil {
		return Fail, err.Error()
	}
	keep, keepSet, err := dword(r.h, crashControlKey, "AlwaysKeepMemoryDump", 0)
	if err != nil {
		return Fail, err.Error()
	}
	facts = append(facts, "FullLiveReportsMax "+shown(maxN, "", maxSet),
		"SystemThrottleThreshold "+shown(sys, "h", sysSet), "ComponentThrottleThreshold "+shown(comp, "h", compSet),
		"AlwaysKeepMemoryDump "+shown(keep, "", keepSet))
	if maxN == 0 {
		problems = append(problems, "FullLiveReportsMax is 0: full live dumps are disabled")
	}
	if comp < sys {
		problems = append(problems, "ComponentThrottleThreshold is below SystemThrottleThreshold, which Windows does not allow")
	}
	if sys != 0 || comp != 0 {
		facts = append(facts, fmt.Sprintf("throttled: at most one full live dump per %dh per machine", sys))
	}
	path, err := host.LiveDumpWinPath(r.h)
	if err != nil {
		problems = append(problems, "LiveKernelReportsPath: "+err.Error())
	} else {
		facts = append(facts, "dumps go to "+path)
	}
	if r.t.cfg.Provision != nil {
		st, err := r.t.cfg.Provision.State(ctx)
		switch {
		case err != nil:
			facts = append(facts, "provisioning state unknown: "+err.Error())
		case st.RebootRequired:
			problems = append(problems, "values provisioning changed wait for a reboot (provisioning state "+string(st.State)+"): they are not in effect yet")
		default:
			facts = append(facts, "no provisioning change waits for a reboot")
		}
	}
	if pending, reasons, err := host.PendingReboot(r.h); err == nil && pending {
		facts = append(facts, "Windows waits for a reboot: "+strings.Join(reasons, ", "))
	}
	if len(problems) > 0 {
		return Fail, strings.Join(problems, "; ") + " (" + strings.Join(facts, ", ") + ")"
	}
	return Pass, strings.Join(facts, ", ")
}

// diskFree compares the free space of the dump folder's volume with what
// a full live dump may need. The folder itself may not exist yet: Windows
// creates it with the first dump, so the nearest existing parent counts.
func (r *run) diskFree(context.Context) (Status, string) {
	dir, err := r.h.LiveDumpDir()
	if err != nil {
		return Unknown, "dump folder: " + err.Error()
	}
	var free uint64
	p := dir
	for i := 0; ; i++ {
		free, err = r.h.DiskFree(p)
		if err == nil {
			break
		}
		parent := filepath.Dir(p)
		if strings.Contains(p, `\`) {
			if j := strings.LastIndex(strings.TrimRight(p, `\`), `\`); j >= 2 {
				parent = p[:j+1]
			}
		}
		if parent == p || i == 32 {
			return Unknown, fmt.Sprintf("free space of %s: %v", dir, err)
		}
		p = parent
	}
	need, what := r.t.cfg.ExpectedDumpBytes, "expected_dump_bytes"
	if need == 0 {
		if need, err = r.h.PhysicalMemory(); err != nil {
			return Unknown, "physical memory: " + err.Error()
		}
		what = "physical memory, the worst case of a full live dump"
	}
	shownDir := dir
	if win, err := host.LiveDumpWinPath(r.h); err == nil {
		shownDir = win
	}
	ev := fmt.Sprintf("%s free for %s; a dump may need %s (%s)", gib(free), shownDir, gib(need), what)
	if free < need {
		return Fail, ev
	}
	return Pass, ev
}

func gib(n uint64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
