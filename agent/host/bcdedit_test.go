package host

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseBCDDtraceFixtures(t *testing.T) {
	for _, tc := range []struct {
		file string
		want BCDValue
		err  bool
	}{
		{"en-US.txt", BCDValue{Present: true, On: true}, false},
		{"en-US-unset.txt", BCDValue{}, false},
		{"fr-FR.txt", BCDValue{Present: true, On: true}, false},
		// The first entry is the boot manager: the dtrace element of the
		// loader entry that follows must not leak into it.
		{"de-DE-two-entries.txt", BCDValue{}, false},
		{"access-denied.txt", BCDValue{}, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "bcdedit", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseBCDDtrace(string(b))
			if tc.err {
				if !errors.Is(err, ErrBCDUnreadable) {
					t.Fatalf("err = %v, want ErrBCDUnreadable", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseBCDDtrace = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseBCDEntryElements(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "bcdedit", "fr-FR.txt"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseBCDEntry(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if e["path"] != `\WINDOWS\system32\winload.efi` || e["nx"] != "OptIn" || e["locale"] != "fr-FR" {
		t.Fatalf("elements = %v", e)
	}
	b, _ = os.ReadFile(filepath.Join("testdata", "bcdedit", "de-DE-two-entries.txt"))
	e, err = ParseBCDEntry(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if e["displayorder"] != "{current}\n{a5f0d2c4-1111-11ee-9f3c-c8f7508d2a11}" {
		t.Fatalf("continuation lines not joined: %q", e["displayorder"])
	}
}

func TestParseBCDDtraceUnknownValue(t *testing.T) {
	_, err := ParseBCDDtrace("Windows Boot Loader\n-------------------\ndtrace   maybe\n")
	if !errors.Is(err, ErrBCDUnreadable) {
		t.Fatalf("err = %v, want ErrBCDUnreadable for an unknown value", err)
	}
}

func FuzzParseBCDDtrace(f *testing.F) {
	for _, name := range []string{"en-US.txt", "fr-FR.txt", "de-DE-two-entries.txt", "access-denied.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", "bcdedit", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, out string) {
		v, err := ParseBCDDtrace(out)
		if err == nil && !v.Present && v.On {
			t.Fatalf("absent element reported on: %+v", v)
		}
	})
}
