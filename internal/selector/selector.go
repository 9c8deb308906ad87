// Package selector parses Kubernetes-style label selectors and validates
// label keys and values. Parsing is delegated to k8s.io/apimachinery so the
// syntax is exactly the one SREs know from kubectl.
package selector

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Built-in labels present on every agent. They are derived from the agent's
// inventory and cannot be set by hand.
const (
	LabelHostname = "hostname"
	LabelOSBuild  = "os.build"
)

// IsBuiltin reports whether key is a built-in label.
func IsBuiltin(key string) bool { return key == LabelHostname || key == LabelOSBuild }

// Selector matches label sets.
type Selector struct{ s labels.Selector }

// Parse parses a selector such as "site=ams,role in (vdi,kiosk),!canary".
// The empty string selects everything.
func Parse(expr string) (Selector, error) {
	s, err := labels.Parse(expr)
	if err != nil {
		return Selector{}, fmt.Errorf("selector %q: %w", expr, err)
	}
	return Selector{s: s}, nil
}

// ErrEmpty is returned by ParseRequired for a selector that is empty or
// only blanks: it would select every agent.
var ErrEmpty = errors.New("required: an empty selector would select the whole fleet (the selector \"hostname\" matches every agent, on purpose)")

// ParseRequired is Parse for calls that act on machines (provisioning,
// captures, self-tests): a selector that is empty or only blanks, which
// Parse reads as "everything", is refused with ErrEmpty, so the whole fleet
// is never targeted by accident.
func ParseRequired(expr string) (Selector, error) {
	if strings.TrimSpace(expr) == "" {
		return Selector{}, ErrEmpty
	}
	return Parse(expr)
}

// Everything returns a selector that matches every label set.
func Everything() Selector { return Selector{s: labels.Everything()} }

// Matches reports whether the label set matches.
func (s Selector) Matches(set map[string]string) bool {
	if s.s == nil {
		return true
	}
	return s.s.Matches(labels.Set(set))
}

// String returns the canonical form of the selector.
func (s Selector) String() string {
	if s.s == nil {
		return ""
	}
	return s.s.String()
}

// ValidateKey checks a label key: an optional DNS-subdomain prefix and a
// slash, then a name of at most 63 characters of alphanumerics, '-', '_' and
// '.', starting and ending alphanumeric.
func ValidateKey(key string) error {
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return fmt.Errorf("label key %q: %s", key, strings.Join(errs, "; "))
	}
	return nil
}

// ValidateValue checks a label value: at most 63 characters of
// alphanumerics, '-', '_' and '.', starting and ending alphanumeric, or empty.
func ValidateValue(key, value string) error {
	if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
		return fmt.Errorf("label %q value %q: %s", key, value, strings.Join(errs, "; "))
	}
	return nil
}

// MaxUserLabels is the most user labels one set may hold (an agent's, a
// token's): with keys and values at their longest, an agent stays near
// 25 KB, so a page of a list holds dozens of them.
const MaxUserLabels = 64

// ValidateUserLabels validates labels a person sets: at most MaxUserLabels,
// every key and value must be valid and no key may be built in.
func ValidateUserLabels(set map[string]string) error {
	if len(set) > MaxUserLabels {
		return fmt.Errorf("%d labels: at most %d", len(set), MaxUserLabels)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return err
		}
		if IsBuiltin(k) {
			return fmt.Errorf("label key %q: built-in label, set from the agent's inventory", k)
		}
		if err := ValidateValue(k, set[k]); err != nil {
			return err
		}
	}
	return nil
}

// ParseAssignments parses "KEY=VALUE" items into labels to set and "KEY-"
// items into keys to remove, the way kubectl label does.
func ParseAssignments(args []string) (set map[string]string, remove []string, err error) {
	set = map[string]string{}
	for _, a := range args {
		switch {
		case strings.Contains(a, "="):
			k, v, _ := strings.Cut(a, "=")
			if err := ValidateKey(k); err != nil {
				return nil, nil, err
			}
			if err := ValidateValue(k, v); err != nil {
				return nil, nil, err
			}
			set[k] = v
		case strings.HasSuffix(a, "-"):
			k := strings.TrimSuffix(a, "-")
			if err := ValidateKey(k); err != nil {
				return nil, nil, err
			}
			remove = append(remove, k)
		default:
			return nil, nil, fmt.Errorf("label %q: want KEY=VALUE to set or KEY- to remove", a)
		}
	}
	return set, remove, nil
}

// ParseSet parses "K=V,K2=V2" into a validated label set.
func ParseSet(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want KEY=VALUE", item)
		}
		if err := ValidateKey(k); err != nil {
			return nil, err
		}
		if err := ValidateValue(k, v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}
