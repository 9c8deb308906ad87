package selftest

import (
	"context"
	"fmt"
	"strings"

	"github.com/livedump/livedump/agent/host"
)

// securityState is what blocks or may block the DTrace driver: the host's
// reading of Secure Boot and memory integrity (host.ReadBootSecurity, the
// same one provisioning reports), and VBS.
type securityState struct {
	secureBoot host.State
	hvci       host.State
	vbs        host.VBSStatus
	notes      []string // why a part is unknown
}

// readSecurityState reads Secure Boot, HVCI and VBS through the host. A
// part that cannot be read is unknown, with the reason in notes.
func readSecurityState(ctx context.Context, h host.Host) securityState {
	var s securityState
	b, err := host.ReadBootSecurity(ctx, h)
	if err != nil {
		s.notes = append(s.notes, err.Error())
	}
	s.secureBoot, s.hvci = b.SecureBoot, b.HVCI()
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
		if s.secureBoot == host.StateUnknown && s.hvci == host.StateUnknown && s.vbs == host.VBSStatusNone {
			return Unknown, ev
		}
		return Pass, ev
	}
	var suspects []string
	if s.secureBoot == host.StateOn {
		suspects = append(suspects, "Secure Boot")
	}
	if s.hvci == host.StateOn {
		suspects = append(suspects, "HVCI")
	}
	if s.vbs == host.VBSRunning {
		suspects = append(suspects, "VBS")
	}
	if len(suspects) > 0 {
		return Fail, ev + "; the DTrace driver check failed and " + strings.Join(suspects, ", ") +
			" is on: a known cause of \"DTrace device not available\" (DTrace-on-Windows #62, #64); check that `bcdedit /set dtrace on` was applied after the last Windows update and rebooted"
	}
	if s.secureBoot == host.StateUnknown || s.hvci == host.StateUnknown || s.vbs == host.VBSStatusNone {
		return Unknown, ev + "; the DTrace driver check failed and this state is not fully known"
	}
	return Pass, ev + "; none of them is on, so they do not explain the driver failure"
}
