package profile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Profile)
		field string
	}{
		{"reports zero", func(p *Profile) { p.FullLiveReportsMax = 0 }, "full_live_reports_max"},
		{"reports too many", func(p *Profile) { p.FullLiveReportsMax = 101 }, "full_live_reports_max"},
		{"threshold rule", func(p *Profile) { p.SystemThrottleThreshold = 120; p.ComponentThrottleThreshold = 100 }, "component_throttle_threshold"},
		{"threshold range", func(p *Profile) { p.SystemThrottleThreshold = 9000; p.ComponentThrottleThreshold = 9000 }, "system_throttle_threshold"},
		{"keep dump", func(p *Profile) { p.AlwaysKeepMemoryDump = 2 }, "always_keep_memory_dump"},
		{"dos path", func(p *Profile) { p.LiveKernelReportsPath = `C:\livedumps` }, "live_kernel_reports_path"},
		{"no folder", func(p *Profile) { p.LiveKernelReportsPath = `\??\C:\` }, "live_kernel_reports_path"},
		{"dot dot", func(p *Profile) { p.LiveKernelReportsPath = `\??\C:\a\..\Windows` }, "live_kernel_reports_path"},
		{"quote", func(p *Profile) { p.LiveKernelReportsPath = `\??\C:\a"b` }, "live_kernel_reports_path"},
		{"env var", func(p *Profile) { p.LiveKernelReportsPath = `\??\%SystemDrive%\livedumps` }, "live_kernel_reports_path"},
		{"symbol path injection", func(p *Profile) { p.SymbolPath = `srv*C:\s*https://x & calc` }, "symbol_path"},
		{"reboot delay", func(p *Profile) { p.RebootDelay = time.Hour }, "reboot_delay"},
		{"edition", func(p *Profile) { p.UnsupportedEditions = []string{"Core Single"} }, "unsupported_editions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Default()
			tc.edit(&p)
			err := p.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate = %v, want a FieldError for %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), "profile."+tc.field) {
				t.Fatalf("error %q does not name the field", err)
			}
		})
	}
	ok := Default()
	ok.SystemThrottleThreshold, ok.ComponentThrottleThreshold = 120, 168
	ok.LiveKernelReportsPath = `\??\D:\dumps\live (x64)`
	ok.SymbolPath = ""
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid profile refused: %v", err)
	}
}

func TestProtoRoundTrip(t *testing.T) {
	p := Default()
	p.VBS = true
	p.UnsupportedEditions = []string{"Core"}
	back, err := FromProto(p.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back.ToProto(), p.ToProto()) {
		t.Fatalf("round trip changed the profile: %+v != %+v", back, p)
	}
	m := p.ToProto()
	m.FullLiveReportsMax = 0
	if _, err := FromProto(m); err == nil {
		t.Fatal("FromProto accepted an invalid profile")
	}
}
