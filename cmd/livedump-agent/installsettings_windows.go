//go:build windows

package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"github.com/livedump/livedump/internal/pki"
)

// The MSI writes its properties to settingsKey (HKLM, 64-bit view); the
// service moves them into the config file when it starts and deletes
// them, so that the registry holds the enrollment token only from the
// install to the service's first start, and a later install that gives no
// property changes nothing.
const settingsKey = `SOFTWARE\livedump\Agent`

// The values under settingsKey, one per MSI property.
const (
	regController = "Controller"      // CONTROLLER
	regCACert     = "CACert"          // CA_CERT: path of a PEM file
	regToken      = "EnrollToken"     // ENROLL_TOKEN
	regLabels     = "Labels"          // LABELS
	regMetrics    = "MetricsListen"   // METRICS_LISTEN
	regInstallers = "InstallerSHA256" // INSTALLER_SHA256
	regAllowRaw   = "AllowRawScripts" // ALLOW_RAW_SCRIPTS
)

// Access control: SYSTEM and Administrators only, not inherited from the
// parent, inherited by what is created inside.
const (
	protectedDirSDDL  = "D:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
	protectedFileSDDL = "D:PAI(A;;FA;;;SY)(A;;FA;;;BA)"
	protectedKeySDDL  = "D:PAI(A;OICI;KA;;;SY)(A;OICI;KA;;;BA)"
)

// protect replaces the DACL of a file, directory or registry key (named
// as SetNamedSecurityInfo wants it, e.g. MACHINE\SOFTWARE\x) with sddl's.
func protect(name string, typ windows.SE_OBJECT_TYPE, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	if err := windows.SetNamedSecurityInfo(name, typ,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil); err != nil {
		return fmt.Errorf("set access control on %s: %w", name, err)
	}
	return nil
}

// daclOf returns the DACL of a file in SDDL, for the log.
func daclOf(path string) string {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return "unknown: " + err.Error()
	}
	return sd.String()
}

// protectDataDir creates dir and restricts it, and what it holds, to
// SYSTEM and Administrators: it holds the config with the enrollment
// token, the agent's private key, and the logs.
func protectDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return protect(dir, windows.SE_FILE_OBJECT, protectedDirSDDL)
}

// writeProtected writes data to path through a temporary file that is
// restricted before anything is written to it, then renamed over path.
func writeProtected(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := protect(tmp, windows.SE_FILE_OBJECT, protectedFileSDDL); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return protect(path, windows.SE_FILE_OBJECT, protectedFileSDDL)
}

// readInstallSettings reads the MSI's values from k; a missing value is
// empty, as is a property the MSI was not given.
func readInstallSettings(k registry.Key) (caSource string, s installSettings, err error) {
	get := func(name string) (string, error) {
		v, _, err := k.GetStringValue(name)
		if errors.Is(err, registry.ErrNotExist) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf(`registry HKLM\%s value %s: %w`, settingsKey, name, err)
		}
		return strings.TrimSpace(v), nil
	}
	if s.Controllers, err = get(regController); err != nil {
		return
	}
	if caSource, err = get(regCACert); err != nil {
		return
	}
	if s.Token, err = get(regToken); err != nil {
		return
	}
	if s.Labels, err = get(regLabels); err != nil {
		return
	}
	if s.MetricsListen, err = get(regMetrics); err != nil {
		return
	}
	if s.InstallerSHA256, err = get(regInstallers); err != nil {
		return
	}
	s.AllowRawScripts, err = get(regAllowRaw)
	return
}

// importInstallSettings moves the settings the MSI left in the registry
// into configFile (creating it), copying the CA certificate CA_CERT names
// next to it, and restricts the file to SYSTEM and Administrators. It is
// a no-op when the MSI left nothing.
func importInstallSettings(log *slog.Logger, configFile string) error {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, settingsKey, registry.QUERY_VALUE|registry.SET_VALUE|registry.WOW64_64KEY)
	if errors.Is(err, registry.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf(`registry HKLM\%s: %w`, settingsKey, err)
	}
	defer k.Close()
	// From now on an MSI that writes a token here (an upgrade) writes it
	// into a key that only SYSTEM and Administrators can read.
	if err := protect(`MACHINE\`+settingsKey, windows.SE_REGISTRY_KEY, protectedKeySDDL); err != nil {
		log.Warn("cannot restrict the installer settings key", "err", err)
	}
	caSource, s, err := readInstallSettings(k)
	if err != nil {
		return err
	}
	if !s.empty() || caSource != "" {
		dir := filepath.Dir(configFile)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if caSource != "" {
			if s.CAFile, err = copyCA(caSource, filepath.Join(dir, "ca.crt")); err != nil {
				return err
			}
		}
		old, err := os.ReadFile(configFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		doc, set, err := mergeConfig(old, s)
		if err != nil {
			return fmt.Errorf("installer settings (HKLM\\%s): %w", settingsKey, err)
		}
		if !bytes.Equal(doc, old) {
			if err := writeProtected(configFile, doc); err != nil {
				return fmt.Errorf("write %s: %w", configFile, err)
			}
		} else if err := protect(configFile, windows.SE_FILE_OBJECT, protectedFileSDDL); err != nil {
			return err
		}
		log.Info("installer settings written to the config", "file", configFile, "keys", strings.Join(set, ","), "acl", daclOf(configFile))
	}
	for _, name := range []string{regController, regCACert, regToken, regLabels, regMetrics, regInstallers, regAllowRaw} {
		if err := k.DeleteValue(name); err != nil && !errors.Is(err, registry.ErrNotExist) {
			return fmt.Errorf(`registry HKLM\%s: delete %s: %w`, settingsKey, name, err)
		}
	}
	return nil
}

// copyCA checks that src holds PEM certificates and copies it to dst,
// unless they are the same file; it returns dst.
func copyCA(src, dst string) (string, error) {
	if !filepath.IsAbs(src) {
		return "", fmt.Errorf("CA_CERT %q: want the absolute path of a PEM file", src)
	}
	if _, err := pki.ReadCerts(src); err != nil {
		return "", fmt.Errorf("CA_CERT %q: %w", src, err)
	}
	if a, b := filepath.Clean(src), filepath.Clean(dst); strings.EqualFold(a, b) {
		return dst, nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("CA_CERT: %w", err)
	}
	if err := writeProtected(dst, data); err != nil {
		return "", fmt.Errorf("copy CA_CERT to %s: %w", dst, err)
	}
	return dst, nil
}
