// Package profile is the provisioning profile: the desired state of a
// Windows host for live kernel dumps, with the defaults of the recipe as
// corrected, and the validation both the controller (at configuration time)
// and the agent (before touching the host) apply.
package profile

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Profile is the desired state of a host.
type Profile struct {
	FullLiveReportsMax         uint32
	SystemThrottleThreshold    uint32 // hours
	ComponentThrottleThreshold uint32 // hours
	AlwaysKeepMemoryDump       uint32
	LiveKernelReportsPath      string // NT form: \??\C:\livedumps
	DTraceBCD                  bool
	VBS                        bool
	SymbolPath                 string
	InstallDTrace              bool
	AllowBitLockerSuspend      bool
	RebootDelay                time.Duration
	UnsupportedEditions        []string
}

// DefaultSymbolPath caches Microsoft's public symbols in C:\symbols.
const DefaultSymbolPath = `srv*C:\symbols*https://msdl.microsoft.com/download/symbols`

// Default is the recipe as corrected: up to 10 full live reports, no
// throttling, keep the memory dump, dumps in \??\C:\livedumps (the folder
// is left for Windows to create with the right ACL), dtrace boot flag on, VBS
// off (only fbt needs it), DTrace installed, and no BitLocker suspension
// unless the operator allows it.
func Default() Profile {
	return Profile{
		FullLiveReportsMax:         10,
		SystemThrottleThreshold:    0,
		ComponentThrottleThreshold: 0,
		AlwaysKeepMemoryDump:       1,
		LiveKernelReportsPath:      `\??\C:\livedumps`,
		DTraceBCD:                  true,
		VBS:                        false,
		SymbolPath:                 DefaultSymbolPath,
		InstallDTrace:              true,
		AllowBitLockerSuspend:      false,
		RebootDelay:                time.Minute,
	}
}

// Bounds enforced by Validate.
const (
	MaxFullLiveReports = 100
	MaxThresholdHours  = 24 * 365
	MaxRebootDelay     = 10 * time.Minute
	maxPathLen         = 200
	maxSymbolPathLen   = 1024
)

var (
	ntPathRe     = regexp.MustCompile(`^\\\?\?\\[A-Za-z]:(\\[A-Za-z0-9 _.()-]+)+$`)
	symbolPathRe = regexp.MustCompile(`^[A-Za-z0-9 _.:\\/*;()=-]*$`)
	editionRe    = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)
)

// FieldError names the profile field that is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return "profile." + e.Field + ": " + e.Reason }

// Validate checks every field against its allow-list and range. The values
// end up in the registry, a command line and a child environment, so
// nothing outside the allow-lists is accepted.
func (p Profile) Validate() error {
	switch {
	case p.FullLiveReportsMax == 0:
		return &FieldError{"full_live_reports_max", "0 disables full live kernel reports; use 1 to 100"}
	case p.FullLiveReportsMax > MaxFullLiveReports:
		return &FieldError{"full_live_reports_max", fmt.Sprintf("%d is above %d", p.FullLiveReportsMax, MaxFullLiveReports)}
	case p.SystemThrottleThreshold > MaxThresholdHours:
		return &FieldError{"system_throttle_threshold", fmt.Sprintf("%d hours is above %d", p.SystemThrottleThreshold, MaxThresholdHours)}
	case p.ComponentThrottleThreshold > MaxThresholdHours:
		return &FieldError{"component_throttle_threshold", fmt.Sprintf("%d hours is above %d", p.ComponentThrottleThreshold, MaxThresholdHours)}
	case p.ComponentThrottleThreshold < p.SystemThrottleThreshold:
		return &FieldError{"component_throttle_threshold", fmt.Sprintf("%d must be >= system_throttle_threshold (%d): Windows requires it", p.ComponentThrottleThreshold, p.SystemThrottleThreshold)}
	case p.AlwaysKeepMemoryDump > 1:
		return &FieldError{"always_keep_memory_dump", fmt.Sprintf("%d: must be 0 or 1", p.AlwaysKeepMemoryDump)}
	}
	if err := validateNTPath(p.LiveKernelReportsPath); err != nil {
		return &FieldError{"live_kernel_reports_path", err.Error()}
	}
	if len(p.SymbolPath) > maxSymbolPathLen || !symbolPathRe.MatchString(p.SymbolPath) {
		return &FieldError{"symbol_path", fmt.Sprintf("%q: at most %d characters of letters, digits and _ . : \\ / * ; ( ) = - and space", p.SymbolPath, maxSymbolPathLen)}
	}
	if p.RebootDelay < 0 || p.RebootDelay > MaxRebootDelay {
		return &FieldError{"reboot_delay", fmt.Sprintf("%s: must be between 0s and %s", p.RebootDelay, MaxRebootDelay)}
	}
	for _, e := range p.UnsupportedEditions {
		if !editionRe.MatchString(e) {
			return &FieldError{"unsupported_editions", fmt.Sprintf("%q is not an EditionID (letters and digits, e.g. Core, ServerDatacenter)", e)}
		}
	}
	return nil
}

func validateNTPath(p string) error {
	if len(p) > maxPathLen {
		return fmt.Errorf("%q is longer than %d characters", p, maxPathLen)
	}
	if !ntPathRe.MatchString(p) {
		return fmt.Errorf(`%q is not an NT path like \??\C:\livedumps (drive letter, then folders of letters, digits, space and _ . ( ) -)`, p)
	}
	for _, c := range strings.Split(p[7:], `\`) {
		if strings.Trim(c, ". ") == "" {
			return fmt.Errorf("%q has a folder made only of dots or spaces", p)
		}
	}
	return nil
}

// ToProto converts the profile for the wire.
func (p Profile) ToProto() *livedumpv1.ProvisionProfile {
	return &livedumpv1.ProvisionProfile{
		FullLiveReportsMax:         p.FullLiveReportsMax,
		SystemThrottleThreshold:    p.SystemThrottleThreshold,
		ComponentThrottleThreshold: p.ComponentThrottleThreshold,
		AlwaysKeepMemoryDump:       p.AlwaysKeepMemoryDump,
		LiveKernelReportsPath:      p.LiveKernelReportsPath,
		DtraceBcd:                  p.DTraceBCD,
		Vbs:                        p.VBS,
		SymbolPath:                 p.SymbolPath,
		InstallDtrace:              p.InstallDTrace,
		AllowBitlockerSuspend:      p.AllowBitLockerSuspend,
		RebootDelay:                durationpb.New(p.RebootDelay),
		UnsupportedEditions:        append([]string(nil), p.UnsupportedEditions...),
	}
}

// FromProto converts and validates a profile received from the wire.
func FromProto(m *livedumpv1.ProvisionProfile) (Profile, error) {
	if m == nil {
		return Profile{}, &FieldError{"", "missing"}
	}
	p := Profile{
		FullLiveReportsMax:         m.GetFullLiveReportsMax(),
		SystemThrottleThreshold:    m.GetSystemThrottleThreshold(),
		ComponentThrottleThreshold: m.GetComponentThrottleThreshold(),
		AlwaysKeepMemoryDump:       m.GetAlwaysKeepMemoryDump(),
		LiveKernelReportsPath:      m.GetLiveKernelReportsPath(),
		DTraceBCD:                  m.GetDtraceBcd(),
		VBS:                        m.GetVbs(),
		SymbolPath:                 m.GetSymbolPath(),
		InstallDTrace:              m.GetInstallDtrace(),
		AllowBitLockerSuspend:      m.GetAllowBitlockerSuspend(),
		RebootDelay:                m.GetRebootDelay().AsDuration(),
		UnsupportedEditions:        append([]string(nil), m.GetUnsupportedEditions()...),
	}
	return p, p.Validate()
}
