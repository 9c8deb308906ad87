package main

import (
	"context"
	"io"
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

func TestMergeConfigAllowRawScripts(t *testing.T) {
	read := func(doc []byte) bool {
		t.Helper()
		path := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		v, err := config.Load(config.Options{File: path, Defaults: defaults()})
		if err != nil {
			t.Fatal(err)
		}
		on, err := boolSetting(v, "allow_raw_scripts")
		if err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		return on
	}
	// Not given: the default, off.
	doc, set, err := mergeConfig(nil, installSettings{Token: "ldt_x"})
	if err != nil || slices.Contains(set, "allow_raw_scripts") || read(doc) {
		t.Fatalf("without ALLOW_RAW_SCRIPTS: set %v, err %v, on %v", set, err, read(doc))
	}
	doc, set, err = mergeConfig(doc, installSettings{AllowRawScripts: "1"})
	if err != nil || !slices.Equal(set, []string{"allow_raw_scripts"}) || !read(doc) {
		t.Fatalf("ALLOW_RAW_SCRIPTS=1: set %v, err %v, on %v\n%s", set, err, read(doc), doc)
	}
	// An upgrade without the property keeps it; ALLOW_RAW_SCRIPTS=0 turns
	// it off again.
	again, _, err := mergeConfig(doc, installSettings{})
	if err != nil || string(again) != string(doc) {
		t.Fatalf("empty settings changed the document: %v\n%s", err, again)
	}
	doc, _, err = mergeConfig(doc, installSettings{AllowRawScripts: "0"})
	if err != nil || read(doc) {
		t.Fatalf("ALLOW_RAW_SCRIPTS=0: err %v, on %v\n%s", err, read(doc), doc)
	}
	if !strings.Contains(string(doc), "\nallow_raw_scripts: false\n") { // as .ci/wine-e2e looks for it
		t.Errorf("no line allow_raw_scripts: false:\n%s", doc)
	}
	if strings.Count(string(doc), "allow_raw_scripts") != 1 {
		t.Errorf("the key is not replaced in place:\n%s", doc)
	}
	for _, bad := range []string{"yes", "true", "2", " 1"} {
		if _, _, err := mergeConfig(nil, installSettings{AllowRawScripts: bad}); err == nil || !strings.Contains(err.Error(), "ALLOW_RAW_SCRIPTS") {
			t.Errorf("ALLOW_RAW_SCRIPTS=%q: err %v, want one naming the property", bad, err)
		}
	}
}

func TestAllowRawScriptsSetting(t *testing.T) {
	load := func(t *testing.T, doc string) (bool, error) {
		t.Helper()
		opts := config.Options{EnvPrefix: "LIVEDUMP_AGENT", Defaults: defaults()}
		if doc != "" {
			opts.File = filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(opts.File, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		v, err := config.Load(opts)
		if err != nil {
			t.Fatal(err)
		}
		return boolSetting(v, "allow_raw_scripts")
	}
	if on, err := load(t, ""); on || err != nil {
		t.Fatalf("default: %v, %v; want off", on, err)
	}
	for doc, want := range map[string]bool{"allow_raw_scripts: true\n": true, "allow_raw_scripts: false\n": false, "allow_raw_scripts: 1\n": true} {
		if on, err := load(t, doc); on != want || err != nil {
			t.Errorf("%q: %v, %v; want %v", doc, on, err, want)
		}
	}
	if _, err := load(t, "allow_raw_scripts: sometimes\n"); err == nil || !strings.Contains(err.Error(), "allow_raw_scripts") {
		t.Errorf("a value that is not a bool: %v, want an error naming the key", err)
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("LIVEDUMP_AGENT_ALLOW_RAW_SCRIPTS", "1")
		if on, err := load(t, ""); !on || err != nil {
			t.Fatalf("LIVEDUMP_AGENT_ALLOW_RAW_SCRIPTS=1: %v, %v", on, err)
		}
	})
	t.Run("flag", func(t *testing.T) {
		cmd := newRoot(context.Background(), io.Discard, io.Discard)
		if err := cmd.ParseFlags([]string{"--allow-raw-scripts"}); err != nil {
			t.Fatal(err)
		}
		v, err := config.Load(config.Options{EnvPrefix: "LIVEDUMP_AGENT", Flags: cmd.Flags(), FlagKeys: flagKeys, Defaults: defaults()})
		if err != nil {
			t.Fatal(err)
		}
		if on, err := boolSetting(v, "allow_raw_scripts"); !on || err != nil {
			t.Fatalf("--allow-raw-scripts: %v, %v", on, err)
		}
	})
}
