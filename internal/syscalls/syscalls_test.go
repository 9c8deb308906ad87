package syscalls

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	if !slices.IsSorted(ntdll) {
		t.Fatal("table not sorted")
	}
	if len(ntdll) < 400 {
		t.Fatalf("only %d names", len(ntdll))
	}
	for _, n := range []string{"NtCreateFile", "NtOpenFile", "NtClose", "NtDeviceIoControlFile", "NtAlpcSendWaitReceivePort", "NtReadFile", "NtWriteFile", "NtQueryInformationProcess"} {
		if !Known(n) {
			t.Errorf("%s not in the table", n)
		}
	}
	for _, n := range []string{"NtGetTickCount", "NtdllDefWindowProc_A", "NtUserFindWindowEx", "ZwClose", "ntclose", "RtlAllocateHeap"} {
		if Known(n) {
			t.Errorf("%s is in the table", n)
		}
	}
	if !strings.Contains(Source, "mingw-w64") || !strings.Contains(Source, "libntdll.a") {
		t.Errorf("Source = %q", Source)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string // substrings; none: accepted
	}{
		{"NtCreateFile", nil},
		{"NtAlpcSendWaitReceivePort", nil},
		{"NtUserFindWindowEx", []string{"win32k", "issues/23"}},
		{"NtGdiBitBlt", []string{"win32k", "NtGdi*"}},
		{"ntuserGetMessage", []string{"win32k"}},
		{"ntcreatefile", []string{"case-sensitive", "did you mean NtCreateFile?"}},
		{"NTCreateFile", []string{"did you mean NtCreateFile?"}},
		{"ZwCreateFile", []string{"not Zw*", "did you mean NtCreateFile?"}},
		{"NtCreatFile", []string{"not a syscall exported by ntdll", "mingw-w64", "did you mean NtCreateFile?"}},
		{"NtOpenFiel", []string{"did you mean NtOpenFile?"}},
		{"CreateFile", []string{"not an Nt syscall name", "did you mean NtCreateFile?"}},
		{"NtFrobnicateWidget", []string{"not a syscall exported by ntdll"}},
		{"NtGetTickCount", []string{"not a syscall"}},
		{"Nt", []string{"not an Nt syscall name"}},
		{"NtCreateFile;", []string{"not an Nt syscall name", "did you mean NtCreateFile?"}},
		{"", []string{"not an Nt syscall name"}},
		{strings.Repeat("x", 1000), []string{"not an Nt syscall name"}},
	} {
		err := Check(tc.name)
		if tc.want == nil {
			if err != nil {
				t.Errorf("Check(%q) = %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("Check(%q) accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Check(%q) = %q, want it to contain %q", tc.name, err, w)
			}
		}
		if len(err.Error()) > 400 {
			t.Errorf("Check(%.20q): message of %d bytes", tc.name, len(err.Error()))
		}
	}
	if err := Check("NtFrobnicateWidget"); strings.Contains(err.Error(), "did you mean") {
		t.Errorf("a far name got a suggestion: %v", err)
	}
}

// TestGenerated regenerates the table when the library is installed and
// checks that the committed file is what the generator writes.
func TestGenerated(t *testing.T) {
	const lib = "/usr/x86_64-w64-mingw32/lib/libntdll.a"
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("needs mingw-w64: %s not installed (apt-get install mingw-w64-x86-64-dev)", lib)
	}
	dir := t.TempDir()
	v := strings.TrimPrefix(Source, "Debian mingw-w64-x86-64-dev ")
	v = strings.TrimSuffix(v, " libntdll.a")
	if err := genForTest(lib, v, dir); err != nil {
		t.Skipf("needs a working generator: %v", err)
	}
	got, err := os.ReadFile(dir + "/zz_generated_ntdll.go")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("zz_generated_ntdll.go")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Error("zz_generated_ntdll.go differs from what go run ./gen writes from the installed library: run go generate ./internal/syscalls")
	}
}
