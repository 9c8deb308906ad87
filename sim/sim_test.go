package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/tests/hosttest"
)

func newHost(t *testing.T, cfg Config) *Host {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestSharedRegistrySuite(t *testing.T) {
	hosttest.Registry(t, newHost(t, Config{}), `HKLM\SOFTWARE\livedump-test`)
}

func TestSeedInventory(t *testing.T) {
	h := newHost(t, Config{Hostname: "dev-box1"})
	inv, err := host.ReadInventory(h)
	if err != nil {
		t.Fatal(err)
	}
	want := host.Inventory{
		Hostname:           "dev-box1",
		OSBuild:            "22631",
		OSUBR:              4460,
		OSEdition:          "Enterprise",
		OSProductName:      "Windows 10 Enterprise", // sic: real Windows 11 says so
		OSInstallationType: "Client",
		Arch:               "amd64",
	}
	if inv != want {
		t.Errorf("ReadInventory = %+v\nwant %+v", inv, want)
	}
}

func TestSeedValues(t *testing.T) {
	h := newHost(t, Config{Hostname: "dev-box1"})
	want := []struct {
		key, name string
		v         host.Value
	}{
		{host.CurrentVersionKey, "CurrentBuild", host.SZ("22631")},
		{host.CurrentVersionKey, "DisplayVersion", host.SZ("23H2")},
		{host.CurrentVersionKey, "CurrentMajorVersionNumber", host.DWORD(10)},
		{host.CurrentVersionKey, "CurrentMinorVersionNumber", host.DWORD(0)},
		{crashControlKey, "AutoReboot", host.DWORD(1)},
		{crashControlKey, "CrashDumpEnabled", host.DWORD(7)},
		{crashControlKey, "DumpFile", host.ExpandSZ(`%SystemRoot%\MEMORY.DMP`)},
		{computerNameKey, "ComputerName", host.SZ("DEV-BOX1")},
		{tcpipKey, "Hostname", host.SZ("dev-box1")},
	}
	for _, w := range want {
		got, err := h.GetValue(w.key, w.name)
		if err != nil || !got.Equal(w.v) {
			t.Errorf("%s\\%s = %v, %v; want %v", w.key, w.name, got, err, w.v)
		}
	}
	// What provisioning adds later must not be there yet.
	absent := [][2]string{
		{crashControlKey, "AlwaysKeepMemoryDump"},
		{crashControlKey + `\FullLiveKernelReports`, "FullLiveReportsMax"},
		{crashControlKey + `\FullLiveKernelReports`, "SystemThrottleThreshold"},
		{crashControlKey + `\FullLiveKernelReports`, "ComponentThrottleThreshold"},
		{crashControlKey + `\LiveKernelReports`, "LiveKernelReportsPath"},
		{deviceGuardKey, "EnableVirtualizationBasedSecurity"},
	}
	for _, a := range absent {
		if v, err := h.GetValue(a[0], a[1]); !errors.Is(err, host.ErrNotExist) {
			t.Errorf("%s\\%s = %v, %v; want ErrNotExist", a[0], a[1], v, err)
		}
	}
	// DeviceGuard exists (as on a real machine) even though it is empty.
	h.mu.Lock()
	_, ok := h.keys[fold(deviceGuardKey)]
	h.mu.Unlock()
	if !ok {
		t.Errorf("%s missing from the seed", deviceGuardKey)
	}
}

func TestSeedConfig(t *testing.T) {
	h := newHost(t, Config{Hostname: "srv-22", Build: "20348", UBR: 2700, InstallationType: "Server"})
	inv, err := host.ReadInventory(h)
	if err != nil {
		t.Fatal(err)
	}
	if inv.OSBuild != "20348" || inv.OSUBR != 2700 || inv.OSEdition != "ServerDatacenter" ||
		inv.OSInstallationType != "Server" || inv.OSProductName != "Windows Server 2022 Datacenter" {
		t.Errorf("server inventory = %+v", inv)
	}

	h = newHost(t, Config{Build: "19045", Edition: "Professional"})
	inv, err = host.ReadInventory(h)
	if err != nil {
		t.Fatal(err)
	}
	if inv.OSProductName != "Windows 10 Pro" || inv.OSEdition != "Professional" || inv.OSBuild != "19045" {
		t.Errorf("pro inventory = %+v", inv)
	}
	if v, err := h.GetValue(host.CurrentVersionKey, "DisplayVersion"); err != nil || v.Str != "22H2" {
		t.Errorf("19045 DisplayVersion = %v, %v", v, err)
	}

	// An old build has no DisplayVersion, as on Windows.
	h = newHost(t, Config{Build: "17763"})
	if _, err := h.GetValue(host.CurrentVersionKey, "DisplayVersion"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("17763 DisplayVersion err = %v, want ErrNotExist", err)
	}

	// A long DNS name gives a 15-character NetBIOS name.
	h = newHost(t, Config{Hostname: "integration-agent-01"})
	if v, _ := h.GetValue(computerNameKey, "ComputerName"); v.Str != "INTEGRATION-AGE" {
		t.Errorf("ComputerName = %v, want INTEGRATION-AGE", v)
	}
	if name, _ := h.Hostname(); name != "integration-agent-01" {
		t.Errorf("Hostname = %q", name)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "StateDir is required"},
		{Config{StateDir: "x", Hostname: "bad_name"}, "not allowed"},
		{Config{StateDir: "x", Hostname: "-a"}, "hyphen"},
		{Config{StateDir: "x", Hostname: "12345"}, "all digits"},
		{Config{StateDir: "x", Hostname: strings.Repeat("a", 64)}, "longer than 63"},
		{Config{StateDir: "x", Build: "22631.4460"}, "not a Windows build number"},
		{Config{StateDir: "x", InstallationType: "Desktop"}, "installation type"},
		{Config{StateDir: "x", Edition: `a\b`}, "not an edition ID"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) err = %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestRandomHostnamePersists(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, Config{StateDir: dir})
	name, err := h.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^SIM-[A-Z0-9]{6}$`).MatchString(name) {
		t.Errorf("default hostname %q, want SIM- and six uppercase alphanumerics", name)
	}
	if v, _ := h.GetValue(computerNameKey, "ComputerName"); v.Str != name {
		t.Errorf("ComputerName = %v, want %q", v, name)
	}
	again, err := newHost(t, Config{StateDir: dir}).Hostname()
	if err != nil || again != name {
		t.Errorf("after reload Hostname = %q, %v; want %q", again, err, name)
	}
	// An existing machine keeps its identity whatever the config says.
	other, _ := newHost(t, Config{StateDir: dir, Hostname: "other", Build: "19045"}).Hostname()
	if other != name {
		t.Errorf("config renamed an existing machine: %q, want %q", other, name)
	}
}

func TestHostnameFallsBackToComputerName(t *testing.T) {
	h := newHost(t, Config{Hostname: "dev-box1"})
	if err := h.DeleteValue(tcpipKey, "Hostname"); err != nil {
		t.Fatal(err)
	}
	if name, err := h.Hostname(); err != nil || name != "DEV-BOX1" {
		t.Errorf("Hostname = %q, %v; want DEV-BOX1", name, err)
	}
	if err := h.DeleteValue(computerNameKey, "ComputerName"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Hostname(); err == nil {
		t.Error("Hostname with no name values succeeded")
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, Config{StateDir: dir})
	const k = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\FullLiveKernelReports`
	values := map[string]host.Value{
		"FullLiveReportsMax":         host.DWORD(1),
		"SystemThrottleThreshold":    host.DWORD(0),
		"Big":                        host.QWORD(^uint64(0)),
		"List":                       host.MultiSZ("a", "b"),
		"Empty":                      host.MultiSZ(),
		"Path":                       host.SZ(`\??\C:\livedumps`),
		"Expand":                     host.ExpandSZ(`%SystemRoot%\LiveKernelReports`),
		"":                           host.SZ("default"),
		"ComponentThrottleThreshold": host.DWORD(0),
	}
	for n, v := range values {
		if err := h.SetValue(k, n, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.DeleteValue(k, "ComponentThrottleThreshold"); err != nil {
		t.Fatal(err)
	}
	delete(values, "ComponentThrottleThreshold")
	if err := h.DeleteValue(crashControlKey, "AutoReboot"); err != nil {
		t.Fatal(err)
	}

	r := newHost(t, Config{StateDir: dir})
	for n, v := range values {
		got, err := r.GetValue(k, n)
		if err != nil || !got.Equal(v) {
			t.Errorf("after reload %q = %v, %v; want %v", n, got, err, v)
		}
	}
	for _, gone := range [][2]string{{k, "ComponentThrottleThreshold"}, {crashControlKey, "AutoReboot"}} {
		if _, err := r.GetValue(gone[0], gone[1]); !errors.Is(err, host.ErrNotExist) {
			t.Errorf("deleted %s reappeared after reload: %v", gone[1], err)
		}
	}
	if a, b := mustRead(t, h.StatePath()), mustRead(t, r.StatePath()); a != b {
		t.Error("state differs between the two handles")
	}
	fi, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 { // Windows has ACLs, not modes
		t.Errorf("registry.json mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != DriveDir || names[1] != StateFile {
		t.Errorf("state dir holds %v, want only %s and %s (temp files left behind?)", names, DriveDir, StateFile)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCanonicalCase(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, Config{StateDir: dir})
	// SOFTWARE exists from the seed; the new components keep their first
	// spelling, and a later write in another case changes neither.
	if err := h.SetValue(`hklm\software\LiveDump\Agent`, "Mode", host.SZ("a")); err != nil {
		t.Fatal(err)
	}
	if err := h.SetValue(`HKLM\SOFTWARE\LIVEDUMP\AGENT`, "MODE", host.SZ("b")); err != nil {
		t.Fatal(err)
	}
	r := newHost(t, Config{StateDir: dir})
	ff := decodeFile(t, r.StatePath())
	var found bool
	for _, k := range ff.Keys {
		if strings.EqualFold(k.Key, `HKLM\SOFTWARE\LiveDump\Agent`) {
			found = true
			if k.Key != `HKLM\SOFTWARE\LiveDump\Agent` {
				t.Errorf("stored key spelling %q", k.Key)
			}
			if len(k.Values) != 1 || k.Values[0].Name != "Mode" || string(k.Values[0].Data) != `"b"` {
				t.Errorf("stored values %+v, want one value Mode = \"b\"", k.Values)
			}
		}
	}
	if !found {
		t.Error("key not in the state file")
	}
	if v, err := r.GetValue(`HKLM\Software\livedump\agent`, "mode"); err != nil || v.Str != "b" {
		t.Errorf("GetValue = %v, %v", v, err)
	}
}

func decodeFile(t *testing.T, path string) fileFormat {
	t.Helper()
	var ff fileFormat
	if err := json.Unmarshal([]byte(mustRead(t, path)), &ff); err != nil {
		t.Fatal(err)
	}
	return ff
}

func TestGetValueReturnsCopy(t *testing.T) {
	h := newHost(t, Config{})
	if err := h.SetValue(`HKLM\SOFTWARE\x`, "m", host.MultiSZ("a")); err != nil {
		t.Fatal(err)
	}
	v, _ := h.GetValue(`HKLM\SOFTWARE\x`, "m")
	v.Strs[0] = "mutated"
	if again, _ := h.GetValue(`HKLM\SOFTWARE\x`, "m"); again.Strs[0] != "a" {
		t.Error("GetValue exposes the stored slice")
	}
}

// minimalMachine is the smallest machine section a state file may have, for
// tests that write state files by hand.
const minimalMachine = `"machine":{"boot_time":"2024-01-01T00:00:00Z","bcd_dtrace":"(not set)","bcd_dtrace_at_boot":"(not set)",` +
	`"vbs_capable":true,"vbs_status":0,"volumes":{"C:":{"encrypted":false,"suspended_reboots":0}},"products":[],"reboot":null}`

// stateWith is a format-2 state file with the given machine section and keys.
func stateWith(machine, keys string) string {
	return `{"format":2,` + machine + `,"keys":[` + keys + `]}`
}

// machineWith is minimalMachine with fields replaced, added or (with an
// empty value) removed, given as name, JSON value pairs.
func machineWith(kv ...string) string {
	names := []string{"boot_time", "bcd_dtrace", "bcd_dtrace_at_boot", "vbs_capable", "vbs_status", "volumes", "products", "reboot"}
	fields := map[string]string{
		"boot_time": `"2024-01-01T00:00:00Z"`, "bcd_dtrace": `"(not set)"`, "bcd_dtrace_at_boot": `"(not set)"`,
		"vbs_capable": "true", "vbs_status": "0", "volumes": `{"C:":{"encrypted":false,"suspended_reboots":0}}`,
		"products": "[]", "reboot": "null",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if _, known := fields[kv[i]]; !known {
			names = append(names, kv[i])
		}
		fields[kv[i]] = kv[i+1]
	}
	var parts []string
	for _, n := range names {
		if v := fields[n]; v != "" {
			parts = append(parts, `"`+n+`":`+v)
		}
	}
	return `"machine":{` + strings.Join(parts, ",") + `}`
}

func TestCorruptStateFile(t *testing.T) {
	for _, c := range []struct {
		name, content, want string
	}{
		{"not json", "{not json", "corrupt state file"},
		{"trailing", stateWith(minimalMachine, "") + ` {}`, "trailing data"},
		{"format", `{"format":3,"keys":[]}`, "format 3"},
		{"old format", `{"format":1,"keys":[]}`, "format 1, this agent reads format 2"},
		{"unknown field", `{"format":2,` + minimalMachine + `,"keys":[],"extra":1}`, "unknown field"},
		{"bad key", stateWith(minimalMachine, `{"key":"HKCU\\x"}`), "only HKLM is supported"},
		{"dup key", stateWith(minimalMachine, `{"key":"HKLM\\A"},{"key":"HKLM\\a"}`), "listed twice"},
		{"bad type", stateWith(minimalMachine, `{"key":"HKLM\\A","values":[{"name":"v","type":"REG_BINARY","data":"AA=="}]}`), "unsupported registry value type"},
		{"type mismatch", stateWith(minimalMachine, `{"key":"HKLM\\A","values":[{"name":"v","type":"REG_DWORD","data":"x"}]}`), "REG_DWORD data"},
		{"dword overflow", stateWith(minimalMachine, `{"key":"HKLM\\A","values":[{"name":"v","type":"REG_DWORD","data":4294967296}]}`), "does not fit in 32 bits"},
		{"no data", stateWith(minimalMachine, `{"key":"HKLM\\A","values":[{"name":"v","type":"REG_SZ"}]}`), "missing data"},
		{"dup value", stateWith(minimalMachine, `{"key":"HKLM\\A","values":[{"name":"v","type":"REG_SZ","data":"a"},{"name":"V","type":"REG_SZ","data":"b"}]}`), "listed twice"},
		{"bad name", stateWith(minimalMachine, `{"key":"HKLM\\A","values":[{"name":"a\\b","type":"REG_SZ","data":"a"}]}`), "registry value name"},
		{"no machine", `{"format":2,"keys":[]}`, "machine: missing"},
		{"unknown machine field", stateWith(machineWith("extra", "1"), ""), "unknown field"},
		{"no boot time", stateWith(machineWith("boot_time", ""), ""), "boot_time is missing"},
		{"bad bcd", stateWith(machineWith("bcd_dtrace", `"yes"`), ""), "bcd_dtrace"},
		{"no bcd at boot", stateWith(machineWith("bcd_dtrace_at_boot", ""), ""), "bcd_dtrace_at_boot"},
		{"no vbs capable", stateWith(machineWith("vbs_capable", ""), ""), "vbs_capable is missing"},
		{"no vbs status", stateWith(machineWith("vbs_status", ""), ""), "vbs_status is missing"},
		{"bad vbs status", stateWith(machineWith("vbs_status", "3"), ""), "vbs_status 3"},
		{"vbs running incapable", stateWith(machineWith("vbs_capable", "false", "vbs_status", "2"), ""), "not VBS-capable"},
		{"no C:", stateWith(machineWith("volumes", `{"D:":{"encrypted":true,"suspended_reboots":0}}`), ""), `volume C: is missing`},
		{"bad volume", stateWith(machineWith("volumes", `{"C:":{"encrypted":true,"suspended_reboots":0},"c:":{"encrypted":true,"suspended_reboots":0}}`), ""), `volume "c:"`},
		{"suspend range", stateWith(machineWith("volumes", `{"C:":{"encrypted":true,"suspended_reboots":16}}`), ""), "outside 0..15"},
		{"suspend unencrypted", stateWith(machineWith("volumes", `{"C:":{"encrypted":false,"suspended_reboots":1}}`), ""), "suspended but not encrypted"},
		{"bad product", stateWith(machineWith("products", `[{"product":"a\\b","version":"1.0","files":[],"dirs":[]}]`), ""), "product"},
		{"bad product version", stateWith(machineWith("products", `[{"product":"DTrace","version":"v1","files":[],"dirs":[]}]`), ""), "version"},
		{"bad product path", stateWith(machineWith("products", `[{"product":"DTrace","version":"1.0","files":["C:\\..\\x"],"dirs":[]}]`), ""), "not allowed"},
		{"dup product", stateWith(machineWith("products", `[{"product":"DTrace","version":"1.0","files":[],"dirs":[]},{"product":"dtrace","version":"1.0","files":[],"dirs":[]}]`), ""), "listed twice"},
		{"reboot too late", stateWith(machineWith("reboot", `{"requested":"2024-01-01T00:00:00Z","due":"2024-01-01T01:00:00Z","message":""}`), ""), "reboot: due"},
		{"reboot message", stateWith(machineWith("reboot", `{"requested":"2024-01-01T00:00:00Z","due":"2024-01-01T00:00:00Z","message":"`+strings.Repeat("m", 513)+`"}`), ""), "reboot: message"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{StateDir: dir})
			if err == nil {
				t.Fatal("New succeeded on a corrupt state file")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want the file name and %q", err, c.want)
			}
			// The corrupt file is left for the operator, not replaced.
			if mustRead(t, path) != c.content {
				t.Error("corrupt state file was modified")
			}
		})
	}
}

func TestLoadAcceptsHandEdits(t *testing.T) {
	dir := t.TempDir()
	// Child before parent, long root spelling, no seed: all fine.
	content := `{"format":2,` + minimalMachine + `,"keys":[
	  {"key":"HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion","values":[
	    {"name":"CurrentBuildNumber","type":"REG_SZ","data":"26100"}]},
	  {"key":"HKLM\\Software","values":[]},
	  {"key":"HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Environment","values":[
	    {"name":"PROCESSOR_ARCHITECTURE","type":"reg_sz","data":"ARM64"}]},
	  {"key":"HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters","values":[
	    {"name":"Hostname","type":"REG_SZ","data":"edited"}]}]}`
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, Config{StateDir: dir})
	inv, err := host.ReadInventory(h)
	if err != nil {
		t.Fatal(err)
	}
	if inv.OSBuild != "26100" || inv.Arch != "arm64" || inv.Hostname != "edited" {
		t.Errorf("inventory %+v", inv)
	}
	// The key listed with "Software" after its child still gets one
	// spelling, the parent's.
	if err := h.SetValue(`HKLM\SOFTWARE\x`, "v", host.DWORD(1)); err != nil {
		t.Fatal(err)
	}
	for _, k := range decodeFile(t, h.StatePath()).Keys {
		if strings.HasPrefix(strings.ToUpper(k.Key), `HKLM\SOFTWARE`) && !strings.HasPrefix(k.Key, `HKLM\Software`) {
			t.Errorf("key %q does not use the parent's spelling", k.Key)
		}
	}
}

func TestFailedSaveRollsBack(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, Config{StateDir: dir})
	// Make saving impossible even as root (who ignores permissions): point
	// the state file into a directory that does not exist.
	h.path = filepath.Join(dir, "gone", StateFile)
	const k = `HKLM\SOFTWARE\NewKey\Sub`
	if err := h.SetValue(k, "v", host.DWORD(1)); err == nil {
		t.Fatal("SetValue succeeded although the state could not be saved")
	}
	if _, err := h.GetValue(k, "v"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("failed SetValue left the value behind: %v", err)
	}
	h.mu.Lock()
	_, leaked := h.keys[fold(`HKLM\SOFTWARE\NewKey`)]
	h.mu.Unlock()
	if leaked {
		t.Error("failed SetValue left a created key behind")
	}
	if err := h.SetValue(crashControlKey, "AutoReboot", host.DWORD(0)); err == nil {
		t.Fatal("overwrite succeeded although the state could not be saved")
	}
	if v, _ := h.GetValue(crashControlKey, "AutoReboot"); !v.Equal(host.DWORD(1)) {
		t.Errorf("failed overwrite changed the value to %v", v)
	}
	if err := h.DeleteValue(crashControlKey, "AutoReboot"); err == nil {
		t.Fatal("DeleteValue succeeded although the state could not be saved")
	}
	if _, err := h.GetValue(crashControlKey, "AutoReboot"); err != nil {
		t.Errorf("failed DeleteValue removed the value: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, Config{StateDir: dir})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf(`HKLM\SOFTWARE\Concurrent\G%d`, g)
			for i := 0; i < 20; i++ {
				if err := h.SetValue(key, "n", host.DWORD(uint32(i))); err != nil {
					t.Error(err)
					return
				}
				if _, err := h.GetValue(key, "n"); err != nil {
					t.Error(err)
					return
				}
				if _, err := h.Hostname(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	r := newHost(t, Config{StateDir: dir})
	for g := 0; g < 8; g++ {
		v, err := r.GetValue(fmt.Sprintf(`HKLM\SOFTWARE\Concurrent\G%d`, g), "n")
		if err != nil || !v.Equal(host.DWORD(19)) {
			t.Errorf("G%d after reload = %v, %v", g, v, err)
		}
	}
}
