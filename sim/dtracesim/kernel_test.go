package dtracesim

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// TestKernelSpec checks the child's command line: seeds use all 64 bits.
func TestKernelSpec(t *testing.T) {
	for _, spec := range []string{"0,8388608,3000000000", "0,x,1,2", "0,1,2,-1", ""} {
		var out, errb bytes.Buffer
		if code := kernelMain(spec, &out, &errb); code != exitUsage {
			t.Errorf("spec %q: exit %d, want usage (%s)", spec, code, errb.String())
		}
	}
	if runtime.GOOS == "windows" {
		return // a valid spec writes a dump into this machine's LiveKernelReports
	}
	var out, errb bytes.Buffer
	code := kernelMain("0,8388608,3000000000,18446744073709551615", &out, &errb)
	if code == exitUsage || strings.Contains(errb.String(), envKernelDump) {
		t.Errorf("a full 64-bit seed is refused: exit %d: %s", code, errb.String())
	}
}
