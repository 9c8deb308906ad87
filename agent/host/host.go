// Package host is the agent's single seam to the Windows machine it runs on.
//
// Everything the agent needs from the operating system goes through the Host
// interface, so the agent code above it is identical whether it runs on real
// Windows (NewWindows, windows builds only) or against the simulated machine in
// package host/sim that development mode and the Linux tests use. The helpers
// in this file (key validation, value types, inventory) are pure Go so that
// both implementations share one definition of what is allowed.
package host

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ValueType is a registry value type. The numbers are the Windows REG_*
// constants so that a type read from, or shown next to, a real registry means
// the same thing everywhere.
type ValueType uint32

// The registry value types the agent reads and writes. Other Windows types
// (REG_BINARY, ...) are deliberately unsupported: nothing the agent manages
// uses them, and refusing them keeps the simulated registry honest.
const (
	// String is REG_SZ, a plain string.
	String ValueType = 1
	// ExpandString is REG_EXPAND_SZ, a string whose %VAR% references Windows
	// expands when a consumer reads it; the agent stores and returns it raw.
	ExpandString ValueType = 2
	// DWord is REG_DWORD, a 32-bit little-endian number.
	DWord ValueType = 4
	// MultiString is REG_MULTI_SZ, a list of non-empty strings.
	MultiString ValueType = 7
	// QWord is REG_QWORD, a 64-bit little-endian number.
	QWord ValueType = 11
)

// typeNames spells every Windows type, not only the supported ones, so that an
// error about an unsupported value found on a real machine names it plainly.
var typeNames = map[ValueType]string{
	0:            "REG_NONE",
	String:       "REG_SZ",
	ExpandString: "REG_EXPAND_SZ",
	3:            "REG_BINARY",
	DWord:        "REG_DWORD",
	5:            "REG_DWORD_BIG_ENDIAN",
	6:            "REG_LINK",
	MultiString:  "REG_MULTI_SZ",
	8:            "REG_RESOURCE_LIST",
	9:            "REG_FULL_RESOURCE_DESCRIPTOR",
	10:           "REG_RESOURCE_REQUIREMENTS_LIST",
	QWord:        "REG_QWORD",
}

// String returns the Windows name (REG_SZ, REG_DWORD, ...) because that is
// what operators know from regedit and reg.exe.
func (t ValueType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return "REG_TYPE(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// Supported reports whether the agent can read and write values of this type,
// so that callers and implementations reject the others before touching the
// registry.
func (t ValueType) Supported() bool {
	switch t {
	case String, ExpandString, DWord, MultiString, QWord:
		return true
	}
	return false
}

// ParseValueType turns a Windows type name such as "REG_DWORD" back into a
// ValueType, so that stored or displayed names round-trip. Only supported
// types parse.
func ParseValueType(name string) (ValueType, error) {
	for t, n := range typeNames {
		if t.Supported() && strings.EqualFold(n, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unsupported registry value type %s", Quote(name))
}

// Value is one typed registry value. Only the field that matches Type is
// meaningful (Str for REG_SZ and REG_EXPAND_SZ, Strs for REG_MULTI_SZ, Num for
// REG_DWORD and REG_QWORD); the constructors fill exactly that one so callers
// cannot write a value whose type and data disagree.
type Value struct {
	Type ValueType
	Str  string
	Strs []string
	Num  uint64
}

// SZ makes a REG_SZ value.
func SZ(s string) Value { return Value{Type: String, Str: s} }

// ExpandSZ makes a REG_EXPAND_SZ value. Windows expands %VAR% references when
// consumers read it, which is why paths like %SystemRoot%\MEMORY.DMP must keep
// this type rather than become REG_SZ.
func ExpandSZ(s string) Value { return Value{Type: ExpandString, Str: s} }

// DWORD makes a REG_DWORD value; taking a uint32 makes overflow impossible.
func DWORD(n uint32) Value { return Value{Type: DWord, Num: uint64(n)} }

// QWORD makes a REG_QWORD value.
func QWORD(n uint64) Value { return Value{Type: QWord, Num: n} }

// MultiSZ makes a REG_MULTI_SZ value. The strings are copied so the caller may
// reuse its slice.
func MultiSZ(s ...string) Value {
	return Value{Type: MultiString, Strs: append([]string(nil), s...)}
}

// Validate reports whether Windows could store v faithfully. Both Registry
// implementations call it before writing, so that a value the real registry
// would reject or silently alter is refused in the simulation as well.
func (v Value) Validate() error {
	switch v.Type {
	case String, ExpandString:
		if strings.IndexByte(v.Str, 0) >= 0 {
			return fmt.Errorf("%s value contains a NUL character", v.Type)
		}
	case MultiString:
		for i, s := range v.Strs {
			// An empty element would read back as the end of the list.
			if s == "" {
				return fmt.Errorf("%s value element %d is empty", v.Type, i)
			}
			if strings.IndexByte(s, 0) >= 0 {
				return fmt.Errorf("%s value element %d contains a NUL character", v.Type, i)
			}
		}
	case DWord:
		if v.Num > math.MaxUint32 {
			return fmt.Errorf("%s value %d does not fit in 32 bits", v.Type, v.Num)
		}
	case QWord:
	default:
		return fmt.Errorf("unsupported registry value type %s", v.Type)
	}
	return nil
}

// Equal reports whether v and w hold the same typed data, ignoring the fields
// that do not belong to the type, so that callers can skip writes that would
// change nothing (provisioning must be idempotent).
func (v Value) Equal(w Value) bool {
	if v.Type != w.Type {
		return false
	}
	switch v.Type {
	case String, ExpandString:
		return v.Str == w.Str
	case MultiString:
		if len(v.Strs) != len(w.Strs) {
			return false
		}
		for i := range v.Strs {
			if v.Strs[i] != w.Strs[i] {
				return false
			}
		}
		return true
	case DWord, QWord:
		return v.Num == w.Num
	}
	return v.Str == w.Str && v.Num == w.Num && len(v.Strs) == 0 && len(w.Strs) == 0
}

// String renders the value the way logs and plans show it: the Windows type
// name and the data, numbers in hex and decimal as reg.exe and regedit do.
func (v Value) String() string {
	switch v.Type {
	case String, ExpandString:
		return fmt.Sprintf("%s %s", v.Type, Quote(v.Str))
	case MultiString:
		q := make([]string, len(v.Strs))
		for i, s := range v.Strs {
			q[i] = Quote(s)
		}
		return fmt.Sprintf("%s [%s]", v.Type, strings.Join(q, " "))
	case DWord:
		return fmt.Sprintf("%s 0x%08x (%d)", v.Type, v.Num, v.Num)
	case QWord:
		return fmt.Sprintf("%s 0x%016x (%d)", v.Type, v.Num, v.Num)
	}
	return v.Type.String()
}

// ErrNotExist is returned, possibly wrapped, when a registry key or value is
// missing. Callers test it with errors.Is because "absent" is a normal state
// for the settings provisioning adds, not a failure.
var ErrNotExist = errors.New("registry value does not exist")

// Registry is the part of the registry the agent uses. Keys are full paths
// such as `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`; names and keys
// compare case-insensitively, as on Windows. The empty name is the key's
// default value.
type Registry interface {
	// GetValue returns the value, or an error wrapping ErrNotExist when the
	// key or the value is missing.
	GetValue(key, name string) (Value, error)
	// SetValue writes the value, creating the key and any missing parent keys
	// so that callers need no separate "create key" step.
	SetValue(key, name string, v Value) error
	// DeleteValue removes the value; it returns an error wrapping ErrNotExist
	// when there was nothing to remove, so callers can tell a no-op apart.
	DeleteValue(key, name string) error
	// KeyExists reports whether the key exists. Some Windows signals (the
	// pending-reboot markers) are keys with no values.
	KeyExists(key string) (bool, error)
	// DeleteKey removes a key that has no values and no subkeys, so that a
	// revert can remove a key an apply created. A missing key wraps
	// ErrNotExist, a key with contents ErrKeyNotEmpty.
	DeleteKey(key string) error
	// SubKeys lists the names of key's direct subkeys, in no particular
	// order (the Uninstall key's products are found this way). A missing
	// key wraps ErrNotExist.
	SubKeys(key string) ([]string, error)
}

// ErrKeyNotEmpty is returned by DeleteKey for a key that still holds values
// or subkeys: the agent never deletes what it did not create.
var ErrKeyNotEmpty = errors.New("registry key is not empty")

// Host is the boundary between the agent and Windows. Everything the agent
// does to the machine goes through it, so that the same agent code runs on a
// real machine and on the simulated one; it grows as the agent learns to do
// more (boot configuration, VBS, BitLocker, installers, reboots).
type Host interface {
	Registry
	// Hostname returns the machine's DNS host name, the name the controller
	// shows for this agent.
	Hostname() (string, error)

	// BCDDtrace reads the dtrace element of the {current} boot entry as
	// stored (`bcdedit /enum {current}`). A stored change takes effect only
	// at the next boot; compare BootTime with the time of the change.
	BCDDtrace(ctx context.Context) (BCDValue, error)
	// SetBCDDtrace runs `bcdedit /set {current} dtrace on|off`.
	SetBCDDtrace(ctx context.Context, on bool) error
	// DeleteBCDDtrace runs `bcdedit /deletevalue {current} dtrace`, which is
	// how a revert restores "never set".
	DeleteBCDDtrace(ctx context.Context) error

	// VBSStatus is Win32_DeviceGuard.VirtualizationBasedSecurityStatus: what
	// runs now, whatever the registry asks for at the next boot.
	VBSStatus(ctx context.Context) (VBSStatus, error)
	// BitLockerStatus is Win32_EncryptableVolume.GetProtectionStatus of a
	// volume such as "C:".
	// A machine without the BitLocker feature (a Windows Server where it
	// is not installed: no WMI namespace) reports BitLockerOff, since no
	// volume there can demand a recovery key.
	BitLockerStatus(ctx context.Context, volume string) (BitLockerStatus, error)
	// SecurityServicesRunning is Win32_DeviceGuard.SecurityServicesRunning:
	// the VBS services (2 = memory integrity, HVCI) running now.
	SecurityServicesRunning(ctx context.Context) (SecurityServices, error)
	// SuspendBitLocker suspends protection of volume for rebootCount
	// reboots (Suspend-BitLocker -RebootCount), so a BCD change does not
	// trigger recovery.
	SuspendBitLocker(ctx context.Context, volume string, rebootCount int) error

	// InstallMSI runs `msiexec /i msi /qn /norestart /L*V log` and returns
	// msiexec's exit code (0, 3010, 1603, ...). err is set only when msiexec
	// could not be run at all.
	InstallMSI(ctx context.Context, msi, log string) (exitCode int, err error)
	// UninstallMSI runs `msiexec /x msi /qn /norestart /L*V log`.
	UninstallMSI(ctx context.Context, msi, log string) (exitCode int, err error)
	// UninstallProduct runs `msiexec /x {ProductCode} /qn /norestart /L*V
	// log`: Windows Installer removes the product with its own cached
	// package, which is how the agent uninstalls DTrace (no MSI file of
	// ours is needed, or run). 1605 means the product is not installed.
	UninstallProduct(ctx context.Context, productCode, log string) (exitCode int, err error)
	// VerifySignature checks the Authenticode signature of a local file
	// (WinVerifyTrust with WINTRUST_ACTION_GENERIC_VERIFY_V2) and names
	// the signer of a valid one. A missing or invalid signature is a
	// result, not an error: err is set only when the file cannot be read
	// or the check cannot run.
	VerifySignature(ctx context.Context, path string) (Signature, error)
	// FileExists reports whether a file exists at a Windows path such as
	// `C:\Program Files\DTrace\dtrace.exe`.
	FileExists(path string) (bool, error)

	// DTrace says which dtrace this machine runs (FindDTrace): the
	// configured dtrace_path, else the built-in System32\dtrace.exe, else
	// the MSI's; Kind DTraceNone when there is none.
	DTrace() (DTrace, error)
	// DTraceCommand prepares that dtrace to run with args, given as they
	// are (see DTrace.Invocation for the parameters each build takes); env
	// entries (such as _NT_SYMBOL_PATH) are added to its environment. It
	// fails, wrapping ErrNoDTrace, when there is no dtrace. The caller
	// starts, reads and kills it.
	DTraceCommand(ctx context.Context, args, env []string) (*exec.Cmd, error)

	// LiveDumpDir is the local folder Windows writes live kernel dumps to:
	// LiveKernelReportsPath from the registry, else
	// %SystemRoot%\LiveKernelReports.
	LiveDumpDir() (string, error)

	// LiveDumpEvents returns the Kernel-LiveDump write-ended (4) and
	// disk-full (202) events since a time, oldest first: the precise signal
	// that Windows finished (or gave up on) a dump.
	LiveDumpEvents(ctx context.Context, since time.Time) ([]LiveDumpEvent, error)

	// DiskFree is the free space, in bytes, of the volume holding path.
	DiskFree(path string) (uint64, error)
	// PhysicalMemory is the machine's installed memory in bytes: the
	// worst-case size of a full live kernel dump.
	PhysicalMemory() (uint64, error)

	// BootTime is when the machine last booted.
	BootTime(ctx context.Context) (time.Time, error)
	// Reboot schedules a restart after delay, showing message to signed-in
	// users (`shutdown /r /t N /c message`). It returns once scheduled.
	Reboot(ctx context.Context, delay time.Duration, message string) error
}

// Signature is what Authenticode says about a file.
type Signature struct {
	// Signed says the file carries a signature at all.
	Signed bool
	// Valid says WinVerifyTrust accepted the signature: the content
	// matches its digest, the signing certificate chains to a root the
	// machine trusts, and no certificate in the chain is revoked.
	Valid bool
	// Publisher and Organization are the subject's common name (CN) and
	// organization (O) of the leaf signing certificate, set only when
	// Valid. Publisher is the name Windows shows as "Verified publisher".
	Publisher    string
	Organization string
	// Problem says why the file is unsigned or its signature not valid,
	// as WinVerifyTrust reported it, e.g. "TRUST_E_NOSIGNATURE: ...".
	Problem string
}

// String renders the result the way logs and refusals show it.
func (s Signature) String() string {
	switch {
	case s.Valid && s.Organization != "" && s.Organization != s.Publisher:
		return fmt.Sprintf("signed by %s (O=%s)", Quote(s.Publisher), Quote(s.Organization))
	case s.Valid:
		return "signed by " + Quote(s.Publisher)
	case s.Signed:
		return "signature not valid: " + s.Problem
	}
	return "not signed: " + s.Problem
}

// DTracePublisher is the publisher of DTrace for Windows: Microsoft
// distributes DTrace.amd64.msi signed as "Microsoft Corporation", like its
// other downloads. It is the agent's default installer_publishers.
const DTracePublisher = "Microsoft Corporation"

// BCDValue is the stored state of a boolean BCD element.
type BCDValue struct {
	Present bool // the element is set in the entry
	On      bool // its value, when Present
}

// String renders the value the way plans show it.
func (v BCDValue) String() string {
	switch {
	case !v.Present:
		return "(not set)"
	case v.On:
		return "on"
	}
	return "off"
}

// VBSStatus is Win32_DeviceGuard.VirtualizationBasedSecurityStatus.
type VBSStatus int

// The documented VBS states.
const (
	VBSOff        VBSStatus = 0
	VBSEnabled    VBSStatus = 1 // configured, not running
	VBSRunning    VBSStatus = 2
	VBSStatusNone VBSStatus = -1 // not reported (no Device Guard WMI class)
)

func (s VBSStatus) String() string {
	switch s {
	case VBSOff:
		return "off"
	case VBSEnabled:
		return "enabled, not running"
	case VBSRunning:
		return "running"
	}
	return "unknown"
}

// BitLockerStatus is Win32_EncryptableVolume.GetProtectionStatus.
type BitLockerStatus int

// The documented protection states.
const (
	BitLockerOff     BitLockerStatus = 0 // off, or suspended
	BitLockerOn      BitLockerStatus = 1
	BitLockerUnknown BitLockerStatus = 2 // unknown or locked
)

func (s BitLockerStatus) String() string {
	switch s {
	case BitLockerOff:
		return "off"
	case BitLockerOn:
		return "on"
	}
	return "unknown"
}

// msiexec exit codes the agent acts on (Windows Installer error codes).
const (
	MSISuccess             = 0
	MSIRebootInitiated     = 1641
	MSIRebootRequired      = 3010
	MSIFatal               = 1603
	MSIAnotherInstall      = 1618
	MSIPackageOpenFailed   = 1619
	MSIPackageInvalid      = 1620
	MSIProductNotInstalled = 1605
	MSIUserExit            = 1602
)

// Limits on registry paths. Windows allows 255 characters per key component;
// the total is our own bound, far above every key the agent uses, to keep
// logs and the simulated state file sane.
const (
	// MaxKeyComponent is Windows' own limit for one key name.
	MaxKeyComponent = 255
	// MaxKeyLength bounds a whole key path including the HKLM root.
	MaxKeyLength = 512
	// MaxValueName is far below Windows' 16383 because no value the agent
	// touches comes close, and a short bound keeps junk out of logs.
	MaxValueName = 255
)

// hklm is the canonical root spelling; longRoot is the alternative accepted on
// input because Windows tools print it.
const (
	hklm     = "HKLM"
	longRoot = "HKEY_LOCAL_MACHINE"
)

// NormalizeKey validates key and returns its canonical spelling, with the root
// written `HKLM` however it was given (`HKEY_LOCAL_MACHINE\`, `hklm\`, ...), so
// that every layer logs, compares and stores one form. Component case is kept:
// implementations compare case-insensitively themselves.
func NormalizeKey(key string) (string, error) {
	root, rest, found := strings.Cut(key, `\`)
	if !strings.EqualFold(root, hklm) && !strings.EqualFold(root, longRoot) {
		return "", fmt.Errorf("registry key %s: only HKLM is supported", Quote(key))
	}
	if !found || rest == "" {
		return "", fmt.Errorf("registry key %s: needs a subkey below HKLM", Quote(key))
	}
	norm := hklm + `\` + rest
	if len(norm) > MaxKeyLength {
		return "", fmt.Errorf("registry key %s: longer than %d characters", Quote(key), MaxKeyLength)
	}
	for _, c := range strings.Split(rest, `\`) {
		if c == "" {
			return "", fmt.Errorf("registry key %s: empty path component", Quote(key))
		}
		if len(c) > MaxKeyComponent {
			return "", fmt.Errorf("registry key %s: component longer than %d characters", Quote(key), MaxKeyComponent)
		}
		if strings.Contains(c, "..") || c == "." {
			return "", fmt.Errorf("registry key %s: component %s is not allowed", Quote(key), Quote(c))
		}
		if c[0] == ' ' || c[len(c)-1] == ' ' {
			// Windows keeps such names, but they are invisible in every UI
			// and almost always a mistake.
			return "", fmt.Errorf("registry key %s: component %s begins or ends with a space", Quote(key), Quote(c))
		}
		if i := badChar(c); i >= 0 {
			return "", fmt.Errorf("registry key %s: character %q is not allowed", Quote(key), c[i])
		}
	}
	return norm, nil
}

// ValidateKey reports whether key is a registry path the agent may touch. It
// is an allow-list because keys can reach the agent from the controller, and
// anything outside HKLM or outside a plain character set is refused rather
// than interpreted.
func ValidateKey(key string) error {
	_, err := NormalizeKey(key)
	return err
}

// ValidateValueName reports whether name is a value name the agent may touch.
// The empty name is allowed because it denotes the key's default value.
func ValidateValueName(name string) error {
	if len(name) > MaxValueName {
		return fmt.Errorf("registry value name %s: longer than %d characters", Quote(name), MaxValueName)
	}
	if i := badChar(name); i >= 0 {
		return fmt.Errorf("registry value name %s: character %q is not allowed", Quote(name), name[i])
	}
	return nil
}

// Quote wraps s in double quotes for messages. Plain text is shown as is,
// since registry paths are full of backslashes that Go quoting would double;
// anything else (control characters, quotes, non-ASCII) falls back to Go
// quoting so that odd input stays visible and unambiguous.
func Quote(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' || s[i] == '"' {
			return strconv.Quote(s)
		}
	}
	return `"` + s + `"`
}

// DisplayName shows the default value the way regedit does, so that error
// messages about it are not a puzzling pair of empty quotes.
func DisplayName(name string) string {
	if name == "" {
		return "(Default)"
	}
	return name
}

// badChar returns the index of the first byte outside [A-Za-z0-9 _.\-{}()],
// or -1. Working on bytes rejects every non-ASCII character outright.
func badChar(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(" _.-{}()", c) >= 0:
		default:
			return i
		}
	}
	return -1
}

// Registry locations read by ReadInventory. They are exported so that the
// simulated host seeds exactly what the inventory reads.
const (
	// CurrentVersionKey holds the OS build, edition and product name.
	CurrentVersionKey = `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`
	// EnvironmentKey holds the machine-wide environment, where Windows
	// records the processor architecture for every process to inherit.
	EnvironmentKey = `HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\Environment`
)

// Inventory describes the machine for the controller and for provisioning
// decisions (the DTrace build gate, client versus server, x64 only). Values
// are kept as Windows reports them: Windows 11 still says "Windows 10 ..." in
// ProductName, and rewriting that here would hide what the machine says.
type Inventory struct {
	Hostname           string
	OSBuild            string // CurrentBuildNumber, e.g. "22631"
	OSUBR              uint32 // update build revision, e.g. 4460
	OSEdition          string // EditionID, e.g. "Enterprise"
	OSProductName      string
	OSInstallationType string // "Client" or "Server" (also "Server Core")
	Arch               string // Go-style: "amd64", "arm64", "x86"
}

// InventorySource is what ReadInventory needs of a Host.
type InventorySource interface {
	GetValue(key, name string) (Value, error)
	Hostname() (string, error)
}

// ReadInventory collects the Inventory through h. Only the build number and
// the architecture are required, since provisioning cannot decide anything
// without them; the other values are missing on some editions and are left
// empty rather than failing the whole report.
func ReadInventory(h InventorySource) (Inventory, error) {
	var inv Inventory
	var err error
	if inv.Hostname, err = h.Hostname(); err != nil {
		return Inventory{}, fmt.Errorf("inventory: hostname: %w", err)
	}
	if inv.OSBuild, err = readString(h, CurrentVersionKey, "CurrentBuildNumber", false); err != nil {
		return Inventory{}, err
	}
	if inv.OSBuild == "" {
		return Inventory{}, fmt.Errorf("inventory: registry key %s value %s is empty", Quote(CurrentVersionKey), Quote("CurrentBuildNumber"))
	}
	ubr, err := h.GetValue(CurrentVersionKey, "UBR")
	switch {
	case errors.Is(err, ErrNotExist):
	case err != nil:
		return Inventory{}, fmt.Errorf("inventory: %w", err)
	case ubr.Type != DWord:
		return Inventory{}, fmt.Errorf("inventory: registry key %s value %s is %s, want %s", Quote(CurrentVersionKey), Quote("UBR"), ubr.Type, DWord)
	default:
		inv.OSUBR = uint32(ubr.Num)
	}
	if inv.OSEdition, err = readString(h, CurrentVersionKey, "EditionID", true); err != nil {
		return Inventory{}, err
	}
	if inv.OSProductName, err = readString(h, CurrentVersionKey, "ProductName", true); err != nil {
		return Inventory{}, err
	}
	if inv.OSInstallationType, err = readString(h, CurrentVersionKey, "InstallationType", true); err != nil {
		return Inventory{}, err
	}
	arch, err := readString(h, EnvironmentKey, "PROCESSOR_ARCHITECTURE", false)
	if err != nil {
		return Inventory{}, err
	}
	inv.Arch = goArch(arch)
	return inv, nil
}

// readString reads a REG_SZ (or REG_EXPAND_SZ, unexpanded) value. A missing
// optional value yields "" so the caller need not special-case it.
func readString(h InventorySource, key, name string, optional bool) (string, error) {
	v, err := h.GetValue(key, name)
	if err != nil {
		if optional && errors.Is(err, ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("inventory: %w", err)
	}
	if v.Type != String && v.Type != ExpandString {
		return "", fmt.Errorf("inventory: registry key %s value %s is %s, want %s", Quote(key), Quote(name), v.Type, String)
	}
	return v.Str, nil
}

// goArch maps PROCESSOR_ARCHITECTURE to GOARCH spelling, which is what the
// rest of the fleet tooling (and the DTrace x64-only check) speaks.
func goArch(a string) string {
	switch strings.ToUpper(a) {
	case "AMD64":
		return "amd64"
	case "ARM64":
		return "arm64"
	case "X86":
		return "x86"
	}
	return strings.ToLower(a)
}
