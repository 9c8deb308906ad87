//go:build windows

package host_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/livedump/livedump/agent/host"
)

// TestWindowsFindsDTraceByItsFile: the Windows host finds dtrace by its
// files (the built-in System32\dtrace.exe first, then the MSI's), and a
// configured dtrace_path wins. It places files in System32 and Program
// Files, so it runs only under Wine.
func TestWindowsFindsDTraceByItsFile(t *testing.T) {
	needDoubles(t)
	h := host.NewWindows()
	builtin := host.BuiltinDTracePath(h)
	msi, err := host.MSIDTracePath(h)
	if err != nil {
		t.Fatal(err)
	}
	place := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("MZ"), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
	want := func(kind host.DTraceKind, path string) {
		t.Helper()
		d, err := h.DTrace()
		if err != nil || d.Kind != kind || d.Path != path {
			t.Fatalf("DTrace() = %+v, %v; want %s %s", d, err, kind, path)
		}
	}
	want(host.DTraceNone, "")
	if _, err := h.DTraceCommand(context.Background(), []string{"-V"}, nil); !errors.Is(err, host.ErrNoDTrace) {
		t.Fatalf("DTraceCommand without dtrace: %v", err)
	}
	place(msi)
	want(host.DTraceMSI, msi)
	place(builtin)
	want(host.DTraceBuiltin, builtin)
	cmd, err := h.DTraceCommand(context.Background(), []string{"-e", "-s", "x.d"}, []string{"_NT_SYMBOL_PATH=srv*C:\\symbols"})
	if err != nil || cmd.Path != builtin {
		t.Fatalf("DTraceCommand: %v, %v; want %s", cmd, err, builtin)
	}
	self, _ := os.Executable()
	h.DTracePath = self
	want(host.DTraceConfigured, self)
}
