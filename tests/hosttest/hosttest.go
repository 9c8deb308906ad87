// Package hosttest holds the behaviour every host.Registry must share, as a
// test suite that each implementation runs against itself: the simulated
// host on Linux and the Windows host on Windows (or under Wine). One suite
// for both is what keeps the simulation from drifting away from Windows.
package hosttest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
)

// Registry runs the shared registry tests against r. root is a key under
// HKLM that must not exist yet and that the tests may fill; the caller removes
// it afterwards if the implementation needs that.
func Registry(t *testing.T, r host.Registry, root string) {
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, r, root+`\RoundTrip`) })
	t.Run("Overwrite", func(t *testing.T) { overwrite(t, r, root+`\Overwrite`) })
	t.Run("CaseInsensitive", func(t *testing.T) { caseInsensitive(t, r, root+`\CaseKey`) })
	t.Run("CreatesParents", func(t *testing.T) { createsParents(t, r, root+`\Deep`) })
	t.Run("NotExist", func(t *testing.T) { notExist(t, r, root+`\Missing`) })
	t.Run("LongRootName", func(t *testing.T) { longRoot(t, r, root+`\LongRoot`) })
	t.Run("Invalid", func(t *testing.T) { invalid(t, r, root+`\Invalid`) })
	t.Run("KeyExists", func(t *testing.T) { keyExists(t, r, root+`\KeyExists`) })
	t.Run("DeleteKey", func(t *testing.T) { deleteKey(t, r, root+`\DeleteKey`) })
	t.Run("SubKeys", func(t *testing.T) { subKeys(t, r, root+`\SubKeys`) })
}

// subKeys checks that only direct children are listed, in their stored
// spelling, whether or not they hold values, and that a missing key is
// ErrNotExist: the Uninstall key's products are found this way.
func subKeys(t *testing.T, r host.Registry, key string) {
	if _, err := r.SubKeys(key); !errors.Is(err, host.ErrNotExist) {
		t.Fatalf("SubKeys of a missing key = %v, want ErrNotExist", err)
	}
	for _, k := range []string{`{ABC}`, `Child\Grandchild`, `Other`} {
		if err := r.SetValue(key+`\`+k, "v", host.DWORD(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.DeleteValue(key+`\Other`, "v"); err != nil {
		t.Fatal(err)
	}
	got, err := r.SubKeys(strings.ToLower(key))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"Child", "Other", "{ABC}"}; !slices.Equal(got, want) {
		t.Fatalf("SubKeys = %q, want %q", got, want)
	}
	got, err = r.SubKeys(key + `\Other`)
	if err != nil || len(got) != 0 {
		t.Fatalf("SubKeys of a leaf = %q, %v; want none", got, err)
	}
	if _, err := r.SubKeys(`HKCU\Software`); err == nil {
		t.Fatal("SubKeys accepted a key outside HKLM")
	}
	for _, k := range []string{`{ABC}`, `Child\Grandchild`} {
		if err := r.DeleteValue(key+`\`+k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{`{ABC}`, `Child\Grandchild`, `Child`, `Other`, ``} {
		if err := r.DeleteKey(strings.TrimSuffix(key+`\`+k, `\`)); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteKey checks that only an empty key is deleted: values or subkeys
// make it refuse, and a missing key is ErrNotExist.
func deleteKey(t *testing.T, r host.Registry, key string) {
	if err := r.DeleteKey(key); !errors.Is(err, host.ErrNotExist) {
		t.Fatalf("DeleteKey of a missing key = %v, want ErrNotExist", err)
	}
	if err := r.SetValue(key+`\Child`, "v", host.DWORD(1)); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteKey(key); !errors.Is(err, host.ErrKeyNotEmpty) {
		t.Fatalf("DeleteKey of a key with a subkey = %v, want ErrKeyNotEmpty", err)
	}
	if err := r.DeleteKey(key + `\Child`); !errors.Is(err, host.ErrKeyNotEmpty) {
		t.Fatalf("DeleteKey of a key with a value = %v, want ErrKeyNotEmpty", err)
	}
	if ok, _ := r.KeyExists(key + `\Child`); !ok {
		t.Fatal("a refused DeleteKey removed the key")
	}
	if err := r.DeleteValue(key+`\Child`, "v"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteKey(key + `\Child`); err != nil {
		t.Fatalf("DeleteKey of an empty key: %v", err)
	}
	if ok, _ := r.KeyExists(key + `\Child`); ok {
		t.Fatal("deleted key still exists")
	}
	if err := r.DeleteKey(key); err != nil {
		t.Fatalf("DeleteKey of the emptied parent: %v", err)
	}
	if err := r.DeleteKey(`HKCU\Software`); err == nil {
		t.Fatal("DeleteKey accepted a key outside HKLM")
	}
}

func roundTrip(t *testing.T, r host.Registry, key string) {
	cases := []struct {
		name string
		v    host.Value
	}{
		{"sz", host.SZ("hello world")},
		{"szEmpty", host.SZ("")},
		{"szUnicode", host.SZ("Événement \u00fc\u4e2d")},
		{"expand", host.ExpandSZ(`%SystemRoot%\MEMORY.DMP`)},
		{"dwordZero", host.DWORD(0)},
		{"dwordMax", host.DWORD(0xFFFFFFFF)},
		{"qword", host.QWORD(0x1122334455667788)},
		{"qwordMax", host.QWORD(^uint64(0))},
		{"multi", host.MultiSZ("dumpfve.sys", "second value")},
		{"multiEmpty", host.MultiSZ()},
		{"", host.SZ("the default value")},
	}
	for _, c := range cases {
		if err := r.SetValue(key, c.name, c.v); err != nil {
			t.Fatalf("SetValue(%q, %v): %v", c.name, c.v, err)
		}
	}
	for _, c := range cases {
		got, err := r.GetValue(key, c.name)
		if err != nil {
			t.Errorf("GetValue(%q): %v", c.name, err)
			continue
		}
		if !got.Equal(c.v) {
			t.Errorf("GetValue(%q) = %v, want %v", c.name, got, c.v)
		}
	}
	for _, c := range cases {
		if err := r.DeleteValue(key, c.name); err != nil {
			t.Errorf("DeleteValue(%q): %v", c.name, err)
		}
		if _, err := r.GetValue(key, c.name); !errors.Is(err, host.ErrNotExist) {
			t.Errorf("GetValue(%q) after delete: err = %v, want ErrNotExist", c.name, err)
		}
	}
}

func overwrite(t *testing.T, r host.Registry, key string) {
	steps := []host.Value{host.DWORD(1), host.SZ("now a string"), host.QWORD(7), host.MultiSZ("a"), host.ExpandSZ("%TEMP%")}
	for _, v := range steps {
		if err := r.SetValue(key, "V", v); err != nil {
			t.Fatalf("SetValue(%v): %v", v, err)
		}
		got, err := r.GetValue(key, "V")
		if err != nil || !got.Equal(v) {
			t.Fatalf("GetValue after SetValue(%v) = %v, %v", v, got, err)
		}
	}
}

func caseInsensitive(t *testing.T, r host.Registry, key string) {
	if err := r.SetValue(key, "MyValue", host.DWORD(1)); err != nil {
		t.Fatal(err)
	}
	upper, lower := strings.ToUpper(key), strings.ToLower(key)
	for _, k := range []string{key, upper, lower} {
		for _, n := range []string{"MyValue", "MYVALUE", "myvalue"} {
			got, err := r.GetValue(k, n)
			if err != nil || !got.Equal(host.DWORD(1)) {
				t.Errorf("GetValue(%q, %q) = %v, %v; want REG_DWORD 1", k, n, got, err)
			}
		}
	}
	// A write under another spelling updates the same value.
	if err := r.SetValue(upper, "MYVALUE", host.DWORD(2)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.GetValue(lower, "myvalue"); err != nil || !got.Equal(host.DWORD(2)) {
		t.Errorf("after SetValue under another case: GetValue = %v, %v; want REG_DWORD 2", got, err)
	}
	if err := r.DeleteValue(lower, "myVALUE"); err != nil {
		t.Fatalf("DeleteValue under another case: %v", err)
	}
	if _, err := r.GetValue(key, "MyValue"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("GetValue after case-insensitive delete: %v, want ErrNotExist", err)
	}
}

func createsParents(t *testing.T, r host.Registry, key string) {
	deep := key + `\a b\{4d36e96e-e325-11ce-bfc1-08002be10318}\c.d(1)`
	if err := r.SetValue(deep, "x", host.SZ("y")); err != nil {
		t.Fatalf("SetValue on a deep new key: %v", err)
	}
	if got, err := r.GetValue(deep, "x"); err != nil || !got.Equal(host.SZ("y")) {
		t.Errorf("GetValue(deep) = %v, %v", got, err)
	}
	// The parents exist now but hold no such value.
	if _, err := r.GetValue(key+`\a b`, "x"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("GetValue(parent) err = %v, want ErrNotExist", err)
	}
}

func notExist(t *testing.T, r host.Registry, key string) {
	if _, err := r.GetValue(key, "v"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("GetValue on missing key: err = %v, want ErrNotExist", err)
	}
	if err := r.DeleteValue(key, "v"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("DeleteValue on missing key: err = %v, want ErrNotExist", err)
	}
	if err := r.SetValue(key, "present", host.DWORD(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetValue(key, "absent"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("GetValue on missing value: err = %v, want ErrNotExist", err)
	}
	if _, err := r.GetValue(key, ""); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("GetValue on unset default value: err = %v, want ErrNotExist", err)
	}
	if err := r.DeleteValue(key, "absent"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("DeleteValue on missing value: err = %v, want ErrNotExist", err)
	}
	if err := r.DeleteValue(key, "present"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteValue(key, "present"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("second DeleteValue: err = %v, want ErrNotExist", err)
	}
}

func longRoot(t *testing.T, r host.Registry, key string) {
	long := `HKEY_LOCAL_MACHINE\` + strings.TrimPrefix(key, `HKLM\`)
	if err := r.SetValue(long, "v", host.DWORD(3)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.GetValue(key, "v"); err != nil || !got.Equal(host.DWORD(3)) {
		t.Errorf("value written via HKEY_LOCAL_MACHINE not read via HKLM: %v, %v", got, err)
	}
}

func invalid(t *testing.T, r host.Registry, key string) {
	badKeys := []string{
		`HKCU\Software\x`,
		`HKLM`,
		`HKLM\`,
		key + `\`,
		key + `\\x`,
		key + `\..\x`,
		key + `\a/b`,
		key + `\a*b`,
		key + "\\caf\u00e9",
		key + `\` + strings.Repeat("k", host.MaxKeyComponent+1),
	}
	for _, k := range badKeys {
		if err := r.SetValue(k, "v", host.DWORD(1)); err == nil || errors.Is(err, host.ErrNotExist) {
			t.Errorf("SetValue(%q) err = %v, want a validation error", k, err)
		}
		if _, err := r.GetValue(k, "v"); err == nil || errors.Is(err, host.ErrNotExist) {
			t.Errorf("GetValue(%q) err = %v, want a validation error", k, err)
		}
		if err := r.DeleteValue(k, "v"); err == nil || errors.Is(err, host.ErrNotExist) {
			t.Errorf("DeleteValue(%q) err = %v, want a validation error", k, err)
		}
	}
	for _, n := range []string{`a\b`, "a\x00b", `%x%`, strings.Repeat("n", host.MaxValueName+1)} {
		if err := r.SetValue(key, n, host.DWORD(1)); err == nil || errors.Is(err, host.ErrNotExist) {
			t.Errorf("SetValue(name %q) err = %v, want a validation error", n, err)
		}
	}
	badValues := []host.Value{
		{Type: 3},
		{Type: host.DWord, Num: 1 << 32},
		host.SZ("a\x00b"),
		host.MultiSZ("a", "", "b"),
	}
	for _, v := range badValues {
		if err := r.SetValue(key, "v", v); err == nil {
			t.Errorf("SetValue(%v) succeeded, want an error", v)
		}
	}
	// Nothing above may have created the key.
	if _, err := r.GetValue(key, "v"); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("after rejected writes GetValue err = %v, want ErrNotExist", err)
	}
}

// keyExists checks KeyExists, which the pending-reboot signals need: keys
// that mark a state by existing, with no values in them.
func keyExists(t *testing.T, r host.Registry, key string) {
	exists := func(k string, want bool) {
		t.Helper()
		got, err := r.KeyExists(k)
		if err != nil || got != want {
			t.Errorf("KeyExists(%q) = %v, %v; want %v", k, got, err, want)
		}
	}
	exists(key, false)
	exists(key+`\child`, false)

	// A key whose only value was deleted still exists, empty.
	empty := key + `\Empty`
	if err := r.SetValue(empty, "v", host.DWORD(1)); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteValue(empty, "v"); err != nil {
		t.Fatal(err)
	}
	exists(empty, true)
	exists(strings.ToUpper(empty), true)
	exists(strings.ToLower(empty), true)
	exists(`HKEY_LOCAL_MACHINE\`+strings.TrimPrefix(empty, `HKLM\`), true)

	// Parents of a key exist; a value is not a key.
	deep := key + `\a\b`
	if err := r.SetValue(deep, "leaf", host.SZ("x")); err != nil {
		t.Fatal(err)
	}
	exists(deep, true)
	exists(key+`\a`, true)
	exists(key, true)
	exists(deep+`\leaf`, false)
	exists(key+`\a\c`, false)

	for _, k := range []string{`HKCU\Software`, `HKLM`, `HKLM\`, key + `\`, key + `\..\x`, key + `\a*b`} {
		if ok, err := r.KeyExists(k); err == nil || errors.Is(err, host.ErrNotExist) || ok {
			t.Errorf("KeyExists(%q) = %v, %v; want a validation error", k, ok, err)
		}
	}
}
