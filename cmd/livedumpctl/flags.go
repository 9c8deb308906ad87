package main

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// listValue is a repeatable, comma-separated list flag (--process a,b
// --process c). Unlike pflag's StringSlice, which reads its value as one
// CSV record and so silently drops everything after a newline, it refuses
// a control character anywhere in the value: a value is used whole or
// refused, never partly.
type listValue struct {
	values  *[]string
	changed bool
}

func newListValue(p *[]string) *listValue { return &listValue{values: p} }

func (l *listValue) Set(s string) error {
	if err := noControlChars(s); err != nil {
		return err
	}
	items := strings.Split(s, ",")
	if !l.changed {
		*l.values = items
		l.changed = true
		return nil
	}
	*l.values = append(*l.values, items...)
	return nil
}

func (l *listValue) String() string { return "[" + strings.Join(*l.values, ",") + "]" }

func (l *listValue) Type() string { return "strings" }

// noControlChars says which control character s holds, if any.
func noControlChars(s string) error {
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return fmt.Errorf("contains the control character %U: a value is used whole or refused", []rune(s[i:])[0])
	}
	return nil
}

// checkControlChars refuses, as a usage error, a control character in any
// flag value or argument given: such values reach D scripts, label
// selectors, paths and registry keys, where a newline would cut them short.
// (List flags refuse them as they are parsed: see listValue.)
func checkControlChars(cmd *cobra.Command, args []string) error {
	var bad error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if bad != nil {
			return
		}
		if err := noControlChars(f.Value.String()); err != nil {
			bad = usageErrorf(cmd, "--%s %q: %v", f.Name, f.Value.String(), err)
		}
	})
	if bad != nil {
		return bad
	}
	for _, a := range args {
		if err := noControlChars(a); err != nil {
			return usageErrorf(cmd, "argument %q: %v", a, err)
		}
	}
	return nil
}
