package host

import (
	"errors"
	"fmt"
	"strings"
)

// ParseBCDEntry parses the output of `bcdedit /enum {current}`: a localized
// header, a line of dashes, then one element per line as "name value", with
// list values continued on indented lines. It returns the elements of the
// first entry keyed by lower-cased element name. Element names (dtrace,
// nx, path...) are not localized; headers and some labels (identifier,
// "identificateur") are, and are never looked up by this package.
func ParseBCDEntry(out string) (map[string]string, error) {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	elems := map[string]string{}
	inEntry := false
	last := ""
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], " \t")
		if i+1 < len(lines) && isDashes(lines[i+1]) {
			if inEntry {
				break // the next entry starts; we asked for one
			}
			inEntry = true
			i++ // skip the dashes
			continue
		}
		if !inEntry || line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last != "" {
				elems[last] += "\n" + strings.TrimSpace(line)
			}
			continue
		}
		name, value, _ := strings.Cut(line, " ")
		last = strings.ToLower(name)
		elems[last] = strings.TrimSpace(value)
	}
	if !inEntry {
		msg := strings.TrimSpace(out)
		if msg == "" {
			msg = "no output"
		}
		return nil, fmt.Errorf("bcdedit output has no boot entry: %s", firstLine(msg))
	}
	return elems, nil
}

func isDashes(s string) bool {
	s = strings.TrimSpace(s)
	return len(s) >= 3 && strings.Trim(s, "-") == ""
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// bcdBools are the spellings bcdedit uses for boolean elements. Windows
// prints Yes/No in every locale we have seen; the localized words are
// accepted too, so a display language never makes the agent misread the
// flag. Anything else is an error, never a guess.
var bcdBools = map[string]bool{
	"yes": true, "no": false, "on": true, "off": false, "true": true, "false": false, "1": true, "0": false,
	"oui": true, "non": false, // fr
	"ja": true, "nein": false, // de
	"sí": true, "si": true, // es, it
	"sim": true, "não": false, // pt
}

// ErrBCDUnreadable is wrapped by errors about bcdedit output the agent cannot
// interpret.
var ErrBCDUnreadable = errors.New("unreadable bcdedit output")

// ParseBCDDtrace extracts the dtrace element from `bcdedit /enum {current}`.
func ParseBCDDtrace(out string) (BCDValue, error) {
	elems, err := ParseBCDEntry(out)
	if err != nil {
		return BCDValue{}, fmt.Errorf("%w: %v", ErrBCDUnreadable, err)
	}
	v, ok := elems["dtrace"]
	if !ok {
		return BCDValue{}, nil
	}
	on, ok := bcdBools[strings.ToLower(strings.TrimSpace(v))]
	if !ok {
		return BCDValue{}, fmt.Errorf("%w: dtrace element has value %q, want Yes or No", ErrBCDUnreadable, v)
	}
	return BCDValue{Present: true, On: on}, nil
}

// BCDSetArgs are the bcdedit arguments that set the dtrace element.
func BCDSetArgs(on bool) []string {
	v := "off"
	if on {
		v = "on"
	}
	return []string{"/set", "{current}", "dtrace", v}
}

// BCDDeleteArgs are the bcdedit arguments that remove the dtrace element.
func BCDDeleteArgs() []string { return []string{"/deletevalue", "{current}", "dtrace"} }

// BCDEnumArgs are the bcdedit arguments that list the current entry.
func BCDEnumArgs() []string { return []string{"/enum", "{current}"} }
