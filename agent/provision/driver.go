package provision

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/livedump/livedump/agent/host"
)

// The driver check: a machine is ready only once dtrace lists a syscall
// probe, which needs the DTrace driver loaded (WINDOWS-NOTES: "After install
// and reboot, prove the driver works (`dtrace -ln syscall::NtClose:return`
// lists one probe) before calling a machine ready"). Registry values, the
// boot flag and an installed dtrace.exe say nothing about whether the driver
// loaded: Secure Boot, memory integrity or a driver that does not match the
// build stop it, and only dtrace itself tells.

// DriverProbe is the probe the check lists.
const DriverProbe = "syscall::NtClose:return"

// driverCheckTimeout bounds the check: listing one probe takes well under a
// second on a healthy machine; a hung dtrace must not hang the report.
const driverCheckTimeout = time.Minute

// maxDriverOutput bounds what is kept of dtrace's output.
const maxDriverOutput = 64 << 10

// DriverCheckArgs are dtrace's arguments for the check.
func DriverCheckArgs() []string { return []string{"-ln", DriverProbe} }

// errDeviceNotAvailable is the part of dtrace's message when the driver is
// not loaded: "dtrace: failed to initialize dtrace: DTrace device not
// available on system".
const errDeviceNotAvailable = "DTrace device not available"

// proveDriver runs the check when the plan would report the machine ready,
// and turns the report into blocked or failed, with dtrace's own message
// and advice matching the cause, when dtrace cannot list the probe. A
// success is remembered for the rest of the boot.
func (p *Provisioner) proveDriver(ctx context.Context, rep *Report) error {
	boot, err := p.cfg.Host.BootTime(ctx)
	if err != nil {
		return fmt.Errorf("boot time: %w", err)
	}
	if !p.driverProven.IsZero() && p.driverProven.Equal(boot) {
		rep.Notes = append(rep.Notes, driverOKNote)
		return nil
	}
	problem := p.listDriverProbe(ctx)
	if problem == "" {
		p.driverProven = boot
		rep.Notes = append(rep.Notes, driverOKNote)
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	bs, err := host.ReadBootSecurity(ctx, p.cfg.Host)
	if err != nil {
		return fmt.Errorf("Secure Boot / memory integrity: %w", err)
	}
	bcd, err := p.cfg.Host.BCDDtrace(ctx)
	if err != nil {
		return fmt.Errorf("boot configuration: %w", err)
	}
	advice, securityCause := driverAdvice(problem, bs, bcd)
	detail := fmt.Sprintf("the DTrace driver does not work: `dtrace %s` %s; %s", strings.Join(DriverCheckArgs(), " "), problem, advice)
	if securityCause {
		// The operator must change the machine's security settings:
		// nothing provisioning does will help until then.
		rep.State, rep.Detail = Blocked, detail
		rep.Blockers = append(rep.Blockers, detail)
	} else {
		rep.State, rep.Detail = Failed, detail
	}
	p.cfg.Logger.Warn("DTrace driver check failed", "detail", detail)
	return nil
}

const driverOKNote = "DTrace driver works: `dtrace -ln " + DriverProbe + "` lists the probe"

// listDriverProbe runs the check and returns "" when dtrace listed the
// probe, else what went wrong, in dtrace's words where it said anything.
func (p *Provisioner) listDriverProbe(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, driverCheckTimeout)
	defer cancel()
	cmd, err := p.cfg.Host.DTraceCommand(ctx, DriverCheckArgs(), nil)
	if err != nil {
		return "could not start: " + err.Error()
	}
	var stdout, stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Sprintf("did not finish within %v", driverCheckTimeout)
	}
	if msg := dtraceMessage(stderr.String()); runErr != nil {
		if msg == "" {
			msg = runErr.Error()
		}
		return "failed: " + msg
	}
	if listsProbe(stdout.String()) {
		return ""
	}
	// Only BEGIN/END/ERROR exist when the driver does not match the
	// build (DTrace-on-Windows issue #7).
	return "listed no syscall probe (only the dtrace provider?)" + suffix(dtraceMessage(stderr.String()))
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// listsProbe reports whether `dtrace -l` output has the probe's line:
// ID, provider, (empty) module, function, name.
func listsProbe(out string) bool {
	for _, line := range strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "syscall" && f[len(f)-2] == "NtClose" && f[len(f)-1] == "return" {
			return true
		}
	}
	return false
}

// dtraceMessage is dtrace's first error line ("dtrace: failed to ..."), the
// one that says why; notices are skipped.
func dtraceMessage(stderr string) string {
	var first string
	for _, l := range strings.Split(strings.ReplaceAll(stderr, "\r\n", "\n"), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if first == "" {
			first = l
		}
		if strings.Contains(l, "failed") || strings.Contains(l, "not available") || strings.Contains(l, "invalid") {
			return l
		}
	}
	return first
}

// driverAdvice names the likely cause of problem and what to do, and says
// whether the cause is a platform security setting the operator must
// change. Memory integrity and Secure Boot are reported by users to make
// every dtrace call fail with "DTrace device not available on system"
// (https://github.com/microsoft/DTrace-on-Windows/issues/64); Microsoft's
// DTrace page says Secure Boot may need to be suspended for the bcdedit
// change (https://learn.microsoft.com/en-us/windows-hardware/drivers/devtest/dtrace).
func driverAdvice(problem string, bs host.BootSecurity, bcd host.BCDValue) (string, bool) {
	if !strings.Contains(problem, errDeviceNotAvailable) {
		if strings.Contains(problem, "no syscall probe") {
			return "the driver does not match this Windows build: install the DTrace MSI released for it (the one before March 2024 does not work on Windows 11, DTrace-on-Windows issue #53) and reboot", false
		}
		return "check that DTrace is installed and that dtrace runs by hand", false
	}
	var causes []string
	if !bcd.Present || !bcd.On {
		causes = append(causes, "the dtrace boot flag is "+bcd.String()+": run `bcdedit /set dtrace on` (provisioning's bcd.dtrace step) and reboot")
	}
	if bs.HVCI() == host.StateOn {
		causes = append(causes, "memory integrity (HVCI) is on: turn it off (Windows Security > Device security > Core isolation > Memory integrity, or "+host.HVCIKey+` `+host.HVCIValue+" = 0) and reboot; users report this message while Device Guard / memory integrity is on (DTrace-on-Windows issue #64)")
	}
	if bs.SecureBoot != host.StateOff {
		causes = append(causes, "Secure Boot is "+bs.SecureBoot.String()+": users report this message until Secure Boot is disabled in the firmware setup (DTrace-on-Windows issue #64; suspend BitLocker for one reboot first, or it asks for the recovery key)")
	}
	if len(causes) == 0 {
		return "the DTrace driver is not loaded although the boot flag is on and Secure Boot and memory integrity are off: check the dtrace service and the System event log for a driver load failure", false
	}
	// With the boot flag on, what is left is a security setting only the
	// operator can change: blocked rather than failed.
	security := bcd.Present && bcd.On && (bs.HVCI() == host.StateOn || bs.SecureBoot != host.StateOff)
	return "likely cause: " + strings.Join(causes, "; or "), security
}

// limitedBuffer keeps the first maxDriverOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxDriverOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
