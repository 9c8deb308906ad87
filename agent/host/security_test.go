package host

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseSecurityServicesJSON(t *testing.T) {
	for file, want := range map[string]SecurityServices{
		"services-hvci.json":   {Reported: true, Running: []int{1, 2}},
		"services-none.json":   {Reported: true, Running: []int{}},
		"services-null.json":   {Reported: true, Running: []int{}},
		"services-single.json": {Reported: true, Running: []int{1}},
		// No Device Guard class: nothing is known.
		"vbs-empty.txt": {},
	} {
		got, err := ParseSecurityServicesJSON(readWMI(t, file))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ParseSecurityServicesJSON = %+v, %v; want %+v", file, got, err, want)
		}
	}
	for _, file := range []string{"services-string.json", "vbs-running.json", "vbs-table.txt"} {
		if got, err := ParseSecurityServicesJSON(readWMI(t, file)); !errors.Is(err, ErrWMIUnreadable) {
			t.Errorf("%s: ParseSecurityServicesJSON = %+v, %v; want ErrWMIUnreadable", file, got, err)
		}
	}
	if !(SecurityServices{Reported: true, Running: []int{1, 2}}).HVCI() || (SecurityServices{Reported: true, Running: []int{1}}).HVCI() {
		t.Error("HVCI() does not look for service 2")
	}
}

// fakeSecurity is a registry of a few values and a Device Guard answer.
type fakeSecurity struct {
	values map[string]Value
	svc    SecurityServices
	err    error
}

func (f fakeSecurity) GetValue(key, name string) (Value, error) {
	if v, ok := f.values[key+`\`+name]; ok {
		return v, nil
	}
	return Value{}, fmt.Errorf("%s %s: %w", key, name, ErrNotExist)
}

func (f fakeSecurity) SecurityServicesRunning(context.Context) (SecurityServices, error) {
	return f.svc, f.err
}

func TestReadBootSecurity(t *testing.T) {
	sb, hv := SecureBootStateKey+`\`+SecureBootValue, HVCIKey+`\`+HVCIValue
	running := SecurityServices{Reported: true, Running: []int{2}}
	none := SecurityServices{Reported: true}
	for _, c := range []struct {
		name string
		f    fakeSecurity
		want BootSecurity
		hvci State
	}{
		{"windows 11 with memory integrity", fakeSecurity{map[string]Value{sb: DWORD(1), hv: DWORD(1)}, running, nil},
			BootSecurity{StateOn, StateOn, StateOn}, StateOn},
		{"secure boot off, nothing configured", fakeSecurity{map[string]Value{sb: DWORD(0)}, none, nil},
			BootSecurity{StateOff, StateOff, StateOff}, StateOff},
		// Legacy BIOS: no value, unknown rather than off.
		{"legacy BIOS", fakeSecurity{map[string]Value{}, none, nil},
			BootSecurity{StateUnknown, StateOff, StateOff}, StateOff},
		{"not a DWORD", fakeSecurity{map[string]Value{sb: SZ("1")}, none, nil},
			BootSecurity{StateUnknown, StateOff, StateOff}, StateOff},
		// Asked for at the next boot, not running yet.
		{"configured, not running", fakeSecurity{map[string]Value{sb: DWORD(1), hv: DWORD(1)}, none, nil},
			BootSecurity{StateOn, StateOn, StateOff}, StateOff},
		// No Device Guard class: the registry's request is the harsher
		// guess.
		{"not reported", fakeSecurity{map[string]Value{sb: DWORD(1), hv: DWORD(1)}, SecurityServices{}, nil},
			BootSecurity{StateOn, StateOn, StateUnknown}, StateOn},
	} {
		got, err := ReadBootSecurity(context.Background(), c.f)
		if err != nil || got != c.want || got.HVCI() != c.hvci {
			t.Errorf("%s: ReadBootSecurity = %+v (HVCI %v), %v; want %+v (HVCI %v)", c.name, got, got.HVCI(), err, c.want, c.hvci)
		}
		if n := got.Notes(); len(n) != 2 || !strings.HasPrefix(n[0], "Secure Boot: ") || !strings.HasPrefix(n[1], "memory integrity (HVCI): ") {
			t.Errorf("%s: notes %q", c.name, n)
		}
	}
	if _, err := ReadBootSecurity(context.Background(), fakeSecurity{err: errors.New("powershell exit code 1: access denied")}); err == nil {
		t.Error("a failed Device Guard query was not an error")
	}
}

func TestProductCodes(t *testing.T) {
	for _, ok := range []string{"{12345678-9ABC-DEF0-1234-56789ABCDEF0}"} {
		if err := ValidateProductCode(ok); err != nil {
			t.Errorf("ValidateProductCode(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "12345678-9ABC-DEF0-1234-56789ABCDEF0", "{12345678-9abc-DEF0-1234-56789ABCDEF0}", "{12345678-9ABC-DEF0-1234-56789ABCDEF0} /qn", `C:\x.msi`, "{12345678-9ABC-DEF0-1234-56789ABCDEF0};x"} {
		if err := ValidateProductCode(bad); err == nil {
			t.Errorf("ValidateProductCode(%q) accepted", bad)
		}
		if _, err := MSIUninstallProductArgs(bad, `C:\log.txt`); err == nil {
			t.Errorf("MSIUninstallProductArgs(%q) accepted", bad)
		}
	}
	args, err := MSIUninstallProductArgs("{12345678-9ABC-DEF0-1234-56789ABCDEF0}", `C:\ProgramData\livedump\u.log`)
	if err != nil || strings.Join(args, " ") != `/x {12345678-9ABC-DEF0-1234-56789ABCDEF0} /qn /norestart /L*V C:\ProgramData\livedump\u.log` {
		t.Errorf("MSIUninstallProductArgs = %q, %v", args, err)
	}
}
