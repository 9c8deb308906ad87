//go:build windows

package host

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
)

// Windows is the Host of a real Windows machine. It has no state: every call
// goes to the operating system, so several agents' views never diverge from
// what regedit shows.
type Windows struct {
	// DTracePath is the agent's dtrace_path setting: the dtrace executable
	// to run instead of the one Windows or the DTrace MSI installed.
	DTracePath string
}

// NewWindows returns the real Host. It exists so that the agent's main picks
// an implementation in one place and the rest of the agent sees only Host.
func NewWindows() *Windows { return &Windows{} }

var _ Host = (*Windows)(nil)

// view forces the 64-bit registry view. Without it a 32-bit agent would be
// silently redirected to WOW6432Node and read or write keys that the 64-bit
// kernel and tools never look at.
const view = registry.WOW64_64KEY

// subkey validates key and strips the root, which OpenKey takes as a handle.
func subkey(key, name string) (string, string, error) {
	norm, err := NormalizeKey(key)
	if err != nil {
		return "", "", err
	}
	if err := ValidateValueName(name); err != nil {
		return "", "", err
	}
	return norm, strings.TrimPrefix(norm, hklm+`\`), nil
}

// GetValue reads one value, mapping the Windows type to ValueType. Values of
// types the agent does not manage are reported as errors rather than coerced.
func (*Windows) GetValue(key, name string) (Value, error) {
	norm, sub, err := subkey(key, name)
	if err != nil {
		return Value{}, err
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, sub, registry.QUERY_VALUE|view)
	if err != nil {
		return Value{}, keyError(norm, name, err)
	}
	defer k.Close()

	_, typ, err := k.GetValue(name, nil)
	if err != nil {
		return Value{}, valueError(norm, name, err)
	}
	v := Value{Type: ValueType(typ)}
	switch v.Type {
	case String, ExpandString:
		v.Str, _, err = k.GetStringValue(name)
	case MultiString:
		v.Strs, _, err = k.GetStringsValue(name)
	case DWord, QWord:
		v.Num, _, err = k.GetIntegerValue(name)
	default:
		return Value{}, fmt.Errorf("registry key %s value %s: unsupported type %s", Quote(norm), Quote(DisplayName(name)), v.Type)
	}
	if err != nil {
		// The value may have been deleted or retyped between the two reads.
		return Value{}, valueError(norm, name, err)
	}
	return v, nil
}

// SetValue writes one value, creating the key path as Windows' RegCreateKeyEx
// does.
func (*Windows) SetValue(key, name string, v Value) error {
	norm, sub, err := subkey(key, name)
	if err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("registry key %s value %s: %w", Quote(norm), Quote(DisplayName(name)), err)
	}
	k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, sub, registry.SET_VALUE|view)
	if err != nil {
		return fmt.Errorf("registry key %s: create: %w", Quote(norm), err)
	}
	defer k.Close()

	switch v.Type {
	case String:
		err = k.SetStringValue(name, v.Str)
	case ExpandString:
		err = k.SetExpandStringValue(name, v.Str)
	case MultiString:
		err = k.SetStringsValue(name, v.Strs)
	case DWord:
		err = k.SetDWordValue(name, uint32(v.Num))
	case QWord:
		err = k.SetQWordValue(name, v.Num)
	}
	if err != nil {
		return fmt.Errorf("registry key %s value %s: set: %w", Quote(norm), Quote(DisplayName(name)), err)
	}
	return nil
}

// DeleteValue removes one value; a missing key or value wraps ErrNotExist.
func (*Windows) DeleteValue(key, name string) error {
	norm, sub, err := subkey(key, name)
	if err != nil {
		return err
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, sub, registry.SET_VALUE|view)
	if err != nil {
		return keyError(norm, name, err)
	}
	defer k.Close()
	if err := k.DeleteValue(name); err != nil {
		return valueError(norm, name, err)
	}
	return nil
}

// KeyExists opens the key for reading to learn whether it exists; a missing
// key is (false, nil), any other failure (access denied included) an error,
// since the caller cannot tell from it whether the key is there.
func (*Windows) KeyExists(key string) (bool, error) {
	norm, sub, err := subkey(key, "")
	if err != nil {
		return false, err
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, sub, registry.QUERY_VALUE|view)
	if errors.Is(err, registry.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("registry key %s: open: %w", Quote(norm), err)
	}
	k.Close()
	return true, nil
}

// Hostname returns the DNS host name (GetComputerNameEx with
// ComputerNameDnsHostname), case preserved, rather than the upper-cased
// 15-character NetBIOS name.
// DeleteKey deletes an empty key. RegDeleteKey would also delete a key that
// holds values, so emptiness is checked first: the agent only removes keys it
// created and emptied.
func (*Windows) DeleteKey(key string) error {
	_, sub, err := subkey(key, "")
	if err != nil {
		return err
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, sub, registry.QUERY_VALUE|registry.ENUMERATE_SUB_KEYS|view)
	if err != nil {
		return keyError(key, "", err)
	}
	info, err := k.Stat()
	k.Close()
	if err != nil {
		return keyError(key, "", err)
	}
	if info.ValueCount > 0 || info.SubKeyCount > 0 {
		return fmt.Errorf("registry key %s holds %d values and %d subkeys: %w", Quote(key), info.ValueCount, info.SubKeyCount, ErrKeyNotEmpty)
	}
	if err := registry.DeleteKey(registry.LOCAL_MACHINE, sub); err != nil {
		return keyError(key, "", err)
	}
	return nil
}

func (*Windows) Hostname() (string, error) {
	n := uint32(64)
	for {
		buf := make([]uint16, n)
		err := windows.GetComputerNameEx(windows.ComputerNameDnsHostname, &buf[0], &n)
		if err == nil {
			return windows.UTF16ToString(buf[:n]), nil
		}
		if !errors.Is(err, windows.ERROR_MORE_DATA) || int(n) <= len(buf) {
			return "", fmt.Errorf("hostname: GetComputerNameEx: %w", err)
		}
	}
}

// keyError wraps a failure to open key, turning "not found" into ErrNotExist
// so callers never see the Windows error number for the normal absent case.
func keyError(key, name string, err error) error {
	if errors.Is(err, registry.ErrNotExist) {
		return fmt.Errorf("registry key %s (value %s): key not found: %w", Quote(key), Quote(DisplayName(name)), ErrNotExist)
	}
	return fmt.Errorf("registry key %s: open: %w", Quote(key), err)
}

// valueError is keyError for a value inside an opened key.
func valueError(key, name string, err error) error {
	if errors.Is(err, registry.ErrNotExist) {
		return fmt.Errorf("registry key %s value %s: %w", Quote(key), Quote(DisplayName(name)), ErrNotExist)
	}
	if errors.Is(err, registry.ErrUnexpectedType) {
		return fmt.Errorf("registry key %s value %s: type changed while reading: %w", Quote(key), Quote(DisplayName(name)), err)
	}
	return fmt.Errorf("registry key %s value %s: %w", Quote(key), Quote(DisplayName(name)), err)
}

// SubKeys lists key's direct subkeys (RegEnumKeyEx through ReadSubKeyNames).
func (*Windows) SubKeys(key string) ([]string, error) {
	norm, sub, err := subkey(key, "")
	if err != nil {
		return nil, err
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, sub, registry.ENUMERATE_SUB_KEYS|view)
	if err != nil {
		return nil, keyError(norm, "", err)
	}
	defer k.Close()
	names, err := k.ReadSubKeyNames(-1)
	if err != nil {
		return nil, fmt.Errorf("registry key %s: list subkeys: %w", Quote(norm), err)
	}
	return names, nil
}
