package host

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseRegQuery parses the output of `reg query KEY [/v NAME]`: a line naming
// the key, then one line per value indented four spaces, with name, type and
// data separated by four spaces. It returns the values of the first key
// listed, by name ("(Default)" for the default value). Tests use it to check
// what the agent wrote with the tool an administrator would use.
func ParseRegQuery(out string) (map[string]Value, error) {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	vals := map[string]Value{}
	inKey := false
	for _, line := range lines {
		switch {
		case strings.HasPrefix(line, "HKEY_"):
			if inKey {
				return vals, nil
			}
			inKey = true
		case inKey && strings.HasPrefix(line, "    "):
			parts := strings.SplitN(strings.TrimPrefix(line, "    "), "    ", 3)
			if len(parts) < 2 {
				return nil, fmt.Errorf("reg query: unreadable value line %q", line)
			}
			data := ""
			if len(parts) == 3 {
				data = parts[2]
			}
			v, err := parseRegData(parts[1], data)
			if err != nil {
				return nil, fmt.Errorf("reg query: value %q: %w", parts[0], err)
			}
			vals[parts[0]] = v
		case inKey && strings.TrimSpace(line) == "":
			// the blank line after the values, or before subkeys
		}
	}
	if !inKey {
		return nil, fmt.Errorf("reg query: no key in output: %s", firstLine(strings.TrimSpace(out)))
	}
	return vals, nil
}

func parseRegData(typ, data string) (Value, error) {
	switch typ {
	case "REG_SZ":
		return SZ(data), nil
	case "REG_EXPAND_SZ":
		return ExpandSZ(data), nil
	case "REG_MULTI_SZ":
		if data == "" {
			return MultiSZ(), nil
		}
		return MultiSZ(strings.Split(data, `\0`)...), nil
	case "REG_DWORD", "REG_QWORD":
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(data), "0x"), 16, 64)
		if err != nil {
			return Value{}, fmt.Errorf("%s data %q is not hex", typ, data)
		}
		if typ == "REG_DWORD" {
			if n > 0xFFFFFFFF {
				return Value{}, fmt.Errorf("REG_DWORD data %q overflows 32 bits", data)
			}
			return DWORD(uint32(n)), nil
		}
		return QWORD(n), nil
	}
	return Value{}, fmt.Errorf("unsupported type %s", typ)
}
