// Package kdump reads the header of a 64-bit Windows kernel memory dump
// (the DUMP_HEADER64 that starts every .dmp file Windows writes for a
// crash or a live kernel dump), so that the agent can tell a complete dump
// from one cut short.
//
// Layout: the 0x2000-byte header of a 64-bit dump, as the debugger and
// the public parsers read it. Offsets here follow rizin's
// librz/bin/format/dmp/dmp_specs.h (struct dmp64_header:
// https://github.com/rizinorg/rizin/blob/dev/librz/bin/format/dmp/dmp_specs.h)
// and volatility's crash dump layer, which agree: Signature "PAGE" at 0,
// ValidDump "DU64" at 4, MajorVersion 0x08, MinorVersion (the OS build
// number) 0x0c, MachineImageType 0x30, NumberProcessors 0x34,
// BugCheckCode 0x38, BugCheckParameter1..4 0x40..0x58, DumpType 0xf98,
// RequiredDumpSpace 0xfa0, SystemTime 0xfa8, Comment 0xfb0 (128 bytes).
// RequiredDumpSpace is the size of the whole dump file as Windows
// declares it in the header it writes first.
package kdump

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// HeaderSize is the size of a 64-bit dump header; the first memory page of
// the dump follows it.
const HeaderSize = 0x2000

// Field offsets in DUMP_HEADER64.
const (
	offSignature      = 0x000
	offValidDump      = 0x004
	offMajorVersion   = 0x008
	offMinorVersion   = 0x00c
	offMachineType    = 0x030
	offNumberProcs    = 0x034
	offBugCheckCode   = 0x038
	offBugCheckParam1 = 0x040
	offDumpType       = 0xf98
	offRequiredSpace  = 0xfa0
	offSystemTime     = 0xfa8
	offComment        = 0xfb0
	commentLen        = 128
	// minLen is how much of the header Parse needs: up to the end of the
	// comment. The rest of the 0x2000 bytes is reserved.
	minLen = offComment + commentLen
)

// Signatures of a 64-bit dump.
const (
	Signature = "PAGE"
	ValidDump = "DU64"
)

// BugCheckManuallyInitiated is MANUALLY_INITIATED_CRASH (0xE2), the bug check
// code a live dump that dtrace's lkd() asked for carries.
const BugCheckManuallyInitiated = 0xE2

// MachineAMD64 is IMAGE_FILE_MACHINE_AMD64.
const MachineAMD64 = 0x8664

// DumpType is DUMP_HEADER64.DumpType.
type DumpType uint32

// Dump types (DUMP_TYPE in the Windows SDK; rizin's DMP_DUMPTYPE_*).
const (
	DumpTypeUnknown      DumpType = 0
	DumpTypeFull         DumpType = 1
	DumpTypeSummary      DumpType = 2
	DumpTypeHeader       DumpType = 3
	DumpTypeTriage       DumpType = 4
	DumpTypeBitmapFull   DumpType = 5
	DumpTypeBitmapKernel DumpType = 6
	DumpTypeAutomatic    DumpType = 7
)

var dumpTypeNames = map[DumpType]string{
	DumpTypeUnknown: "unknown", DumpTypeFull: "full", DumpTypeSummary: "summary",
	DumpTypeHeader: "header", DumpTypeTriage: "triage", DumpTypeBitmapFull: "bitmap-full",
	DumpTypeBitmapKernel: "bitmap-kernel", DumpTypeAutomatic: "automatic",
}

// String names the dump type, e.g. "full" or "triage"; an unknown value
// reads "type-N".
func (t DumpType) String() string {
	if s, ok := dumpTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type-%d", uint32(t))
}

// Header is what the agent reads from a dump's header.
type Header struct {
	MajorVersion uint32 // 0x0f for a free (retail) build
	// Build is MinorVersion: the OS build number, e.g. 26100.
	Build            uint32
	MachineType      uint32
	NumberProcessors uint32
	BugCheckCode     uint32
	BugCheckParams   [4]uint64
	DumpType         DumpType
	// RequiredDumpSpace is the size of the dump file the header declares.
	RequiredDumpSpace uint64
	SystemTime        time.Time // zero when the header has none
	Comment           string    // printable text only
}

// Errors of Parse, wrapped with the detail.
var (
	ErrShort     = errors.New("dump header: shorter than a 64-bit dump header")
	ErrSignature = errors.New("dump header: not a 64-bit kernel dump (signature)")
)

// Parse reads a DUMP_HEADER64 from the start of a dump file. b may be the
// whole file or just its first HeaderSize bytes.
func Parse(b []byte) (Header, error) {
	if len(b) < minLen {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if sig := string(b[offSignature : offSignature+4]); sig != Signature || string(b[offValidDump:offValidDump+4]) != ValidDump {
		return Header{}, fmt.Errorf("%w: starts with %q, want %q", ErrSignature, printable(b[:8]), Signature+ValidDump)
	}
	le := binary.LittleEndian
	h := Header{
		MajorVersion:      le.Uint32(b[offMajorVersion:]),
		Build:             le.Uint32(b[offMinorVersion:]),
		MachineType:       le.Uint32(b[offMachineType:]),
		NumberProcessors:  le.Uint32(b[offNumberProcs:]),
		BugCheckCode:      le.Uint32(b[offBugCheckCode:]),
		DumpType:          DumpType(le.Uint32(b[offDumpType:])),
		RequiredDumpSpace: le.Uint64(b[offRequiredSpace:]),
	}
	for i := range h.BugCheckParams {
		h.BugCheckParams[i] = le.Uint64(b[offBugCheckParam1+8*i:])
	}
	if ft := le.Uint64(b[offSystemTime:]); ft != 0 {
		h.SystemTime = filetime(ft)
	}
	c := b[offComment : offComment+commentLen]
	if i := bytes.IndexByte(c, 0); i >= 0 {
		c = c[:i]
	}
	h.Comment = printable(c)
	return h, nil
}

// ReadHeader reads and parses the header at the start of r.
func ReadHeader(r io.ReaderAt) (Header, error) {
	buf := make([]byte, minLen)
	n, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Header{}, err
	}
	return Parse(buf[:n])
}

// Verdict says whether a dump file of size bytes is complete according to
// its header: ok when the file is exactly as long as declared. A file
// shorter than declared is truncated (power loss, a write cut short); one
// longer than declared is accepted with a note, since nothing documents
// what Windows may append.
func (h Header) Verdict(size int64) (ok bool, note string) {
	switch declared := h.RequiredDumpSpace; {
	case declared < HeaderSize:
		return false, fmt.Sprintf("the header declares %d bytes, less than the header itself", declared)
	case size < 0 || uint64(size) < declared:
		return false, fmt.Sprintf("the file has %d of the %d bytes its header declares", size, declared)
	case uint64(size) > declared:
		return true, fmt.Sprintf("the file has %d bytes, %d more than its header declares", size, uint64(size)-declared)
	}
	return true, ""
}

// filetime converts a Windows FILETIME (100 ns since 1601) to a time.
func filetime(ft uint64) time.Time {
	const epochDiff = 116444736000000000 // 1601 to 1970 in 100 ns
	if ft < epochDiff {
		return time.Time{}
	}
	d := ft - epochDiff
	return time.Unix(int64(d/1e7), int64(d%1e7)*100).UTC()
}

// printable keeps printable ASCII and valid UTF-8 letters, replacing the
// rest, so a header's text is safe to log and display.
func printable(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			sb.WriteByte('?')
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// Marshal renders h as the HeaderSize bytes that start a dump file: the
// inverse of Parse, for tests and tools.
func (h Header) Marshal() []byte {
	b := make([]byte, HeaderSize)
	le := binary.LittleEndian
	copy(b[offSignature:], Signature)
	copy(b[offValidDump:], ValidDump)
	le.PutUint32(b[offMajorVersion:], h.MajorVersion)
	le.PutUint32(b[offMinorVersion:], h.Build)
	le.PutUint32(b[offMachineType:], h.MachineType)
	le.PutUint32(b[offNumberProcs:], h.NumberProcessors)
	le.PutUint32(b[offBugCheckCode:], h.BugCheckCode)
	for i, p := range h.BugCheckParams {
		le.PutUint64(b[offBugCheckParam1+8*i:], p)
	}
	le.PutUint32(b[offDumpType:], uint32(h.DumpType))
	le.PutUint64(b[offRequiredSpace:], h.RequiredDumpSpace)
	if !h.SystemTime.IsZero() {
		le.PutUint64(b[offSystemTime:], uint64(h.SystemTime.UnixNano()/100+116444736000000000))
	}
	copy(b[offComment:offComment+commentLen-1], h.Comment)
	return b
}
