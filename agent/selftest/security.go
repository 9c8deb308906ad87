package selftest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/livedump/livedump/agent/host"
)

// Registry values behind Secure Boot and memory integrity (HVCI).
// UEFISecureBootEnabled is 1 when the firmware booted with Secure Boot on;
// it reads 0 on some machines whose firmware is in Setup Mode with Secure
// Boot "on" (techcommunity.microsoft.com "SecureBoot Enabled but
// UEFISecureBootEnabled equals 0"), so 0 is reported as what the registry
// says, not as proof. HVCI's Enabled value is what the Windows Security
// "Memory integrity" switch writes.
const (
	secureBootStateKey = `HKLM\SYSTEM\CurrentControlSet\Control\SecureBoot\State`
	hvciKey            = `HKLM\SYSTEM\CurrentControlSet\Control\DeviceGuard\Scenarios\HypervisorEnforcedCodeIntegrity`
)

// tristate is on, off or not known.
type tristate int

const (
	unknownState tristate = iota
	off
	on
)

func (t tristate) String() string {
	switch t {
	case on:
		return "on"
	case off:
		return "off"
	}
	return "unknown"
}

// securityState is what blocks or may block the DTrace driver.
type securityState struct {
	secureBoot tristate
	hvci       tristate
	vbs        host.VBSStatus
	notes      []string // why a part is unknown
}

// readSecurityState reads Secure Boot, HVCI and VBS through the host.
//
// TODO(win-prereq): switch to the host's Secure Boot / HVCI queries once
// they are merged; this is the only function that reads them.
func readSecurityState(ctx context.Context, h host.Host) securityState {
	var s securityState
	flag := func(key, name, what string) tristate {
		v, err := h.GetValue(key, name)
		switch {
		case errors.Is(err, host.ErrNotExist):
			s.notes = append(s.notes, what+" not reported ("+name+" absent)")
			return unknownState
		case err != nil:
			s.notes = append(s.notes, what+": "+err.Error())
			return unknownState
		case v.Type != host.DWord:
			s.notes = append(s.notes, fmt.Sprintf("%s: %s is %s", what, name, v.Type))
			return unknownState
		case v.Num != 0:
			return on
		}
		return off
	}
	s.secureBoot = flag(secureBootStateKey, "UEFISecureBootEnabled", "Secure Boot")
	s.hvci = flag(hvciKey, "Enabled", "HVCI")
	vbs, err := h.VBSStatus(ctx)
	if err != nil {
		s.notes = append(s.notes, "VBS: "+err.Error())
		vbs = host.VBSStatusNone
	}
	s.vbs = vbs
	return s
}

// secureBootVBS reports Secure Boot, HVCI and VBS. They are facts while the
// driver works; when it does not, any of them on is a known cause of
// "DTrace device not available on system" (DTrace-on-Windows issues #62
// and #64, https://github.com/microsoft/DTrace-on-Windows/issues/62), and
// the check fails naming it.
func (r *run) secureBootVBS(ctx context.Context) (Status, string) {
	s := readSecurityState(ctx, r.h)
	ev := fmt.Sprintf("Secure Boot %s, HVCI (memory integrity) %s, VBS %s", s.secureBoot, s.hvci, s.vbs)
	if len(s.notes) > 0 {
		ev += " (" + strings.Join(s.notes, "; ") + ")"
	}
	if r.status(CheckDTraceDriver) != Fail {
		if s.secureBoot == unknownState && s.hvci == unknownState && s.vbs == host.VBSStatusNone {
			return Unknown, ev
		}
		return Pass, ev
	}
	var suspects []string
	if s.secureBoot == on {
		suspects = append(suspects, "Secure Boot")
	}
	if s.hvci == on {
		suspects = append(suspects, "HVCI")
	}
	if s.vbs == host.VBSRunning {
		suspects = append(suspects, "VBS")
	}
	if len(suspects) > 0 {
		return Fail, ev + "; the DTrace driver check failed and " + strings.Join(suspects, ", ") +
			" is on: a known cause of \"DTrace device not available\" (DTrace-on-Windows #62, #64); check that `bcdedit /set dtrace on` was applied after the last Windows update and rebooted"
	}
	if s.secureBoot == unknownState || s.hvci == unknownState || s.vbs == host.VBSStatusNone {
		return Unknown, ev + "; the DTrace driver check failed and this state is not fully known"
	}
	return Pass, ev + "; none of them is on, so they do not explain the driver failure"
}
