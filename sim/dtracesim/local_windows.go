package dtracesim

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"github.com/livedump/livedump/tests/testbin/teststate"
)

// localMachine is the Windows machine this process runs on, for the
// Windows build of the simulated dtrace when no simulated machine is named
// (LIVEDUMP_SIM_HOST unset): under Wine, installed as
// C:\Program Files\DTrace\dtrace.exe by a test DTrace MSI, it is the test
// double of dtrace.exe at the process boundary, like the bcdedit.exe double.
//
// The registry is the real one. The driver counts as loaded when the
// bcdedit double's {current} entry has dtrace on (teststate.BCDFile): Wine
// cannot reboot, so the boot flag is taken to be in effect as soon as it is
// set. Dumps are written to the real LiveKernelReports path; there is no
// Kernel-LiveDump event log to write to, so the agent falls back to its
// stable-size rule.
func localMachine() (*machine, error) {
	var bcd teststate.BCD
	if err := teststate.Load(teststate.BCDFile, &bcd); err != nil {
		return nil, err
	}
	m := &machine{
		local:        true,
		driverLoaded: bcd.Dtrace != nil && *bcd.Dtrace,
		bootTime:     time.Now().Add(-windows.DurationSinceBoot()).Round(time.Second),
		values:       map[string]regValue{},
	}
	for _, kv := range [][2]string{
		{liveKernelReportsKey, liveKernelReportsVal},
		{currentVersionKey, "CurrentBuildNumber"},
		{currentVersionKey, "SystemRoot"},
		{environmentKey, "NUMBER_OF_PROCESSORS"},
	} {
		k, err := registry.OpenKey(registry.LOCAL_MACHINE, strings.TrimPrefix(kv[0], `HKLM\`), registry.QUERY_VALUE|registry.WOW64_64KEY)
		if errors.Is(err, registry.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf(`registry %s: %w`, kv[0], err)
		}
		s, typ, err := k.GetStringValue(kv[1])
		k.Close()
		if err == nil {
			t := "REG_SZ"
			if typ == registry.EXPAND_SZ {
				t = "REG_EXPAND_SZ"
			}
			m.values[regIndex(kv[0], kv[1])] = regValue{typ: t, str: s}
		}
	}
	return m, nil
}

// localPath checks that win is an absolute path on this machine.
func localPath(win string) (string, error) {
	if !isWindowsPath(win) {
		return "", fmt.Errorf("%q is not an absolute Windows path such as C:\\Windows", win)
	}
	return win, nil
}

// localInstalled reports whether this program is installed where the
// DTrace MSI puts dtrace.exe; it is running, so it is installed.
func localInstalled() bool {
	exe, err := os.Executable()
	return err == nil && exe != ""
}
