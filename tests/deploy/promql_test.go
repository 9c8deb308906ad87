// Package deploy checks the artefacts in deploy/ against the code: every
// metric the dashboards and alert rules use exists in the real registries,
// every alert has tests, and the sample controller configuration is one the
// controller accepts.
package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// selection is one vector selector in a PromQL expression: the metric name
// and the job its matchers name ("" when they name none, or a regexp).
type selection struct {
	metric string
	job    string
}

// aggregations and keywords are identifiers that are not metric names.
var (
	aggregations = []string{
		"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio",
	}
	groupings = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	keywords  = []string{"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2"}
)

var (
	jobMatcher  = regexp.MustCompile(`(?:^|[{,\s])job\s*=\s*"([^"]*)"`)
	nameMatcher = regexp.MustCompile(`__name__\s*=\s*"([^"]+)"`)
)

// selections lists the vector selectors of a PromQL expression. It is a
// scanner, not a parser (the Prometheus parser is not a dependency of this
// module): it skips strings, comments, ranges and subqueries, Grafana
// variables, numbers and durations, function and aggregation names,
// keywords and grouping label lists, and what remains is a metric name,
// optionally followed by its {matchers}. A malformed expression is not
// detected here; promtool and the live Prometheus in .ci/prometheus-scrape
// parse them for real.
func selections(expr string) ([]selection, error) {
	var out []selection
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	// closing returns the index just past the bracket matching s[i].
	closing := func(open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(s); j++ {
			switch c := s[j]; {
			case c == '"' || c == '\'' || c == '`':
				end := skipString(s, j)
				if end < 0 {
					return 0, fmt.Errorf("unterminated string in %q", expr)
				}
				j = end - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end := skipString(s, i)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			i = end
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '[':
			end, err := closing('[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			// A selector without a name: {__name__="x", ...}.
			end, err := closing('{', '}')
			if err != nil {
				return nil, err
			}
			if m := nameMatcher.FindStringSubmatch(s[i:end]); m != nil {
				out = append(out, selection{metric: m[1], job: job(s[i:end])})
			}
			i = end
		case c == '$':
			// Grafana variable: $name, ${name...} or $__name.
			i++
			if i < len(s) && s[i] == '{' {
				end, err := closing('{', '}')
				if err != nil {
					return nil, err
				}
				i = end
				continue
			}
			for i < len(s) && isIdent(s[i], false) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			// Number or duration: 0.95, 1e3, 0x1f, 5m, 1h30m.
			for i < len(s) && (isIdent(s[i], false) || s[i] == '.') {
				i++
			}
		case isIdent(c, true):
			start := i
			for i < len(s) && isIdent(s[i], false) {
				i++
			}
			word := s[start:i]
			lower := strings.ToLower(word)
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case slices.Contains(groupings, lower):
				if next == '(' {
					end, err := closing('(', ')')
					if err != nil {
						return nil, err
					}
					i = end
				}
			case next == '(', slices.Contains(aggregations, lower), slices.Contains(keywords, lower):
				// A function call, an aggregation (`sum by (x) (...)`), or
				// a keyword.
			default:
				sel := selection{metric: word}
				if next == '{' {
					end, err := closing('{', '}')
					if err != nil {
						return nil, err
					}
					sel.job = job(s[i:end])
					i = end
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out, nil
}

// job returns the value of an exact job="..." matcher in a {...} block.
func job(block string) string {
	if m := jobMatcher.FindStringSubmatch(block); m != nil {
		return m[1]
	}
	return ""
}

func isIdent(c byte, first bool) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
}

// skipString returns the index just past the string literal starting at
// s[i], or -1 if it does not end.
func skipString(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1
		}
	}
	return -1
}

func TestSelections(t *testing.T) {
	for _, tt := range []struct {
		expr string
		want []selection
	}{
		{`up{job="livedump-controller"} == 0`, []selection{{"up", "livedump-controller"}}},
		{`sum by (result) (increase(livedump_controller_dumps_total{job="livedump-controller"}[$__rate_interval]))`,
			[]selection{{"livedump_controller_dumps_total", "livedump-controller"}}},
		{`histogram_quantile(0.95, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{grpc_type="unary", job="x"}[5m])))`,
			[]selection{{"grpc_server_handling_seconds_bucket", "x"}}},
		{"delta(a{state=\"expired\"}[1h]) > 0\nand on (job, instance)\nincrease(b_total[1h]) == 0",
			[]selection{{"a", ""}, {"b_total", ""}}},
		{`(c > 0) - time() < 7 * 86400`, []selection{{"c", ""}}},
		{`count(d{instance=~"$instance"} == 3) or vector(0)`, []selection{{"d", ""}}},
		{`count_values("state", e) / 1e3 + f offset 5m`, []selection{{"e", ""}, {"f", ""}}},
		{`sum without (instance) (g) * on (job) group_left (version) h_info`, []selection{{"g", ""}, {"h_info", ""}}},
		{`max_over_time(rate(i_total[5m])[1h:1m]) > bool 1`, []selection{{"i_total", ""}}},
		{`label_replace(j, "dst", "$1", "src", "(.*)")`, []selection{{"j", ""}}},
		{`{__name__="k", job="y"} # a comment with l_total`, []selection{{"k", "y"}}},
		{`m{path="a}b", job=~"livedump-.*"}`, []selection{{"m", ""}}},
		{`topk(5, n:recorded:rate5m)`, []selection{{"n:recorded:rate5m", ""}}},
	} {
		got, err := selections(tt.expr)
		if err != nil {
			t.Errorf("selections(%q): %v", tt.expr, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("selections(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
	for _, bad := range []string{`a{job="x"`, `rate(a[5m)`, `a{job="x}`} {
		if _, err := selections(bad); err == nil {
			t.Errorf("selections(%q): no error", bad)
		}
	}
}
