package capture

import (
	"context"
	"errors"
	"strings"
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestCreateRefusesSyscallsWithoutProbes: a capture naming a syscall the
// syscall provider has no probe for (win32k, or not an ntdll syscall) is
// refused with the field and the name meant, and nothing is stored.
func TestCreateRefusesSyscallsWithoutProbes(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, tc := range []struct{ syscall, want string }{
		{"NtUserFindWindowEx", "win32k"},
		{"NtGdiBitBlt", "win32k"},
		{"NtCreatFile", "did you mean NtCreateFile?"},
		{"ZwOpenFile", "did you mean NtOpenFile?"},
	} {
		_, _, err := f.m.Create(ctx, Request{Actor: "op", Spec: &livedumpv1.CaptureSpec{
			Selector: "x=y", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"},
			Syscalls: []string{"NtCreateFile", tc.syscall},
		}})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "syscall" || !strings.Contains(fe.Reason, tc.want) {
			t.Errorf("syscall %s: %v, want a syscall FieldError containing %q", tc.syscall, err, tc.want)
		}
	}
	cs, err := f.st.ListCaptures(ctx, "")
	if err != nil || len(cs) != 0 {
		t.Fatalf("stored %d captures (%v)", len(cs), err)
	}
}

// TestCreateWarnsAboutProcessNames: a name without an extension and a
// truncated name come back, and are stored, as the capture's warnings.
func TestCreateWarnsAboutProcessNames(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	// Force: no machine matches x=y, and this test is about the warnings.
	c, _, err := f.m.Create(ctx, Request{Actor: "op", Force: true, Spec: &livedumpv1.CaptureSpec{
		Selector: "x=y", Processes: []string{"ms-teams", "SearchIndexer.exe", "notepad.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`process "SearchIndexer.exe" matches as "SearchIndexer."`, "ms-teams has no extension; the kernel records ms-teams.exe"}
	for _, ws := range [][]string{c.GetWarnings(), storedWarnings(t, f, c.GetId())} {
		if len(ws) != 2 {
			t.Fatalf("warnings %q, want 2", ws)
		}
		for _, w := range want {
			if !strings.Contains(strings.Join(ws, "\n"), w) {
				t.Errorf("warnings %q, want one containing %q", ws, w)
			}
		}
	}
	if !strings.Contains(c.GetRenderedScript(), `tolower(execname) == "ms-teams"`) {
		t.Errorf("rendered script does not compare in lower case:\n%s", c.GetRenderedScript())
	}
}

func storedWarnings(t *testing.T, f *fixture, id string) []string {
	t.Helper()
	c, err := f.st.GetCapture(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Warnings
}
