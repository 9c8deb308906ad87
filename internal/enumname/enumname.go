// Package enumname is the one way livedump turns a protobuf enum value into
// the short name that operators read, stores keep and JSON carries
// ("reboot-required", "hash_only", "stacks"), and such a name back into the
// value. The short name is the value's name in the .proto file without the
// enum's prefix, lower-cased, its words joined by a separator the caller
// chooses: PROVISION_STATE_REBOOT_REQUIRED is "reboot-required" with "-"
// and "reboot_required" with "_".
//
// The prefix is read from the enum's descriptor: the name of its zero value
// less "UNSPECIFIED" (every livedump enum starts with <ENUM>_UNSPECIFIED),
// or else the enum's own name in upper snake case.
package enumname

import (
	"strconv"
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

// Name is the short name of e with its words joined by sep:
// "unspecified" for the zero value of a livedump enum, and the number in
// decimal for a number the enum does not name (as e.String() has it).
// Callers that show something else for those ask Valid first.
func Name[E Enum](e E, sep string) string { return Of(e, sep) }

// Of is Name for an enum value whose type is not known statically (a
// template's argument, say).
func Of(e protoreflect.Enum, sep string) string {
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return strconv.Itoa(int(e.Number()))
	}
	return short(e.Descriptor(), string(v.Name()), sep)
}

// Valid reports whether e is a value the enum names other than its zero
// value: one a sender means.
func Valid[E Enum](e E) bool {
	return e != 0 && e.Descriptor().Values().ByNumber(protoreflect.EnumNumber(e)) != nil
}

// Parse returns the value whose Name with sep is name. ok is false for any
// other name, for the zero value's name (it is never a choice: a name that
// is not given is ""), and for a number (names are compared exactly:
// "Done" is not "done").
func Parse[E Enum](name, sep string) (e E, ok bool) {
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
