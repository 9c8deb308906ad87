package deploy

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// runbookBase is where every alert's runbook_url points: a section of
// docs/troubleshooting.md named after the alert.
const runbookBase = "https://github.com/livedump/livedump/blob/main/docs/troubleshooting.md#"

// TestEveryAlertHasARunbook: each alert in rules.yml carries a runbook_url
// annotation to its section of docs/troubleshooting.md, that section
// exists (GitHub's anchor of its heading) and says what the alert means,
// how to check and what to do; and the page has no section for an alert
// that no longer exists.
func TestEveryAlertHasARunbook(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(root, "deploy", "prometheus", "rules.yml")), &rules); err != nil {
		t.Fatal(err)
	}
	sections := troubleshootingSections(t)
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[strings.ToLower(r.Alert)] = true
			url := r.Annotations["runbook_url"]
			if url == "" {
				t.Errorf("alert %s: no runbook_url annotation (want %s%s)", r.Alert, runbookBase, strings.ToLower(r.Alert))
				continue
			}
			anchor, ok := strings.CutPrefix(url, runbookBase)
			if !ok {
				t.Errorf("alert %s: runbook_url %q does not start with %s", r.Alert, url, runbookBase)
				continue
			}
			if anchor != strings.ToLower(r.Alert) {
				t.Errorf("alert %s: runbook_url anchor #%s, want #%s (the section named after the alert)", r.Alert, anchor, strings.ToLower(r.Alert))
			}
			body, ok := sections[anchor]
			if !ok {
				t.Errorf("alert %s: docs/troubleshooting.md has no section #%s (a heading \"## %s\")", r.Alert, anchor, r.Alert)
				continue
			}
			for _, part := range []string{"**What it means.**", "**Check.**", "**What to do.**"} {
				if !strings.Contains(body, part) {
					t.Errorf("docs/troubleshooting.md#%s: no %s paragraph", anchor, part)
				}
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alert in rules.yml")
	}
	for anchor := range sections {
		if !alerts[anchor] {
			t.Errorf("docs/troubleshooting.md#%s: a section for no alert of rules.yml", anchor)
		}
	}
}

var h2 = regexp.MustCompile(`(?m)^## (.+)$`)

// troubleshootingSections maps the GitHub anchor of each "## " heading of
// docs/troubleshooting.md to the text under it.
func troubleshootingSections(t *testing.T) map[string]string {
	t.Helper()
	doc := string(readFile(t, filepath.Join(root, "docs", "troubleshooting.md")))
	out := map[string]string{}
	idx := h2.FindAllStringSubmatchIndex(doc, -1)
	for i, m := range idx {
		end := len(doc)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		out[githubAnchor(doc[m[2]:m[3]])] = doc[m[1]:end]
	}
	return out
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces to
// '-', punctuation other than '-' and '_' dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}
