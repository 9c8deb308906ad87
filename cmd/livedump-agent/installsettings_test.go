package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/livedump/livedump/internal/config"
)

// loadAgentConfig reads a config document the way the agent does.
func loadAgentConfig(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := config.Load(config.Options{File: path, Defaults: defaults()})
	if err != nil {
		t.Fatalf("the agent cannot read the merged config: %v\n%s", err, doc)
	}
	return map[string]any{
		"controllers": v.GetStringSlice("controllers"),
		"ca_file":     v.GetString("ca_file"),
		"token":       v.GetString("token"),
		"labels":      v.GetString("labels"),
		"log_level":   v.GetString("log_level"),

		"metrics_listen": v.GetString("metrics_listen"),
	}
}

func TestMergeConfigIntoNothing(t *testing.T) {
	s := installSettings{
		Controllers: "ctl1.example:7443, ctl2.example:7443",
		CAFile:      `C:\ProgramData\livedump\ca.crt`,
		Token:       "ldt_abc.def",
		Labels:      "role=vdi,site=ams",

		MetricsListen: "0.0.0.0:9465",
	}
	doc, set, err := mergeConfig(nil, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(set, []string{"controllers", "ca_file", "token", "labels", "metrics_listen"}) {
		t.Errorf("set %v", set)
	}
	if !strings.HasPrefix(string(doc), "# livedump agent configuration") {
		t.Errorf("no header comment:\n%s", doc)
	}
	got := loadAgentConfig(t, doc)
	if c := got["controllers"].([]string); !slices.Equal(c, []string{"ctl1.example:7443", "ctl2.example:7443"}) {
		t.Errorf("controllers %q", c)
	}
	for k, want := range map[string]string{"ca_file": s.CAFile, "token": s.Token, "labels": s.Labels, "metrics_listen": s.MetricsListen} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
}

func TestMergeConfigKeepsOtherKeysAndComments(t *testing.T) {
	old := []byte(`# site config, edited by hand
controllers:
  - old.example:7443 # the old one
token: "ldt_old"
log_level: debug # keep
`)
	doc, set, err := mergeConfig(old, installSettings{Controllers: "new.example:7443"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(set, []string{"controllers"}) {
		t.Errorf("set %v", set)
	}
	for _, keep := range []string{"# site config, edited by hand", "# keep"} {
		if !strings.Contains(string(doc), keep) {
			t.Errorf("lost %q:\n%s", keep, doc)
		}
	}
	got := loadAgentConfig(t, doc)
	if c := got["controllers"].([]string); !slices.Equal(c, []string{"new.example:7443"}) {
		t.Errorf("controllers %q", c)
	}
	if got["token"] != "ldt_old" || got["log_level"] != "debug" {
		t.Errorf("other keys changed: %v", got)
	}

	// Nothing given (an upgrade without properties): same keys.
	again, set, err := mergeConfig(doc, installSettings{})
	if err != nil || len(set) != 0 {
		t.Fatalf("empty settings: set %v, err %v", set, err)
	}
	if string(again) != string(doc) {
		t.Errorf("empty settings changed the document:\n%s\nto\n%s", doc, again)
	}
}

func TestMergeConfigRefusesBadProperties(t *testing.T) {
	for _, tc := range []struct {
		s    installSettings
		want string
	}{
		{installSettings{Controllers: "ctl.example"}, "CONTROLLER"},
		{installSettings{Controllers: "ctl.example:0"}, "CONTROLLER"},
		{installSettings{Token: "two words"}, "ENROLL_TOKEN"},
		{installSettings{Labels: "role=a b"}, "LABELS"},
		{installSettings{MetricsListen: "9465"}, "METRICS_LISTEN"},
	} {
		if _, _, err := mergeConfig(nil, tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want one naming %s", tc.s, err, tc.want)
		}
	}
	if _, _, err := mergeConfig([]byte("- a\n- b\n"), installSettings{Token: "x"}); err == nil {
		t.Error("a config that is a list was accepted")
	}
}

func TestMergeConfigInstallerSHA256(t *testing.T) {
	a, b := strings.Repeat("AB", 32), strings.Repeat("0f", 32)
	doc, set, err := mergeConfig(nil, installSettings{InstallerSHA256: a + ", " + b})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(set, []string{"installer_sha256"}) {
		t.Errorf("set %v", set)
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := config.Load(config.Options{File: path, Defaults: defaults()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := installerPolicy(v)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{strings.ToLower(a), b}; !slices.Equal(p.SHA256, want) {
		t.Errorf("installer_sha256 = %q, want %q", p.SHA256, want)
	}
	if !slices.Equal(p.Publishers, []string{"Microsoft Corporation"}) {
		t.Errorf("installer_publishers = %q, want the default", p.Publishers)
	}

	for _, bad := range []string{"abc", strings.Repeat("ab", 32) + ",../x", ","} {
		if _, _, err := mergeConfig(nil, installSettings{InstallerSHA256: bad}); err == nil || !strings.Contains(err.Error(), "INSTALLER_SHA256") {
			t.Errorf("INSTALLER_SHA256=%q: err %v, want one naming the property", bad, err)
		}
	}
}

func TestInstallerPolicyConfig(t *testing.T) {
	for _, tc := range []struct {
		doc        string
		publishers []string
		err        string
	}{
		{"installer_publishers: []\n", []string{}, ""},
		{"installer_publishers: [\"Contoso Ltd\"]\n", []string{"Contoso Ltd"}, ""},
		{"installer_sha256: [\"nothex\"]\n", nil, "installer_sha256"},
	} {
		path := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		v, err := config.Load(config.Options{File: path, Defaults: defaults()})
		if err != nil {
			t.Fatal(err)
		}
		p, err := installerPolicy(v)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %s", tc.doc, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(p.Publishers, tc.publishers) || p.Publishers == nil {
			t.Errorf("%q: publishers %#v, %v; want %q", tc.doc, p.Publishers, err, tc.publishers)
		}
	}
}

func TestInstallerPolicyFromEnvironment(t *testing.T) {
	t.Setenv("LIVEDUMP_AGENT_INSTALLER_PUBLISHERS", "Microsoft Corporation, Contoso Ltd")
	t.Setenv("LIVEDUMP_AGENT_INSTALLER_SHA256", strings.Repeat("AB", 32))
	v, err := config.Load(config.Options{EnvPrefix: "LIVEDUMP_AGENT", Defaults: defaults()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := installerPolicy(v)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Publishers, []string{"Microsoft Corporation", "Contoso Ltd"}) || !slices.Equal(p.SHA256, []string{strings.Repeat("ab", 32)}) {
		t.Fatalf("from the environment: %q %q", p.Publishers, p.SHA256)
	}
}
