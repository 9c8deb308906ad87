package sim

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/agent/host"
)

// msiMagic is the OLE compound-file signature every .msi starts with. The
// simulated package keeps it so that code sniffing a download (or a human
// with `file`) sees what a real package looks like, and a truncated or HTML
// download is refused as msiexec refuses it.
var msiMagic = []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}

// Windows Installer exit codes the simulation returns beyond those in package
// host, which the agent does not act on specifically.
const (
	// msiLogFailure is ERROR_INSTALL_LOG_FAILURE: the /L*V log could not
	// be opened, and msiexec does nothing else.
	msiLogFailure = 1622
	// msiProductVersion is ERROR_PRODUCT_VERSION: another version of the
	// same product is installed.
	msiProductVersion = 1638
)

// maxMSISize bounds what InstallMSI reads; a real DTrace package is a few
// megabytes.
const maxMSISize = 64 << 20

// MSIManifest is the content of a simulated MSI package: the product it
// installs, the files it puts on C: (Windows path to content), and the exit
// code msiexec gives when installing it. ExitCode lets tests and development
// setups build the packages that fail (1603) or need a reboot (3010) to see
// the agent handle them; it does not apply to uninstalling.
type MSIManifest struct {
	Product string `json:"product"`
	// ProductCode is the package's ProductCode, the GUID Windows Installer
	// registers the product under (Uninstall\{GUID}) and msiexec /x takes;
	// empty means one derived from Product, so packages built before the
	// field existed still have one.
	ProductCode string            `json:"product_code,omitempty"`
	Version     string            `json:"version"`
	Files       map[string]string `json:"files"`
	ExitCode    int               `json:"exit_code"`
}

// msiExitCodes are the install outcomes a package may ask for: success,
// success with a reboot needed, and the failures the agent must survive.
var msiExitCodes = []int{host.MSISuccess, host.MSIRebootRequired, host.MSIFatal, host.MSIUserExit, host.MSIAnotherInstall}

// msiVersion is ProductVersion's major.minor.build[.revision] form, each
// part within Windows Installer's limits in spirit if not to the digit.
var msiVersion = regexp.MustCompile(`^[0-9]{1,5}(\.[0-9]{1,5}){0,3}$`)

// validate refuses a manifest that a real package could not express, so
// that a simulated package never installs something Windows would not.
func (m MSIManifest) validate() error {
	if m.Product == "" || len(m.Product) > 64 {
		return errors.New("product name must have 1 to 64 characters")
	}
	if err := checkComponent(m.Product); err != nil {
		return fmt.Errorf("product name %s: %w", host.Quote(m.Product), err)
	}
	if m.ProductCode != "" {
		if err := host.ValidateProductCode(m.ProductCode); err != nil {
			return err
		}
	}
	if !msiVersion.MatchString(m.Version) {
		return fmt.Errorf("version %s: want major.minor.build", host.Quote(m.Version))
	}
	if !slices.Contains(msiExitCodes, m.ExitCode) {
		return fmt.Errorf("exit code %d: want one of %v", m.ExitCode, msiExitCodes)
	}
	seen := map[string]string{}
	for p := range m.Files {
		w, err := parseWinPath(p)
		if err != nil {
			return err
		}
		if len(w) == 0 {
			return fmt.Errorf("path %s: a file cannot be the drive root", host.Quote(p))
		}
		// NTFS would make these one file.
		f := fold(w.String())
		if prev, dup := seen[f]; dup {
			return fmt.Errorf("paths %s and %s name the same file", host.Quote(prev), host.Quote(p))
		}
		seen[f] = p
	}
	for f, p := range seen {
		for g, q := range seen {
			if strings.HasPrefix(g, f+`\`) {
				return fmt.Errorf("path %s is a file and the directory of %s", host.Quote(p), host.Quote(q))
			}
		}
	}
	return nil
}

// code is the package's ProductCode.
func (m MSIManifest) code() string {
	if m.ProductCode != "" {
		return m.ProductCode
	}
	return derivedProductCode(m.Product)
}

// derivedProductCode is a stable GUID for a product name (a name-based,
// version 5 style UUID over the folded name), upper case as Windows
// Installer requires.
func derivedProductCode(name string) string {
	sum := sha1.Sum([]byte("livedump-sim-product:" + fold(name)))
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	h := strings.ToUpper(hex.EncodeToString(sum[:16]))
	return "{" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32] + "}"
}

// BuildMSI makes a simulated MSI package: the OLE signature followed by the
// manifest as JSON. Development tooling uses it to produce the "DTrace MSI"
// the agent downloads and installs on a simulated machine.
func BuildMSI(m MSIManifest) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("sim: MSI manifest: %w", err)
	}
	js, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("sim: MSI manifest: %w", err)
	}
	return append(slices.Clone(msiMagic), js...), nil
}

// parseMSI reads a package back; any error means msiexec would call it an
// invalid package.
func parseMSI(data []byte) (MSIManifest, error) {
	body, ok := bytes.CutPrefix(data, msiMagic)
	if !ok {
		return MSIManifest{}, errors.New("not an OLE compound file")
	}
	// msiexec installs signed and unsigned packages alike; the signature
	// is for whoever verifies it first (signature.go).
	body, _, _ = bytes.Cut(body, sigStream)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m MSIManifest
	if err := dec.Decode(&m); err != nil {
		return MSIManifest{}, fmt.Errorf("manifest: %w", err)
	}
	if dec.More() {
		return MSIManifest{}, errors.New("manifest: trailing data")
	}
	if err := m.validate(); err != nil {
		return MSIManifest{}, fmt.Errorf("manifest: %w", err)
	}
	return m, nil
}

// InstallMSI plays `msiexec /i msi /qn /norestart /L*V log`. msi and log are
// paths on the agent's own file system (in development, Linux paths), as the
// agent downloads the package into its state directory; the log's directory
// must exist, as msiexec does not create it (exit code 1622 otherwise). The
// outcome follows Windows Installer: 1619 when the package cannot be opened,
// 1620 when it is not a valid package, the manifest's failure code with
// nothing installed, 3010 with the files installed and a file rename pending
// until the next boot, 1638 when another version of the product is
// installed, and 0 when the product is installed, or already was in this
// version. err is set only when the simulation itself fails (a cancelled
// context, a state file that cannot be written), never for an outcome
// msiexec reports.
func (h *Host) InstallMSI(ctx context.Context, msi, log string) (int, error) {
	return h.msiexec(ctx, msi, log, true)
}

// UninstallMSI plays `msiexec /x msi /qn /norestart /L*V log`: 1605 when the
// package's product is not installed, otherwise its files and the
// directories its installation created are removed and the exit code is 0.
// What is removed comes from the record of the installation, not from the
// package, as with Windows Installer.
func (h *Host) UninstallMSI(ctx context.Context, msi, log string) (int, error) {
	return h.msiexec(ctx, msi, log, false)
}

// MsiexecRuns is how many times msiexec ran on this machine (install or
// uninstall, whatever the outcome) since the Host was made.
func (h *Host) MsiexecRuns() int64 { return h.msiexecRuns.Load() }

func (h *Host) msiexec(ctx context.Context, msi, log string, install bool) (int, error) {
	if err := ctxErr(ctx); err != nil {
		return -1, err
	}
	h.msiexecRuns.Add(1)
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return msiLogFailure, nil
	}
	defer f.Close()
	l := newMSILog(h.clock, msi, install)
	h.mu.Lock()
	code, err := h.msiexecLocked(l, msi, install)
	h.mu.Unlock()
	if err != nil {
		l.printf("MSI (s): internal error of the simulated machine: %v", err)
		code = host.MSIFatal
	}
	l.end(code)
	// The log is a report; failing to write it after the work is done
	// changes nothing about the outcome, as with msiexec.
	_, _ = f.WriteString(l.String())
	if err != nil {
		return -1, err
	}
	return code, nil
}

// msiexecLocked does the work of msiexec; the caller holds h.mu.
func (h *Host) msiexecLocked(l *msiLog, msi string, install bool) (int, error) {
	m, code := readMSI(l, msi)
	if code != host.MSISuccess {
		return code, nil
	}
	if install {
		return h.install(l, m)
	}
	return h.uninstall(l, m)
}

// readMSI opens a package the way msiexec reports it: a package it cannot
// open (missing, unreadable, a directory, too large) is 1619, one that is not
// a valid package is 1620.
func readMSI(l *msiLog, msi string) (MSIManifest, int) {
	fi, err := os.Stat(msi)
	if err == nil && (!fi.Mode().IsRegular() || fi.Size() > maxMSISize) {
		err = fs.ErrInvalid
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(msi)
	}
	if err != nil {
		l.printf("MSI (c): Note: 1: 2203 2: %s 3: -2147287038", msi)
		l.printf("MSI (c): Product: %s -- This installation package could not be opened. Verify that the package exists and that you can access it, or contact the application vendor to verify that this is a valid Windows Installer package.", msi)
		return MSIManifest{}, host.MSIPackageOpenFailed
	}
	m, err := parseMSI(data)
	if err != nil {
		l.printf("MSI (c): Note: 1: 2203 2: %s 3: -2147286960 (%v)", msi, err)
		l.printf("MSI (c): This installation package could not be opened. Contact the application vendor to verify that this is a valid Windows Installer package.")
		return MSIManifest{}, host.MSIPackageInvalid
	}
	return m, host.MSISuccess
}

func (h *Host) install(l *msiLog, m MSIManifest) (int, error) {
	l.printf("Action start %s: INSTALL.", l.clockTime())
	if p := h.m.products[fold(m.Product)]; p != nil {
		if p.version == m.Version {
			l.printf("MSI (s): Product %s %s is already installed; nothing to do.", p.name, p.version)
			l.printf("MSI (s): Product: %s -- Configuration completed successfully.", p.name)
			return host.MSISuccess, nil
		}
		l.printf("MSI (s): Product: %s -- Another version of this product is already installed. Installation of this version cannot continue. To configure or remove the existing version of this product, use Add/Remove Programs on the Control Panel. (installed: %s)", m.Product, p.version)
		return msiProductVersion, nil
	}
	if m.ExitCode != host.MSISuccess && m.ExitCode != host.MSIRebootRequired {
		l.printf("MSI (s): Product: %s -- Installation operation failed.", m.Product)
		l.printf("MSI (s): Windows Installer installed the product. Product Name: %s. Product Version: %s. Product Language: 1033. Installation success or error status: %d.", m.Product, m.Version, m.ExitCode)
		return m.ExitCode, nil
	}

	paths := make([]string, 0, len(m.Files))
	for p := range m.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var txn fileTxn
	rec := &product{name: m.Product, version: m.Version, code: m.code()}
	for _, p := range paths {
		w, _ := parseWinPath(p) // validated with the manifest
		created, err := h.mkdirs(&txn, w[:len(w)-1])
		if err == nil {
			err = txn.write(h.hostPath(w), []byte(m.Files[p]))
		}
		if err != nil {
			txn.rollback()
			l.printf("MSI (s): Error 1603 writing %s: %v. Rolling back.", w, err)
			l.printf("MSI (s): Product: %s -- Installation operation failed.", m.Product)
			return host.MSIFatal, nil
		}
		rec.dirs = append(rec.dirs, created...)
		rec.files = append(rec.files, w.String())
		l.printf("MSI (s): Executing op: FileCopy(DestName=%s,FileSize=%d)", w, len(m.Files[p]))
	}
	err := h.mutate(func(ms *machine) (func(), error) {
		ms.products[fold(m.Product)] = rec
		undoEntry := h.registerProduct(rec)
		undoReg := func() {}
		if m.ExitCode == host.MSIRebootRequired {
			undoReg = h.addPendingRenames(rec.files)
		}
		return func() { undoReg(); undoEntry(); txn.rollback() }, nil
	})
	if err != nil {
		return 0, err
	}
	l.printf("MSI (s): Product: %s -- Installation completed successfully.", m.Product)
	l.printf("MSI (s): Windows Installer installed the product. Product Name: %s. Product Version: %s. Product Language: 1033. Installation success or error status: 0.", m.Product, m.Version)
	if m.ExitCode == host.MSIRebootRequired {
		l.printf("MSI (s): Windows Installer requires a system restart. Product Name: %s. Product Version: %s. Type of System Restart: 1. Reason for Restart: 1.", m.Product, m.Version)
		l.printf("MSI (s): Product: %s -- Configuration changes made to %s will not take effect until the system is restarted.", m.Product, m.Product)
	}
	return m.ExitCode, nil
}

// mkdirs creates the missing directories of w, parents first, and returns
// the ones it created so that uninstalling removes exactly those.
func (h *Host) mkdirs(txn *fileTxn, w winPath) ([]string, error) {
	var created []string
	for i := 1; i <= len(w); i++ {
		dir := w[:i]
		fi, err := os.Stat(h.hostPath(dir))
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil:
			return nil, fmt.Errorf("%s is a file, not a directory", dir)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
		if err := txn.mkdir(h.hostPath(dir)); err != nil {
			return nil, err
		}
		created = append(created, dir.String())
	}
	return created, nil
}

// addPendingRenames registers files for replacement at the next boot in
// PendingFileRenameOperations, which is what an installation needing a
// reboot leaves behind (pairs of source and `!`-prefixed destination, in NT
// form) and what pending-reboot checks look for. It returns how to take the
// change back. The caller holds h.mu.
func (h *Host) addPendingRenames(files []string) (undo func()) {
	var ops []string
	if e := h.lookup(sessionManagerKey, pendingRenamesValue); e != nil && e.value.Type == host.MultiString {
		ops = slices.Clone(e.value.Strs)
	}
	for _, f := range files {
		ops = append(ops, `\??\`+f+`.msi-new`, `!\??\`+f)
	}
	return h.putValue(sessionManagerKey, pendingRenamesValue, host.MultiSZ(ops...))
}

func (h *Host) uninstall(l *msiLog, m MSIManifest) (int, error) {
	l.printf("Action start %s: INSTALL.", l.clockTime())
	f := fold(m.Product)
	p := h.m.products[f]
	if p == nil {
		l.printf("MSI (c): Product: %s -- This action is only valid for products that are currently installed.", m.Product)
		return host.MSIProductNotInstalled, nil
	}
	return h.remove(l, f, p)
}

// UninstallProduct plays `msiexec /x {ProductCode} /qn /norestart /L*V
// log`: Windows Installer finds the product by its code and removes it with
// its own record of the installation; 1605 when no installed product has
// the code. An invalid code is refused before msiexec runs, as on the
// Windows host.
func (h *Host) UninstallProduct(ctx context.Context, code, log string) (int, error) {
	if err := ctxErr(ctx); err != nil {
		return -1, err
	}
	if err := host.ValidateProductCode(code); err != nil {
		return -1, err
	}
	h.msiexecRuns.Add(1)
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return msiLogFailure, nil
	}
	defer f.Close()
	l := newMSILog(h.clock, code, false)
	h.mu.Lock()
	l.printf("Action start %s: INSTALL.", l.clockTime())
	var key string
	var p *product
	for k, q := range h.m.products {
		if q.code == code {
			key, p = k, q
		}
	}
	code2 := host.MSIProductNotInstalled
	if p == nil {
		l.printf("MSI (c): %s -- This action is only valid for products that are currently installed.", code)
	} else {
		code2, err = h.remove(l, key, p)
	}
	h.mu.Unlock()
	if err != nil {
		l.printf("MSI (s): internal error of the simulated machine: %v", err)
		code2 = host.MSIFatal
	}
	l.end(code2)
	_, _ = f.WriteString(l.String())
	if err != nil {
		return -1, err
	}
	return code2, nil
}

// registerProduct writes the product's Uninstall entry, as Windows
// Installer does, and returns how to take it back. The caller holds h.mu.
func (h *Host) registerProduct(p *product) (undo func()) {
	k := uninstallKey + `\` + p.code
	var undos []func()
	for _, v := range []struct {
		name  string
		value host.Value
	}{
		{"DisplayName", host.SZ(p.name)},
		{"DisplayVersion", host.SZ(p.version)},
		{"InstallDate", host.SZ(h.clock.Now().Format("20060102"))},
		{"UninstallString", host.ExpandSZ("MsiExec.exe /X" + p.code)},
		{"WindowsInstaller", host.DWORD(1)},
	} {
		undos = append(undos, h.putValue(k, v.name, v.value))
	}
	return func() {
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i]()
		}
	}
}

// unregisterProduct removes the product's Uninstall entry and returns how
// to restore it. The caller holds h.mu.
func (h *Host) unregisterProduct(p *product) (undo func()) {
	f := fold(uninstallKey + `\` + p.code)
	k := h.keys[f]
	if k == nil {
		return func() {}
	}
	delete(h.keys, f)
	return func() { h.keys[f] = k }
}

// remove uninstalls product p (stored under key f). The caller holds h.mu.
func (h *Host) remove(l *msiLog, f string, p *product) (int, error) {
	var txn fileTxn
	for _, file := range p.files {
		w, _ := parseWinPath(file) // validated when recorded
		if err := txn.remove(h.hostPath(w)); err != nil {
			txn.rollback()
			l.printf("MSI (s): Error 1603 removing %s: %v. Rolling back.", file, err)
			l.printf("MSI (s): Product: %s -- Removal failed.", p.name)
			return host.MSIFatal, nil
		}
		l.printf("MSI (s): Executing op: FileRemove(,FileName=%s)", file)
	}
	for i := len(p.dirs) - 1; i >= 0; i-- {
		w, _ := parseWinPath(p.dirs[i])
		txn.rmdir(h.hostPath(w)) // kept if something else lives there
	}
	err := h.mutate(func(ms *machine) (func(), error) {
		delete(ms.products, f)
		undoEntry := h.unregisterProduct(p)
		return func() { undoEntry(); txn.rollback() }, nil
	})
	if err != nil {
		return 0, err
	}
	l.printf("MSI (s): Product: %s -- Removal completed successfully.", p.name)
	l.printf("MSI (s): Windows Installer removed the product. Product Name: %s. Product Version: %s. Product Language: 1033. Removal success or error status: 0.", p.name, p.version)
	return host.MSISuccess, nil
}

// msiLog collects a verbose log in msiexec's shape: a banner, the lines that
// matter (the action, the product, the result), and the closing banner, so
// that whoever reads a log the agent kept finds what a real log would say.
type msiLog struct {
	b     strings.Builder
	clock clockwork.Clock
}

func newMSILog(c clockwork.Clock, msi string, install bool) *msiLog {
	l := &msiLog{clock: c}
	l.printf("=== Verbose logging started: %s  Build type: SHIP UNICODE 5.00.10011.00  Calling process: C:\\WINDOWS\\system32\\msiexec.exe ===", l.stamp())
	op := "/i"
	if !install {
		op = "/x"
	}
	l.printf("MSI (c): Command Line: msiexec %s %s /qn /norestart", op, msi)
	return l
}

func (l *msiLog) printf(format string, args ...any) {
	fmt.Fprintf(&l.b, format, args...)
	l.b.WriteString("\r\n")
}

func (l *msiLog) stamp() string     { return l.clock.Now().Format("1/2/2006  15:04:05") }
func (l *msiLog) clockTime() string { return l.clock.Now().Format("15:04:05") }

// end writes the result lines and the closing banner.
func (l *msiLog) end(code int) {
	ret := 1 // msiexec's "Return value" for success
	if code != host.MSISuccess && code != host.MSIRebootRequired {
		ret = 3
	}
	l.printf("Action ended %s: INSTALL. Return value %d.", l.clockTime(), ret)
	l.printf("MSI (c): MainEngineThread is returning %d", code)
	l.printf("=== Verbose logging stopped: %s ===", l.stamp())
}

func (l *msiLog) String() string { return l.b.String() }
