package host

import (
	"os"
	"path/filepath"
	"testing"
)

func readFixture(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"testdata"}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseRegQuery(t *testing.T) {
	v, err := ParseRegQuery(readFixture(t, "reg", "fulllive.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !v["FullLiveReportsMax"].Equal(DWORD(10)) || !v["ComponentThrottleThreshold"].Equal(DWORD(0)) || len(v) != 3 {
		t.Fatalf("values = %v", v)
	}
	// Only the first key's values; the subkey listed after it is not mixed in.
	v, err = ParseRegQuery(readFixture(t, "reg", "crashcontrol.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !v["DumpFile"].Equal(ExpandSZ(`%SystemRoot%\MEMORY.DMP`)) || !v["(Default)"].Equal(SZ("")) || len(v) != 5 {
		t.Fatalf("values = %v", v)
	}
	v, err = ParseRegQuery(readFixture(t, "reg", "multi.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !v["PendingFileRenameOperations"].Equal(MultiSZ(`\??\C:\a.tmp`, "", `\??\C:\b.tmp`)) {
		t.Fatalf("multi = %v", v["PendingFileRenameOperations"])
	}
	if !v["ProtectionMode"].Equal(QWORD(1)) || !v["LiveKernelReportsPath"].Equal(SZ(`\??\C:\livedumps`)) {
		t.Fatalf("values = %v", v)
	}
	if _, err := ParseRegQuery(readFixture(t, "reg", "missing.txt")); err == nil {
		t.Fatal("error output parsed as a key")
	}
}

func FuzzParseRegQuery(f *testing.F) {
	for _, n := range []string{"fulllive.txt", "crashcontrol.txt", "multi.txt", "missing.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", "reg", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, out string) {
		vals, err := ParseRegQuery(out)
		if err != nil {
			return
		}
		for name, v := range vals {
			if err := v.Validate(); err != nil && v.Type != MultiString && v.Type != String && v.Type != ExpandString {
				t.Fatalf("value %q parsed into an invalid %v: %v", name, v, err)
			}
		}
	})
}
