package kdump

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func sample() Header {
	return Header{
		MajorVersion: 0x0f, Build: 26100, MachineType: MachineAMD64, NumberProcessors: 8,
		BugCheckCode: BugCheckManuallyInitiated, BugCheckParams: [4]uint64{0, 1, 2, 3},
		DumpType: DumpTypeFull, RequiredDumpSpace: 8 << 20,
		SystemTime: time.Date(2026, 11, 26, 14, 5, 0, 0, time.UTC), Comment: "Live kernel dump: component DTRACE",
	}
}

func TestParseRoundTrip(t *testing.T) {
	want := sample()
	got, err := Parse(want.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got.DumpType.String() != "full" || DumpType(42).String() != "type-42" {
		t.Fatalf("dump type names: %s %s", got.DumpType, DumpType(42))
	}
}

// TestParseSimulatorLayout pins the offsets against bytes written by hand at
// the documented positions, not through Marshal.
func TestParseSimulatorLayout(t *testing.T) {
	b := make([]byte, HeaderSize)
	copy(b, "PAGEDU64")
	b[0x0c], b[0x0d] = 0xf4, 0x65 // 26100 = 0x65f4
	b[0x38] = 0xe2
	b[0xf98] = 4
	b[0xfa0+2] = 0x10 // 0x100000
	h, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Build != 26100 || h.BugCheckCode != 0xE2 || h.DumpType != DumpTypeTriage || h.RequiredDumpSpace != 1<<20 {
		t.Fatalf("%+v", h)
	}
}

func TestParseRejects(t *testing.T) {
	good := sample().Marshal()
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short", good[:0x1000], ErrShort},
		{"zeros", make([]byte, HeaderSize), ErrSignature},
		{"32-bit", append([]byte("PAGEDUMP"), good[8:]...), ErrSignature},
		{"minidump", append([]byte("MDMP\x93\xa7\x00\x00"), good[8:]...), ErrSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	h := sample()
	for _, tc := range []struct {
		size int64
		ok   bool
		note string
	}{
		{8 << 20, true, ""},
		{8<<20 - 1, false, "8388607 of the 8388608 bytes"},
		{HeaderSize, false, "8192 of the"},
		{8<<20 + 4096, true, "4096 more"},
	} {
		ok, note := h.Verdict(tc.size)
		if ok != tc.ok || !strings.Contains(note, tc.note) || (tc.note == "") != (note == "") {
			t.Errorf("size %d: %v %q, want %v %q", tc.size, ok, note, tc.ok, tc.note)
		}
	}
	h.RequiredDumpSpace = 12
	if ok, _ := h.Verdict(12); ok {
		t.Fatal("a header declaring less than itself was accepted")
	}
}

func TestReadHeaderShortFile(t *testing.T) {
	if _, err := ReadHeader(bytes.NewReader([]byte("PAGEDU64"))); !errors.Is(err, ErrShort) {
		t.Fatalf("err %v", err)
	}
	h, err := ReadHeader(bytes.NewReader(sample().Marshal()))
	if err != nil || h.Build != 26100 {
		t.Fatalf("%+v %v", h, err)
	}
}

// FuzzParse: Parse never panics, accepts only inputs with both signatures,
// and what it accepts round-trips through Marshal.
func FuzzParse(f *testing.F) {
	f.Add(sample().Marshal())
	f.Add([]byte("PAGEDU64"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, []byte("PAGEDU64")) {
			t.Fatalf("accepted %q", b[:8])
		}
		h2, err := Parse(h.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if h2.Build != h.Build || h2.RequiredDumpSpace != h.RequiredDumpSpace || h2.DumpType != h.DumpType || h2.BugCheckCode != h.BugCheckCode {
			t.Fatalf("round trip %+v -> %+v", h, h2)
		}
		_, _ = h.Verdict(int64(len(b)))
	})
}
