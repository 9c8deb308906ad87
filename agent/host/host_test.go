package host

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeHost is the smallest Host: a map keyed by folded key and name. It is
// enough to test ReadInventory without the simulated machine's persistence.
type fakeHost struct {
	values   map[string]Value
	keys     map[string]bool // folded keys that exist, parents included
	hostname string
	hostErr  error
}

func newFake() *fakeHost {
	return &fakeHost{values: map[string]Value{}, keys: map[string]bool{}, hostname: "web-01"}
}

func fakeID(key, name string) string { return strings.ToUpper(key + "|" + name) }

func (f *fakeHost) GetValue(key, name string) (Value, error) {
	if err := ValidateKey(key); err != nil {
		return Value{}, err
	}
	v, ok := f.values[fakeID(key, name)]
	if !ok {
		return Value{}, fmt.Errorf("%s %s: %w", key, name, ErrNotExist)
	}
	return v, nil
}

func (f *fakeHost) SetValue(key, name string, v Value) error {
	f.values[fakeID(key, name)] = v
	f.createKey(key)
	return nil
}

// createKey makes key and its parents exist, as SetValue does on Windows.
func (f *fakeHost) createKey(key string) {
	norm, err := NormalizeKey(key)
	if err != nil {
		return
	}
	for k := strings.ToUpper(norm); strings.Contains(k, `\`); k = k[:strings.LastIndexByte(k, '\\')] {
		f.keys[k] = true
	}
}

func (f *fakeHost) KeyExists(key string) (bool, error) {
	norm, err := NormalizeKey(key)
	if err != nil {
		return false, err
	}
	return f.keys[strings.ToUpper(norm)], nil
}

func (f *fakeHost) DeleteValue(key, name string) error {
	if _, ok := f.values[fakeID(key, name)]; !ok {
		return ErrNotExist
	}
	delete(f.values, fakeID(key, name))
	return nil
}

func (f *fakeHost) Hostname() (string, error) { return f.hostname, f.hostErr }

// windows11 fills f the way a Windows 11 23H2 machine reads.
func windows11(f *fakeHost) *fakeHost {
	f.SetValue(CurrentVersionKey, "CurrentBuildNumber", SZ("22631"))
	f.SetValue(CurrentVersionKey, "UBR", DWORD(4460))
	f.SetValue(CurrentVersionKey, "EditionID", SZ("Enterprise"))
	f.SetValue(CurrentVersionKey, "ProductName", SZ("Windows 10 Enterprise"))
	f.SetValue(CurrentVersionKey, "InstallationType", SZ("Client"))
	f.SetValue(EnvironmentKey, "PROCESSOR_ARCHITECTURE", SZ("AMD64"))
	return f
}

func TestReadInventory(t *testing.T) {
	inv, err := ReadInventory(windows11(newFake()))
	if err != nil {
		t.Fatal(err)
	}
	want := Inventory{
		Hostname:           "web-01",
		OSBuild:            "22631",
		OSUBR:              4460,
		OSEdition:          "Enterprise",
		OSProductName:      "Windows 10 Enterprise", // raw, as Windows 11 reports it
		OSInstallationType: "Client",
		Arch:               "amd64",
	}
	if inv != want {
		t.Errorf("ReadInventory = %+v\nwant %+v", inv, want)
	}
}

func TestReadInventoryOptionalMissing(t *testing.T) {
	f := windows11(newFake())
	for _, n := range []string{"UBR", "EditionID", "ProductName", "InstallationType"} {
		f.DeleteValue(CurrentVersionKey, n)
	}
	inv, err := ReadInventory(f)
	if err != nil {
		t.Fatal(err)
	}
	want := Inventory{Hostname: "web-01", OSBuild: "22631", Arch: "amd64"}
	if inv != want {
		t.Errorf("ReadInventory = %+v, want %+v", inv, want)
	}
}

func TestReadInventoryErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*fakeHost)
		want   string
	}{
		{"no build", func(f *fakeHost) { f.DeleteValue(CurrentVersionKey, "CurrentBuildNumber") }, "CurrentBuildNumber"},
		{"empty build", func(f *fakeHost) { f.SetValue(CurrentVersionKey, "CurrentBuildNumber", SZ("")) }, "is empty"},
		{"build as dword", func(f *fakeHost) { f.SetValue(CurrentVersionKey, "CurrentBuildNumber", DWORD(22631)) }, "is REG_DWORD, want REG_SZ"},
		{"ubr as string", func(f *fakeHost) { f.SetValue(CurrentVersionKey, "UBR", SZ("4460")) }, "is REG_SZ, want REG_DWORD"},
		{"no arch", func(f *fakeHost) { f.DeleteValue(EnvironmentKey, "PROCESSOR_ARCHITECTURE") }, "PROCESSOR_ARCHITECTURE"},
		{"hostname", func(f *fakeHost) { f.hostErr = errors.New("boom") }, "hostname: boom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := windows11(newFake())
			c.mutate(f)
			_, err := ReadInventory(f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}

func TestReadInventoryArch(t *testing.T) {
	for in, want := range map[string]string{"AMD64": "amd64", "ARM64": "arm64", "x86": "x86", "IA64": "ia64", "amd64": "amd64"} {
		f := windows11(newFake())
		f.SetValue(EnvironmentKey, "PROCESSOR_ARCHITECTURE", SZ(in))
		inv, err := ReadInventory(f)
		if err != nil {
			t.Fatal(err)
		}
		if inv.Arch != want {
			t.Errorf("PROCESSOR_ARCHITECTURE %q: Arch = %q, want %q", in, inv.Arch, want)
		}
	}
}

func TestNormalizeKey(t *testing.T) {
	good := map[string]string{
		`HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`:                `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`,
		`HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\CrashControl`: `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl`,
		`hklm\software`:        `HKLM\software`,
		`hkey_local_machine\x`: `HKLM\x`,
		`HKLM\SYSTEM\CurrentControlSet\Enum\{4d36e968-e325-11ce-bfc1}\a_b(1)`: `HKLM\SYSTEM\CurrentControlSet\Enum\{4d36e968-e325-11ce-bfc1}\a_b(1)`,
		`HKLM\a.b`: `HKLM\a.b`,
	}
	for in, want := range good {
		got, err := NormalizeKey(in)
		if err != nil || got != want {
			t.Errorf("NormalizeKey(%q) = %q, %v; want %q", in, got, err, want)
		}
		if err := ValidateKey(in); err != nil {
			t.Errorf("ValidateKey(%q) = %v", in, err)
		}
	}
	bad := map[string]string{
		`HKCU\x`:          `registry key "HKCU\x": only HKLM is supported`,
		`HKEY_USERS\x`:    "only HKLM is supported",
		`SOFTWARE\x`:      "only HKLM is supported",
		``:                "only HKLM is supported",
		`HKLM`:            "needs a subkey",
		`HKLM\`:           "needs a subkey",
		`HKLM\a\`:         "empty path component",
		`HKLM\a\\b`:       "empty path component",
		`\HKLM\a`:         "only HKLM is supported",
		`HKLM\a\..\b`:     `component ".." is not allowed`,
		`HKLM\a..b`:       "is not allowed",
		`HKLM\.`:          "is not allowed",
		`HKLM\a/b`:        `character '/' is not allowed`,
		`HKLM\a*`:         "character '*' is not allowed",
		"HKLM\\a\x00":     "is not allowed",
		"HKLM\\caf\u00e9": "is not allowed",
		"HKLM\\a\nb":      `registry key "HKLM\\a\nb": character '\n' is not allowed`,
		`HKLM\ a`:         "begins or ends with a space",
		`HKLM\a `:         "begins or ends with a space",
		`HKLM\` + strings.Repeat("k", MaxKeyComponent+1):                "component longer than 255",
		`HKLM\` + strings.Repeat(strings.Repeat("k", 200)+`\`, 3) + "k": "longer than 512",
	}
	for in, want := range bad {
		err := ValidateKey(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateKey(%q) = %v, want error containing %q", in, err, want)
		}
	}
	// The limits themselves are allowed.
	if err := ValidateKey(`HKLM\` + strings.Repeat("k", MaxKeyComponent)); err != nil {
		t.Errorf("255-character component: %v", err)
	}
	if err := ValidateKey(`HKLM\` + strings.Repeat("k", MaxKeyLength-5)); err == nil {
		t.Errorf("component over 255 inside the total limit accepted")
	}
}

func TestValidateValueName(t *testing.T) {
	for _, n := range []string{"", "UBR", "NV Hostname", "_NT_SYMBOL_PATH", "a.b-c{d}(e)", strings.Repeat("n", MaxValueName)} {
		if err := ValidateValueName(n); err != nil {
			t.Errorf("ValidateValueName(%q) = %v", n, err)
		}
	}
	for n, want := range map[string]string{
		`a\b`:                               `registry value name "a\b": character '\\' is not allowed`,
		"a\x00":                             "is not allowed",
		"%x%":                               "is not allowed",
		strings.Repeat("n", MaxValueName+1): "longer than 255",
	} {
		if err := ValidateValueName(n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateValueName(%q) = %v, want error containing %q", n, err, want)
		}
	}
}

func TestValueTypeString(t *testing.T) {
	for typ, want := range map[ValueType]string{
		String: "REG_SZ", ExpandString: "REG_EXPAND_SZ", DWord: "REG_DWORD",
		MultiString: "REG_MULTI_SZ", QWord: "REG_QWORD", 3: "REG_BINARY", 99: "REG_TYPE(99)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("ValueType(%d).String() = %q, want %q", uint32(typ), got, want)
		}
	}
	// Numbers are the Windows ones, which the Windows host relies on.
	if String != 1 || ExpandString != 2 || DWord != 4 || MultiString != 7 || QWord != 11 {
		t.Error("ValueType constants do not match REG_* numbers")
	}
	for _, typ := range []ValueType{String, ExpandString, DWord, MultiString, QWord} {
		got, err := ParseValueType(typ.String())
		if err != nil || got != typ {
			t.Errorf("ParseValueType(%q) = %v, %v", typ.String(), got, err)
		}
	}
	if _, err := ParseValueType("REG_BINARY"); err == nil {
		t.Error("ParseValueType(REG_BINARY) succeeded for an unsupported type")
	}
}

func TestValueString(t *testing.T) {
	for v, want := range map[*Value]string{
		ptr(SZ(`C:\x`)):                          `REG_SZ "C:\x"`,
		ptr(ExpandSZ(`%SystemRoot%\MEMORY.DMP`)): `REG_EXPAND_SZ "%SystemRoot%\MEMORY.DMP"`,
		ptr(DWORD(7)):                            "REG_DWORD 0x00000007 (7)",
		ptr(QWORD(1 << 40)):                      "REG_QWORD 0x0000010000000000 (1099511627776)",
		ptr(MultiSZ("a", "b c")):                 `REG_MULTI_SZ ["a" "b c"]`,
		ptr(MultiSZ()):                           "REG_MULTI_SZ []",
		{Type: 3}:                                "REG_BINARY",
	} {
		if got := v.String(); got != want {
			t.Errorf("String() = %s, want %s", got, want)
		}
	}
}

func ptr(v Value) *Value { return &v }

func TestValueValidateAndEqual(t *testing.T) {
	for _, v := range []Value{SZ(""), ExpandSZ("%x%"), DWORD(^uint32(0)), QWORD(^uint64(0)), MultiSZ(), MultiSZ("a")} {
		if err := v.Validate(); err != nil {
			t.Errorf("%v.Validate() = %v", v, err)
		}
		if !v.Equal(v) {
			t.Errorf("%v not Equal to itself", v)
		}
	}
	for _, v := range []Value{{}, {Type: 3}, {Type: DWord, Num: 1 << 32}, SZ("a\x00"), MultiSZ("a", ""), MultiSZ("\x00")} {
		if err := v.Validate(); err == nil {
			t.Errorf("%v.Validate() = nil, want error", v)
		}
	}
	// Fields foreign to the type do not count; type and data do.
	if !DWORD(1).Equal(Value{Type: DWord, Num: 1, Str: "ignored"}) {
		t.Error("Equal looked at a field that does not belong to REG_DWORD")
	}
	if !MultiSZ().Equal(Value{Type: MultiString, Strs: []string{}}) {
		t.Error("nil and empty REG_MULTI_SZ differ")
	}
	for _, p := range [][2]Value{
		{DWORD(1), QWORD(1)}, {SZ("a"), ExpandSZ("a")}, {SZ("a"), SZ("A")},
		{MultiSZ("a"), MultiSZ("a", "b")}, {MultiSZ("a", "b"), MultiSZ("b", "a")},
	} {
		if p[0].Equal(p[1]) {
			t.Errorf("%v Equal %v", p[0], p[1])
		}
	}
	// MultiSZ copies its arguments.
	s := []string{"a"}
	v := MultiSZ(s...)
	s[0] = "changed"
	if v.Strs[0] != "a" {
		t.Error("MultiSZ aliases the caller's slice")
	}
}
