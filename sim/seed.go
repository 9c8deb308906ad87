package sim

import (
	"strings"

	"github.com/livedump/livedump/agent/host"
)

// Keys the seed fills beyond the two that host.ReadInventory reads, and that
// the rest of the simulation reads or writes. They are written normalized
// (HKLM root) so they can be used without NormalizeKey.
const (
	crashControlKey = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl`
	computerNameKey = `HKLM\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName`
	activeNameKey   = `HKLM\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName`
	tcpipKey        = `HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters`
	deviceGuardKey  = `HKLM\SYSTEM\CurrentControlSet\Control\DeviceGuard`
	uninstallKey    = host.UninstallKey
	cbsKey          = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing`
	autoUpdateKey   = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update`
	// windowsCurrentVersionKey is not Windows NT's CurrentVersion: it holds
	// the Program Files locations.
	windowsCurrentVersionKey = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion`
	liveKernelReportsKey     = crashControlKey + `\LiveKernelReports`
	sessionManagerKey        = `HKLM\SYSTEM\CurrentControlSet\Control\Session Manager`
	// pendingRenamesValue lists file operations Windows performs at the
	// next boot; its presence is one of the pending-reboot signals.
	pendingRenamesValue = "PendingFileRenameOperations"
)

// netbiosNameLen is the length Windows truncates the NetBIOS computer name
// to; the DNS host name may be longer.
const netbiosNameLen = 15

// seed fills a fresh registry with what a freshly installed machine of cfg's
// kind has in the places the agent reads or provisions. It mirrors a real
// Windows 11 23H2 machine, including its quirks (ProductName still says
// "Windows 10"), and deliberately leaves out what provisioning adds
// (AlwaysKeepMemoryDump, FullLiveKernelReports, LiveKernelReportsPath,
// EnableVirtualizationBasedSecurity), so the agent's "before" state is real.
func seed(h *Host, cfg Config) error {
	type kv struct {
		name  string
		value host.Value
	}
	netbios := strings.ToUpper(cfg.Hostname)
	if len(netbios) > netbiosNameLen {
		netbios = netbios[:netbiosNameLen]
	}
	currentVersion := []kv{
		{"CurrentBuild", host.SZ(cfg.Build)},
		{"CurrentBuildNumber", host.SZ(cfg.Build)},
		{"CurrentMajorVersionNumber", host.DWORD(10)},
		{"CurrentMinorVersionNumber", host.DWORD(0)},
		{"CurrentType", host.SZ("Multiprocessor Free")},
		// Frozen at 6.3 since Windows 8.1 for application compatibility.
		{"CurrentVersion", host.SZ("6.3")},
		{"EditionID", host.SZ(cfg.Edition)},
		{"InstallationType", host.SZ(cfg.InstallationType)},
		{"PathName", host.SZ(`C:\Windows`)},
		{"ProductName", host.SZ(productName(cfg))},
		{"SystemRoot", host.SZ(`C:\WINDOWS`)},
		{"UBR", host.DWORD(cfg.UBR)},
	}
	if dv := displayVersion(cfg.Build); dv != "" {
		currentVersion = append(currentVersion,
			kv{"DisplayVersion", host.SZ(dv)},
			// Frozen at 2009 since 20H2; kept because old tools read it.
			kv{"ReleaseId", host.SZ("2009")})
	}
	seeds := []struct {
		key    string
		values []kv
	}{
		{host.CurrentVersionKey, currentVersion},
		{host.EnvironmentKey, []kv{
			{"ComSpec", host.ExpandSZ(`%SystemRoot%\system32\cmd.exe`)},
			{"DriverData", host.SZ(`C:\Windows\System32\Drivers\DriverData`)},
			{"NUMBER_OF_PROCESSORS", host.SZ("4")},
			{"OS", host.SZ("Windows_NT")},
			{"Path", host.ExpandSZ(`%SystemRoot%\system32;%SystemRoot%;%SystemRoot%\System32\Wbem;%SYSTEMROOT%\System32\WindowsPowerShell\v1.0\;%SYSTEMROOT%\System32\OpenSSH\`)},
			{"PATHEXT", host.SZ(".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC")},
			{"PROCESSOR_ARCHITECTURE", host.SZ("AMD64")},
			{"TEMP", host.ExpandSZ(`%SystemRoot%\TEMP`)},
			{"TMP", host.ExpandSZ(`%SystemRoot%\TEMP`)},
			{"USERNAME", host.SZ("SYSTEM")},
			{"windir", host.ExpandSZ(`%SystemRoot%`)},
		}},
		{crashControlKey, []kv{
			{"AutoReboot", host.DWORD(1)},
			{"CrashDumpEnabled", host.DWORD(7)}, // automatic memory dump
			{"DumpFile", host.ExpandSZ(`%SystemRoot%\MEMORY.DMP`)},
			{"DumpFilters", host.MultiSZ("dumpfve.sys")},
			{"DumpLogLevel", host.DWORD(0)},
			{"EnableLogFile", host.DWORD(1)},
			{"LogEvent", host.DWORD(1)},
			{"MinidumpDir", host.ExpandSZ(`%SystemRoot%\Minidump`)},
			{"MinidumpsCount", host.DWORD(5)},
			{"Overwrite", host.DWORD(1)},
		}},
		{computerNameKey, []kv{{"ComputerName", host.SZ(netbios)}}},
		{activeNameKey, []kv{{"ComputerName", host.SZ(netbios)}}},
		{tcpipKey, []kv{
			{"Domain", host.SZ("")},
			{"Hostname", host.SZ(cfg.Hostname)},
			{"NV Domain", host.SZ("")},
			{"NV Hostname", host.SZ(cfg.Hostname)},
		}},
		{windowsCurrentVersionKey, []kv{
			{"CommonFilesDir", host.SZ(`C:\Program Files\Common Files`)},
			{"CommonW6432Dir", host.SZ(`C:\Program Files\Common Files`)},
			{"ProgramFilesDir", host.SZ(`C:\Program Files`)},
			{"ProgramFilesDir (x86)", host.SZ(`C:\Program Files (x86)`)},
			{"ProgramFilesPath", host.ExpandSZ(`%ProgramFiles%`)},
			{"ProgramW6432Dir", host.SZ(`C:\Program Files`)},
		}},
		// Present with no LiveKernelReportsPath: Windows then writes live
		// dumps to %SystemRoot%\LiveKernelReports.
		{liveKernelReportsKey, nil},
		// Present but empty: VBS is off until provisioning turns it on.
		{deviceGuardKey, nil},
		// Present with no RebootPending / RebootRequired subkeys: no reboot
		// is pending on a fresh machine.
		{cbsKey, nil},
		{autoUpdateKey, nil},
	}
	secureBoot := uint32(1)
	if cfg.NoSecureBoot {
		secureBoot = 0
	}
	seeds = append(seeds,
		struct {
			key    string
			values []kv
		}{host.SecureBootStateKey, []kv{{host.SecureBootValue, host.DWORD(secureBoot)}}},
		// Present with no products: what provisioning installs registers
		// here, as Windows Installer does.
		struct {
			key    string
			values []kv
		}{uninstallKey, nil})
	if cfg.HVCI {
		seeds = append(seeds, struct {
			key    string
			values []kv
		}{host.HVCIKey, []kv{{host.HVCIValue, host.DWORD(1)}}})
	}
	for _, s := range seeds {
		norm, err := host.NormalizeKey(s.key)
		if err != nil {
			return err
		}
		k, _ := h.createKey(norm)
		for _, v := range s.values {
			if err := host.ValidateValueName(v.name); err != nil {
				return err
			}
			if err := v.value.Validate(); err != nil {
				return err
			}
			k.values[fold(v.name)] = &entry{name: v.name, value: canonical(v.value)}
		}
	}
	return nil
}

// isServer reports whether an InstallationType is one of the server ones,
// which decides product naming and the default edition.
func isServer(installationType string) bool {
	return strings.HasPrefix(installationType, "Server")
}

// productName reproduces the ProductName Windows writes for an edition. Client
// builds of Windows 11 keep "Windows 10" here; the simulation must too, so
// that code matching on it meets the real string.
func productName(cfg Config) string {
	if isServer(cfg.InstallationType) {
		name := "Windows Server"
		if year := serverYear[cfg.Build]; year != "" {
			name += " " + year
		}
		return name + " " + strings.TrimPrefix(cfg.Edition, "Server")
	}
	if n, ok := clientEditionNames[cfg.Edition]; ok {
		return "Windows 10 " + n
	}
	return "Windows 10 " + cfg.Edition
}

// clientEditionNames maps EditionID to the marketing name in ProductName.
var clientEditionNames = map[string]string{
	"Core":                    "Home",
	"Professional":            "Pro",
	"ProfessionalWorkstation": "Pro for Workstations",
	"Education":               "Education",
	"Enterprise":              "Enterprise",
	"EnterpriseS":             "Enterprise LTSC",
}

// serverYear maps a server build to its release year.
var serverYear = map[string]string{
	"14393": "2016",
	"17763": "2019",
	"20348": "2022",
	"26100": "2025",
}

// displayVersion is the feature-update name shown by winver; builds before
// 20H2 had none.
func displayVersion(build string) string {
	return map[string]string{
		"19042": "20H2",
		"19043": "21H1",
		"19044": "21H2",
		"19045": "22H2",
		"20348": "21H2",
		"22000": "21H2",
		"22621": "22H2",
		"22631": "23H2",
		"26100": "24H2",
	}[build]
}
