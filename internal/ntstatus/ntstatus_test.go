package ntstatus

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		in       string
		kind     Kind
		name     string
		value    uint32
		contains []uint32 // NTStatus must contain these
		exact    []uint32 // if set, NTStatus must equal this
	}{
		{in: "STATUS_INVALID_PARAMETER", kind: KindNTStatus, name: "STATUS_INVALID_PARAMETER", value: 0xC000000D, exact: []uint32{0xC000000D}},
		{in: "STATUS_ACCESS_DENIED", kind: KindNTStatus, name: "STATUS_ACCESS_DENIED", value: 0xC0000022, exact: []uint32{0xC0000022}},
		{in: "STATUS_OBJECT_NAME_NOT_FOUND", kind: KindNTStatus, name: "STATUS_OBJECT_NAME_NOT_FOUND", value: 0xC0000034, exact: []uint32{0xC0000034}},
		{in: "status_access_denied", kind: KindNTStatus, name: "STATUS_ACCESS_DENIED", value: 0xC0000022, exact: []uint32{0xC0000022}},
		{in: "STATUS_SUCCESS", kind: KindNTStatus, name: "STATUS_SUCCESS", value: 0, exact: []uint32{0}},
		{in: "RPC_NT_INVALID_BINDING", kind: KindNTStatus, name: "RPC_NT_INVALID_BINDING", value: 0xC0020003, exact: []uint32{0xC0020003}},
		{in: "E_INVALIDARG", kind: KindHRESULT, name: "E_INVALIDARG", value: 0x80070057, contains: []uint32{0xC000000D, 0xC00000EF}},
		{in: "e_invalidarg", kind: KindHRESULT, name: "E_INVALIDARG", value: 0x80070057, contains: []uint32{0xC000000D}},
		{in: "E_NOT_SUFFICIENT_BUFFER", kind: KindHRESULT, name: "E_NOT_SUFFICIENT_BUFFER", value: 0x8007007A, contains: []uint32{0xC0000023}}, // STATUS_BUFFER_TOO_SMALL
		{in: "E_ACCESSDENIED", kind: KindHRESULT, name: "E_ACCESSDENIED", value: 0x80070005, contains: []uint32{0xC0000022}},
		{in: "SEC_E_WRONG_CREDENTIAL_HANDLE", kind: KindHRESULT, name: "SEC_E_WRONG_CREDENTIAL_HANDLE", value: 0x80090336, contains: []uint32{0xC00002F2}},
		{
			in: "ERROR_INVALID_PARAMETER", kind: KindWin32, name: "ERROR_INVALID_PARAMETER", value: 87,
			// STATUS_INVALID_PARAMETER and STATUS_INVALID_PARAMETER_1..12.
			contains: []uint32{0xC000000D, 0xC00000EF, 0xC00000F0, 0xC00000F1, 0xC00000F2, 0xC00000F3, 0xC00000F4, 0xC00000F5, 0xC00000F6, 0xC00000F7, 0xC00000F8, 0xC00000F9, 0xC00000FA},
		},
		{in: "ERROR_ACCESS_DENIED", kind: KindWin32, name: "ERROR_ACCESS_DENIED", value: 5, contains: []uint32{0xC0000022}},
		{in: "ERROR_FILE_NOT_FOUND", kind: KindWin32, name: "ERROR_FILE_NOT_FOUND", value: 2, contains: []uint32{0xC0000034}},
		{in: "ERROR_SUCCESS", kind: KindWin32, name: "ERROR_SUCCESS", value: 0, exact: []uint32{0}},
		{in: "NO_ERROR", kind: KindWin32, name: "NO_ERROR", value: 0, exact: []uint32{0}},
		{in: "ERROR_MR_MID_NOT_FOUND", kind: KindWin32, name: "ERROR_MR_MID_NOT_FOUND", value: 317, exact: []uint32{0xC0000109}},
		{in: "0xc000000d", kind: KindHex, name: "STATUS_INVALID_PARAMETER", value: 0xC000000D, exact: []uint32{0xC000000D}},
		{in: "0XC0000022", kind: KindHex, name: "STATUS_ACCESS_DENIED", value: 0xC0000022, exact: []uint32{0xC0000022}},
		{in: "0", kind: KindHex, name: "STATUS_SUCCESS", value: 0, exact: []uint32{0}},
		{in: "0x0", kind: KindHex, name: "STATUS_SUCCESS", value: 0, exact: []uint32{0}},
		{in: "0x103", kind: KindHex, name: "STATUS_PENDING", value: 0x103, exact: []uint32{0x103}}, // also ERROR_NO_MORE_ITEMS's number
		{in: "259", kind: KindHex, name: "STATUS_PENDING", value: 0x103, exact: []uint32{0x103}},
		{in: "0xC0FE1234", kind: KindHex, value: 0xC0FE1234, exact: []uint32{0xC0FE1234}}, // unknown, error severity
		{in: "0x80000005", kind: KindHex, name: "STATUS_BUFFER_OVERFLOW", value: 0x80000005, exact: []uint32{0x80000005}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Resolve(tt.in)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.in, err)
			}
			if r.Input != tt.in || r.Kind != tt.kind || r.Name != tt.name || r.Value != tt.value {
				t.Errorf("Resolve(%q) = {Input %q Kind %q Name %q Value %#x}, want {%q %q %q %#x}",
					tt.in, r.Input, r.Kind, r.Name, r.Value, tt.in, tt.kind, tt.name, tt.value)
			}
			if r.Note == "" {
				t.Errorf("Resolve(%q): empty Note", tt.in)
			}
			checkSet(t, tt.in, r.NTStatus)
			for _, v := range tt.contains {
				if !slices.Contains(r.NTStatus, v) {
					t.Errorf("Resolve(%q).NTStatus = %#x, missing %#x (%s)", tt.in, r.NTStatus, v, Name(v))
				}
			}
			if tt.exact != nil && !slices.Equal(r.NTStatus, tt.exact) {
				t.Errorf("Resolve(%q).NTStatus = %#x, want %#x", tt.in, r.NTStatus, tt.exact)
			}
		})
	}
}

func checkSet(t *testing.T, in string, set []uint32) {
	t.Helper()
	if len(set) == 0 {
		t.Errorf("Resolve(%q): empty NTStatus on success", in)
	}
	for i := 1; i < len(set); i++ {
		if set[i-1] >= set[i] {
			t.Errorf("Resolve(%q).NTStatus = %#x, not sorted and deduplicated", in, set)
			break
		}
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string // substrings of the error
	}{
		{"0x57", []string{"Win32 error ERROR_INVALID_PARAMETER (87)", "not an NTSTATUS", "use the name ERROR_INVALID_PARAMETER", "STATUS_INVALID_PARAMETER"}},
		{"87", []string{"Win32 error ERROR_INVALID_PARAMETER (87)", "use the name ERROR_INVALID_PARAMETER"}},
		{"E_FAIL", []string{"E_FAIL (0x80004005)", "COM return value"}},
		{"S_OK", []string{"COM return value", "STATUS_SUCCESS"}},
		{"STATUS_NO_SUCH_THING", []string{"unknown status-code name"}},
		{"STATUS_INVALID_PARAMETERS", []string{"unknown", "did you mean STATUS_INVALID_PARAMETER?"}},
		{"INVALID_PARAMETER", []string{"did you mean STATUS_INVALID_PARAMETER or ERROR_INVALID_PARAMETER?"}},
		{"C000000D", []string{"0x prefix: 0xC000000D"}},
		{"1F", []string{"0x prefix"}},
		{`STATUS_X"; exit(0)`, []string{"not a status-code name or number"}},
		{"STATUS_X\nSTATUS_Y", []string{"not a status-code name or number"}},
		{"", []string{"not a status-code name or number"}},
		{"0x", []string{"not a status-code name or number"}},
		{"0x123456789", []string{"not a status-code name or number"}},
		{"-1", []string{"not a status-code name or number"}},
		{"WSAEINVAL", []string{"no NTSTATUS maps to", "cannot return it"}},
		{"0x80070057", []string{"HRESULT E_INVALIDARG", "use the name E_INVALIDARG"}},
		{"0x8007ABCD", []string{"HRESULT_FROM_WIN32"}},
		{"0xD000000D", []string{"FACILITY_NT_BIT", "0xC000000D STATUS_INVALID_PARAMETER"}},
		{"0x4242", []string{"not a known NTSTATUS"}},
		{"0x00012345", []string{"success severity"}},
		{strings.Repeat("A", 129), []string{"not a status-code name or number"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Resolve(tt.in)
			if err == nil {
				t.Fatalf("Resolve(%q) = %+v, want an error", tt.in, r)
			}
			var e *Error
			if !errors.As(err, &e) || e.Input != tt.in {
				t.Errorf("Resolve(%q): error %T %v is not an *Error for the input", tt.in, err, err)
			}
			checkMessage(t, tt.in, err.Error())
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Resolve(%q) error %q does not contain %q", tt.in, err, w)
				}
			}
		})
	}
}

// checkMessage checks that an error message is one line starting with the
// quoted input.
func checkMessage(t *testing.T, in, msg string) {
	t.Helper()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("Resolve(%q) error is not one line: %q", in, msg)
	}
	q := quote(in)
	if strings.HasSuffix(q, "...") {
		q = q[:len(q)-4] // without the closing quote and dots
	}
	if !strings.HasPrefix(msg, q) {
		t.Errorf("Resolve(%q) error %q does not start with the quoted input", in, msg)
	}
}

func TestName(t *testing.T) {
	for v, want := range map[uint32]string{
		0xC000000D: "STATUS_INVALID_PARAMETER",
		0xC0000022: "STATUS_ACCESS_DENIED",
		0:          "STATUS_SUCCESS", // not STATUS_WAIT_0
		0x80:       "STATUS_ABANDONED",
		0xC0020003: "RPC_NT_INVALID_BINDING",
		0x57:       "",
		0xDEADBEEF: "",
	} {
		if got := Name(v); got != want {
			t.Errorf("Name(%#x) = %q, want %q", v, got, want)
		}
	}
}

func TestTables(t *testing.T) {
	if n := len(ntstatusTable); n < 1500 {
		t.Errorf("%d NTSTATUS names, want > 1500", n)
	}
	if n := len(win32Table); n < 2000 {
		t.Errorf("%d Win32 error names, want > 2000", n)
	}
	if n := len(hresultTable); n < 1000 {
		t.Errorf("%d HRESULT names, want > 1000", n)
	}
	if n := len(rtlMap); n < 1000 {
		t.Errorf("%d RtlNtStatusToDosError mappings, want > 1000", n)
	}
	if mappingHeader != HeaderSource {
		t.Errorf("the mapping was made for %q but the names are from %q: rerun gen/rtlmap.sh", mappingHeader, HeaderSource)
	}
	if !strings.Contains(MappingSource, "RtlNtStatusToDosError") {
		t.Errorf("MappingSource = %q", MappingSource)
	}
	for _, e := range win32Table {
		if e.value >= 0x10000 {
			t.Errorf("Win32 error %s = %#x, not below 0x10000", e.name, e.value)
		}
	}
	for i, m := range rtlMap {
		if i > 0 && rtlMap[i-1].ntstatus >= m.ntstatus {
			t.Errorf("rtlMap not sorted/unique at %#x", m.ntstatus)
		}
		if Name(m.ntstatus) == "" {
			t.Errorf("rtlMap maps %#x, not a known NTSTATUS", m.ntstatus)
		}
		if m.result == 317 && m.ntstatus != 0xC0000109 {
			t.Errorf("rtlMap keeps %s -> ERROR_MR_MID_NOT_FOUND", Name(m.ntstatus))
		}
		if m.result == m.ntstatus && m.ntstatus != 0 {
			t.Errorf("rtlMap keeps identity %s", Name(m.ntstatus))
		}
	}
}

// TestEveryName resolves every name of the tables: success must carry a
// sorted, non-empty set; failure must be a one-line *Error.
func TestEveryName(t *testing.T) {
	for _, tab := range [][]entry{ntstatusTable, win32Table, hresultTable} {
		for _, e := range tab {
			r, err := Resolve(strings.ToLower(e.name))
			if err != nil {
				var re *Error
				if !errors.As(err, &re) {
					t.Errorf("Resolve(%q): %T", e.name, err)
				}
				checkMessage(t, strings.ToLower(e.name), err.Error())
				continue
			}
			if r.Name != e.name || r.Value != e.value {
				t.Errorf("Resolve(%q) = %s %#x, want %s %#x", e.name, r.Name, r.Value, e.name, e.value)
			}
			checkSet(t, e.name, r.NTStatus)
		}
	}
	for _, e := range ntstatusTable {
		if _, err := Resolve(e.name); err != nil {
			t.Errorf("NTSTATUS name %s: %v", e.name, err)
		}
	}
}

func TestValues(t *testing.T) {
	vs := Values()
	if len(vs) < 1500 || !slices.IsSorted(vs) || vs[0] != 0 {
		t.Errorf("Values(): %d values, sorted %v, first %#x", len(vs), slices.IsSorted(vs), vs[0])
	}
	vs[0] = 1 // a copy
	if Values()[0] != 0 {
		t.Error("Values() shares its slice")
	}
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{"STATUS_INVALID_PARAMETER", "E_INVALIDARG", "ERROR_INVALID_PARAMETER", "0xC000000D", "0x57", "87", "E_FAIL", "statuz_acess_denied", `STATUS_X"; exit(0)`, "0xD000000D", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Resolve(s)
		if err != nil {
			checkMessage(t, s, err.Error())
			return
		}
		if len(r.NTStatus) == 0 {
			t.Fatalf("Resolve(%q) succeeded with no NTSTATUS", s)
		}
		if !slices.IsSorted(r.NTStatus) || len(slices.Compact(slices.Clone(r.NTStatus))) != len(r.NTStatus) {
			t.Fatalf("Resolve(%q).NTStatus = %#x: not sorted and deduplicated", s, r.NTStatus)
		}
		if r.Input != s {
			t.Fatalf("Resolve(%q).Input = %q", s, r.Input)
		}
	})
}
