package probe

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

// dtrace.exe prints execname and the module and symbol names of stacks as
// bytes in the ANSI code page of the machine (the kernel's ImageFileName is
// an ANSI string; see WINDOWS-NOTES). Protobuf strings must be UTF-8: a
// record with one byte that is not would fail to marshal and be lost. So
// every line is decoded from the code page before it is parsed, and every
// string of a record is valid UTF-8.

// DefaultCodePage is the ANSI code page assumed where the system's cannot
// be read (every OS but Windows): Windows-1252, the ANSI code page of
// English and Western European Windows.
const DefaultCodePage = 1252

// CodePage returns the decoder of a Windows code page identifier, as
// GetACP returns it
// (https://learn.microsoft.com/en-us/windows/win32/api/winnls/nf-winnls-getacp):
// the single-byte ANSI code pages 874 and 1250 to 1258, the double-byte
// ones 932 (Shift JIS), 936 (GBK), 949 (Korean) and 950 (Big5), and 65001
// (UTF-8, the "Beta: use Unicode UTF-8" setting).
func CodePage(cp uint32) (encoding.Encoding, error) {
	switch cp {
	case 874:
		return charmap.Windows874, nil
	case 1250:
		return charmap.Windows1250, nil
	case 1251:
		return charmap.Windows1251, nil
	case 1252:
		return charmap.Windows1252, nil
	case 1253:
		return charmap.Windows1253, nil
	case 1254:
		return charmap.Windows1254, nil
	case 1255:
		return charmap.Windows1255, nil
	case 1256:
		return charmap.Windows1256, nil
	case 1257:
		return charmap.Windows1257, nil
	case 1258:
		return charmap.Windows1258, nil
	case 932:
		return japanese.ShiftJIS, nil
	case 936:
		return simplifiedchinese.GBK, nil
	case 949:
		return korean.EUCKR, nil
	case 950:
		return traditionalchinese.Big5, nil
	case 65001:
		return unicode.UTF8, nil
	}
	return nil, fmt.Errorf("code page %d is not an ANSI code page this agent decodes", cp)
}

var (
	defaultOnce sync.Once
	defaultEnc  encoding.Encoding
)

// SystemEncoding is the decoder of this machine's ANSI code page: GetACP on
// Windows (Windows-1252 if it names one CodePage does not know),
// DefaultCodePage elsewhere.
func SystemEncoding() encoding.Encoding {
	defaultOnce.Do(func() {
		enc, err := CodePage(systemCodePage())
		if err != nil {
			enc = charmap.Windows1252
		}
		defaultEnc = enc
	})
	return defaultEnc
}

// decode turns a line of dtrace's output into UTF-8. ASCII, which is all
// the framing and most names are, is returned as is. Whatever the decoder
// cannot map becomes U+FFFD; the result is always valid UTF-8.
func decode(enc encoding.Encoding, line string) string {
	ascii := true
	for i := 0; i < len(line); i++ {
		if line[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return line
	}
	if s, err := enc.NewDecoder().String(line); err == nil {
		line = s
	}
	return strings.ToValidUTF8(line, "\uFFFD")
}

// Bounds of what a record carries, so that the controller stores every
// record the parser emits. They match controller/capture's admission
// limits (MaxEventString, MaxEventBytes): a longer string is truncated
// here, marked, rather than have the whole event refused there.
const (
	// MaxString is the most bytes of one string of a record: the process,
	// the probe, and a frame's module or function.
	MaxString = 512
	// MaxRecordText is the most bytes of all the strings of one record
	// together; with the framing of the event it stays under the
	// controller's 64 KiB per event.
	MaxRecordText = 48 << 10
	// TruncatedMark ends a string that was cut to fit.
	TruncatedMark = "…"
)

// cut returns s if it fits in n bytes, else its longest prefix that fits
// with TruncatedMark after it, cut at a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len(TruncatedMark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:max(i, 0)] + TruncatedMark
}

// limit makes the strings of rec fit MaxString each and MaxRecordText
// together, shortening the frames' names further (all to the same length)
// only when a record has many long names.
func limit(rec *Record) {
	rec.Process = cut(rec.Process, MaxString)
	rec.Probe = cut(rec.Probe, MaxString)
	fit := func(n int) int {
		total := len(rec.Process) + len(rec.Probe)
		for _, fs := range [][]Frame{rec.User, rec.Kernel} {
			for i := range fs {
				fs[i].Module = cut(fs[i].Module, n)
				fs[i].Function = cut(fs[i].Function, n)
				total += len(fs[i].Module) + len(fs[i].Function)
			}
		}
		return total
	}
	n := MaxString
	for fit(n) > MaxRecordText && n > 32 {
		n = n * 3 / 4 // 200 frames of two 32-byte names fit with room to spare
	}
}
