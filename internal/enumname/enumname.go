// Package enumname is the one way livedump turns a protobuf enum value into
// the short name that operators read, stores keep and JSON carries
// ("reboot-required", "hash_only", "stacks"), and such a name back into the
// value. The name is the value's name in the .proto file without the enum's
// prefix, lower-cased, its words joined by a separator the caller chooses:
// PROVISION_STATE_REBOOT_REQUIRED is "reboot-required" with "-" and
// "reboot_required" with "_".
//
// The prefix is read from the enum's descriptor: the name of its zero value
// less "UNSPECIFIED" (every livedump enum starts with <ENUM>_UNSPECIFIED),
// or else the enum's own name in upper snake case. The zero value has no
// short name.
package enumname

import (
	"strings"
	"sync"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Enum is a generated protobuf enum type, e.g. livedumpv1.CaptureState.
type Enum interface {
	~int32
	protoreflect.Enum
}

// Name is the short name of e with its words joined by sep: "" for the
// zero value and for a number the enum does not name.
func Name[E Enum](e E, sep string) string {
	if e == 0 {
		return ""
	}
	v := e.Descriptor().Values().ByNumber(protoreflect.EnumNumber(e))
	if v == nil {
		return ""
	}
	return short(e.Descriptor(), string(v.Name()), sep)
}

// Parse returns the value whose Name with sep is name. ok is false for ""
// and for any name the enum does not have (names are compared exactly:
// "Done" is not "done").
func Parse[E Enum](name, sep string) (e E, ok bool) {
	if name == "" {
		return 0, false
	}
	values := e.Descriptor().Values()
	for i := range values.Len() {
		v := values.Get(i)
		if v.Number() != 0 && short(e.Descriptor(), string(v.Name()), sep) == name {
			return E(v.Number()), true
		}
	}
	return 0, false
}

// Names lists the short names of every value but the zero one, in the
// order of their numbers, e.g. for a usage text.
func Names[E Enum](sep string) []string {
	var e E
	values := e.Descriptor().Values()
	names := make([]string, 0, values.Len())
	for i := range values.Len() {
		if n := E(values.Get(i).Number()); n != 0 {
			names = append(names, Name(n, sep))
		}
	}
	return names
}

func short(d protoreflect.EnumDescriptor, name, sep string) string {
	name = strings.TrimPrefix(name, prefix(d))
	return strings.ReplaceAll(strings.ToLower(name), "_", sep)
}

var prefixes sync.Map // protoreflect.FullName -> string

// prefix is the part of the value names that names the enum:
// "CAPTURE_STATE_" for CaptureState.
func prefix(d protoreflect.EnumDescriptor) string {
	if p, ok := prefixes.Load(d.FullName()); ok {
		return p.(string)
	}
	var p string
	if zero := d.Values().ByNumber(0); zero != nil && strings.HasSuffix(string(zero.Name()), "_UNSPECIFIED") {
		p = strings.TrimSuffix(string(zero.Name()), "UNSPECIFIED")
	} else {
		p = upperSnake(string(d.Name())) + "_"
	}
	prefixes.Store(d.FullName(), p)
	return p
}

// upperSnake turns a Go-style name into the upper snake case of protobuf
// value names: "SelfTestStatus" is "SELF_TEST_STATUS".
func upperSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
