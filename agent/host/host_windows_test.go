//go:build windows

package host_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/windows/registry"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/tests/hosttest"
)

// TestWindowsRegistry runs the shared suite against the real registry, in a
// scratch key it removes afterwards. It needs rights to write HKLM (an
// elevated prompt, or Wine, where HKLM is writable).
func TestWindowsRegistry(t *testing.T) {
	b := make([]byte, 4)
	rand.Read(b)
	name := "livedump-test-" + hex.EncodeToString(b)
	root := `HKLM\SOFTWARE\` + name
	k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, `SOFTWARE\`+name, registry.ALL_ACCESS|registry.WOW64_64KEY)
	if err != nil {
		t.Skipf("needs an elevated prompt: cannot write HKLM: %v", err)
	}
	k.Close()
	t.Cleanup(func() { deleteTree(t, `SOFTWARE\`+name) })
	hosttest.Registry(t, host.NewWindows(), root)
}

// deleteTree removes a key and its subkeys; registry.DeleteKey only removes
// leaves.
func deleteTree(t *testing.T, path string) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, path, registry.ENUMERATE_SUB_KEYS|registry.WOW64_64KEY)
	if err != nil {
		return
	}
	subs, _ := k.ReadSubKeyNames(-1)
	k.Close()
	for _, s := range subs {
		deleteTree(t, path+`\`+s)
	}
	if err := registry.DeleteKey(registry.LOCAL_MACHINE, path); err != nil {
		t.Errorf("cleanup %s: %v", path, err)
	}
}

// TestWindowsInventory reads the machine's own inventory; every Windows
// machine has the required values.
func TestWindowsInventory(t *testing.T) {
	inv, err := host.ReadInventory(host.NewWindows())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inventory: %+v", inv)
	if inv.OSBuild == "" || inv.Arch == "" {
		t.Errorf("incomplete inventory %+v", inv)
	}
	want, err := os.Hostname()
	if err == nil && !strings.EqualFold(inv.Hostname, want) {
		t.Errorf("Hostname = %q, os.Hostname = %q", inv.Hostname, want)
	}
}
