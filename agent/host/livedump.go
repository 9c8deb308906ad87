package host

import (
	"errors"
	"fmt"
	"strings"
)

// LiveKernelReportsKey holds LiveKernelReportsPath.
const LiveKernelReportsKey = `HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\LiveKernelReports`

// LiveDumpWinPath returns the Windows path (C:\...) where live dumps go on
// the machine behind r: the configured LiveKernelReportsPath in NT form
// (\??\C:\livedumps) turned into a DOS path, or SystemRoot\LiveKernelReports
// when none is configured.
func LiveDumpWinPath(r interface {
	GetValue(key, name string) (Value, error)
}) (string, error) {
	v, err := r.GetValue(LiveKernelReportsKey, "LiveKernelReportsPath")
	switch {
	case err == nil:
		p := strings.TrimPrefix(v.Str, `\??\`)
		if len(p) < 3 || p[1] != ':' || p[2] != '\\' {
			return "", fmt.Errorf("LiveKernelReportsPath %q is not a drive path", v.Str)
		}
		return p, nil
	case !errors.Is(err, ErrNotExist):
		return "", err
	}
	root, err := r.GetValue(CurrentVersionKey, "SystemRoot")
	if err != nil {
		return "", fmt.Errorf("SystemRoot: %w", err)
	}
	return strings.TrimRight(root.Str, `\`) + `\LiveKernelReports`, nil
}
