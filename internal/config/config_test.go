package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const testPrefix = "LDCFGTEST"

// testDefaults are the known keys of the test program.
func testDefaults() map[string]any {
	return map[string]any{
		"controller":  "default.example:7443",
		"tls.ca_file": "default-ca.crt",
		"timeout":     15 * time.Second,
		"data_dir":    "default-data",
	}
}

// testFlags mimics a program's flag set. The flags have defaults of their
// own that must never win over Defaults or the file.
func testFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String("controller", "flagdefault:1", "")
	fs.String("ca-file", "flagdefault-ca.crt", "")
	fs.Duration("timeout", time.Minute, "")
	fs.String("data-dir", "flagdefault-data", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name  string
		file  string // YAML; "" = no file
		env   map[string]string
		flags []string
		key   string
		want  string
	}{
		{name: "default only", key: "controller", want: "default.example:7443"},
		{name: "file beats default", file: "controller: file:1\n", key: "controller", want: "file:1"},
		{name: "env beats default", env: map[string]string{"LDCFGTEST_CONTROLLER": "env:1"}, key: "controller", want: "env:1"},
		{name: "env beats file", file: "controller: file:1\n", env: map[string]string{"LDCFGTEST_CONTROLLER": "env:1"}, key: "controller", want: "env:1"},
		{name: "flag beats env", env: map[string]string{"LDCFGTEST_CONTROLLER": "env:1"}, flags: []string{"--controller", "flag:1"}, key: "controller", want: "flag:1"},
		{name: "flag beats file", file: "controller: file:1\n", flags: []string{"--controller=flag:1"}, key: "controller", want: "flag:1"},
		{name: "flag beats env and file", file: "controller: file:1\n", env: map[string]string{"LDCFGTEST_CONTROLLER": "env:1"}, flags: []string{"--controller=flag:1"}, key: "controller", want: "flag:1"},
		{name: "flag beats default", flags: []string{"--controller=flag:1"}, key: "controller", want: "flag:1"},
		{name: "unset flag does not override file", file: "controller: file:1\n", flags: []string{"--timeout=1s"}, key: "controller", want: "file:1"},
		{name: "unset flag does not override env", env: map[string]string{"LDCFGTEST_CONTROLLER": "env:1"}, key: "controller", want: "env:1"},
		{name: "unset flag default loses to Defaults", key: "controller", want: "default.example:7443"},
		{name: "empty env is unset", file: "controller: file:1\n", env: map[string]string{"LDCFGTEST_CONTROLLER": ""}, key: "controller", want: "file:1"},
		{name: "nested key from file", file: "tls:\n  ca_file: /file/ca.crt\n", key: "tls.ca_file", want: "/file/ca.crt"},
		{name: "nested key from env", file: "tls:\n  ca_file: /file/ca.crt\n", env: map[string]string{"LDCFGTEST_TLS_CA_FILE": "/env/ca.crt"}, key: "tls.ca_file", want: "/env/ca.crt"},
		{name: "nested key from mapped flag", file: "tls:\n  ca_file: /file/ca.crt\n", env: map[string]string{"LDCFGTEST_TLS_CA_FILE": "/env/ca.crt"}, flags: []string{"--ca-file=/flag/ca.crt"}, key: "tls.ca_file", want: "/flag/ca.crt"},
		{name: "nested key default", key: "tls.ca_file", want: "default-ca.crt"},
		{name: "flag bound by dashed key name", file: "data_dir: /file/data\n", flags: []string{"--data-dir=/flag/data"}, key: "data_dir", want: "/flag/data"},
		{name: "dashed env name", env: map[string]string{"LDCFGTEST_DATA_DIR": "/env/data"}, key: "data_dir", want: "/env/data"},
		{name: "keys are case-insensitive in the file", file: "Controller: file:1\n", key: "controller", want: "file:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"LDCFGTEST_CONTROLLER", "LDCFGTEST_TLS_CA_FILE", "LDCFGTEST_TIMEOUT", "LDCFGTEST_DATA_DIR"} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o := Options{
				EnvPrefix: testPrefix,
				Flags:     testFlags(t, tt.flags...),
				FlagKeys:  map[string]string{"controller": "controller", "tls.ca_file": "ca-file"},
				Defaults:  testDefaults(),
			}
			if tt.file != "" {
				o.File = writeFile(t, "cfg.yaml", tt.file)
			}
			v, err := Load(o)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := v.GetString(tt.key); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestFileTypes(t *testing.T) {
	tests := []struct{ name, content string }{
		{"c.yaml", "controller: file:1\ntls:\n  ca_file: ca.crt\n"},
		{"c.yml", "controller: file:1\ntls:\n  ca_file: ca.crt\n"},
		{"c.json", `{"controller": "file:1", "tls": {"ca_file": "ca.crt"}}`},
		{"c.toml", "controller = \"file:1\"\n[tls]\nca_file = \"ca.crt\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.name, tt.content)
			v, err := Load(Options{File: p, Defaults: testDefaults()})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := v.GetString("controller"); got != "file:1" {
				t.Errorf("controller = %q", got)
			}
			if got, want := v.Path("tls.ca_file"), filepath.Join(filepath.Dir(p), "ca.crt"); got != want {
				t.Errorf("tls.ca_file path = %q, want %q", got, want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name     string
		file     string // file name; content in content
		content  string
		noFile   bool
		flagKeys map[string]string
		want     []string // substrings of the error
	}{
		{name: "unknown key", file: "c.yaml", content: "controller: a:1\ncontroler: b:1\n", want: []string{`unknown key "controler"`, "c.yaml", `did you mean "controller"`}},
		{name: "unknown nested key", file: "c.yaml", content: "tls:\n  cafile: x\n", want: []string{`unknown key "tls.cafile"`, "c.yaml"}},
		{name: "scalar where a section belongs", file: "c.yaml", content: "tls: x\n", want: []string{`unknown key "tls"`}},
		{name: "unknown key in json", file: "c.json", content: `{"bogus": 1}`, want: []string{`unknown key "bogus"`, "c.json"}},
		{name: "missing explicit file", file: "missing.yaml", noFile: true, want: []string{"missing.yaml", "does not exist"}},
		{name: "unsupported type", file: "c.ini", content: "controller=a:1\n", want: []string{"c.ini", "unsupported type"}},
		{name: "malformed yaml", file: "c.yaml", content: "controller: [\n", want: []string{"c.yaml"}},
		{name: "flag key for unknown key", flagKeys: map[string]string{"nope": "controller"}, want: []string{`"nope"`}},
		{name: "flag key for missing flag", flagKeys: map[string]string{"controller": "no-such-flag"}, want: []string{"--no-such-flag"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Defaults: testDefaults(), Flags: testFlags(t), FlagKeys: tt.flagKeys}
			if tt.file != "" {
				if tt.noFile {
					o.File = filepath.Join(t.TempDir(), tt.file)
				} else {
					o.File = writeFile(t, tt.file, tt.content)
				}
			}
			_, err := Load(o)
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEmptySectionIsNotUnknown(t *testing.T) {
	p := writeFile(t, "c.yaml", "tls: {}\n")
	if _, err := Load(Options{File: p, Defaults: testDefaults()}); err != nil {
		t.Fatalf("Load: %v", err)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		name    string
		content string // YAML file setting timeout
		env     string
		flags   []string
		want    time.Duration
		wantErr string
	}{
		{name: "default", want: 15 * time.Second},
		{name: "file", content: "timeout: 1m30s\n", want: 90 * time.Second},
		{name: "env", env: "2h", want: 2 * time.Hour},
		{name: "flag", content: "timeout: 1m\n", env: "2h", flags: []string{"--timeout=3s"}, want: 3 * time.Second},
		{name: "bad string", content: "timeout: fast\n", wantErr: `timeout: "fast" is not a duration`},
		{name: "bad env", env: "10 parsecs", wantErr: "timeout:"},
		{name: "bare number", content: "timeout: 30\n", wantErr: "timeout: 30 is not a duration"},
		{name: "zero", content: "timeout: 0\n", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LDCFGTEST_TIMEOUT", tt.env)
			o := Options{EnvPrefix: testPrefix, Flags: testFlags(t, tt.flags...), Defaults: testDefaults()}
			if tt.content != "" {
				o.File = writeFile(t, "c.yaml", tt.content)
			}
			v, err := Load(o)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got, err := v.Duration("timeout")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Duration = %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Duration = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	t.Setenv("LDCFGTEST_DATA_DIR", "")
	t.Setenv("LDCFGTEST_TLS_CA_FILE", "")
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	abs := filepath.Join(dir, "abs", "ca.crt")
	content := "tls:\n  ca_file: certs/ca.crt\ndata_dir: " + abs + "\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	v, err := Load(Options{File: p, EnvPrefix: testPrefix, Defaults: testDefaults(), Flags: testFlags(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.FileDir(); got != dir {
		t.Errorf("FileDir = %q, want %q", got, dir)
	}
	if got, want := v.Path("tls.ca_file"), filepath.Join(dir, "certs", "ca.crt"); got != want {
		t.Errorf("relative file path = %q, want %q", got, want)
	}
	if !v.FromFile("tls.ca_file") || v.FromFile("controller") {
		t.Errorf("FromFile wrong")
	}
	if got := v.Path("data_dir"); got != abs {
		t.Errorf("absolute file path = %q, want %q", got, abs)
	}
	// Defaults are relative to the working directory, not the file.
	if got := v.Path("controller"); got != "default.example:7443" {
		t.Errorf("default value resolved: %q", got)
	}

	// A relative path given by flag or env stays relative to the working
	// directory even though the file sets the same key.
	v, err = Load(Options{File: p, EnvPrefix: testPrefix, Defaults: testDefaults(), Flags: testFlags(t, "--ca-file=mine/ca.crt"), FlagKeys: map[string]string{"tls.ca_file": "ca-file"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Path("tls.ca_file"); got != "mine/ca.crt" {
		t.Errorf("flag path = %q, want mine/ca.crt", got)
	}
	t.Setenv("LDCFGTEST_TLS_CA_FILE", "env/ca.crt")
	v, err = Load(Options{File: p, EnvPrefix: testPrefix, Defaults: testDefaults()})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Path("tls.ca_file"); got != "env/ca.crt" {
		t.Errorf("env path = %q, want env/ca.crt", got)
	}

	// No file: no directory.
	v, err = Load(Options{Defaults: testDefaults()})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.FileDir(); got != "" {
		t.Errorf("FileDir without file = %q", got)
	}
}

func TestResolvePath(t *testing.T) {
	base := filepath.Join(string(filepath.Separator)+"etc", "livedump")
	abs := filepath.Join(string(filepath.Separator)+"srv", "ca.crt")
	if filepath.VolumeName(os.TempDir()) != "" { // Windows: absolute needs a volume
		abs = filepath.Join(filepath.VolumeName(os.TempDir())+`\`, "srv", "ca.crt")
	}
	tests := []struct{ base, p, want string }{
		{base, "ca.crt", filepath.Join(base, "ca.crt")},
		{base, filepath.Join("..", "x", "ca.crt"), filepath.Join(base, "..", "x", "ca.crt")},
		{base, abs, abs},
		{base, "", ""},
		{"", "ca.crt", "ca.crt"},
	}
	for _, tt := range tests {
		if got := ResolvePath(tt.base, tt.p); got != tt.want {
			t.Errorf("ResolvePath(%q, %q) = %q, want %q", tt.base, tt.p, got, tt.want)
		}
	}
}

func TestEnvVar(t *testing.T) {
	for _, tt := range []struct{ prefix, key, want string }{
		{"LIVEDUMP", "tls.ca_file", "LIVEDUMP_TLS_CA_FILE"},
		{"livedump", "data-dir", "LIVEDUMP_DATA_DIR"},
		{"", "controller", "CONTROLLER"},
	} {
		if got := EnvVar(tt.prefix, tt.key); got != tt.want {
			t.Errorf("EnvVar(%q, %q) = %q, want %q", tt.prefix, tt.key, got, tt.want)
		}
	}
}

// Each Config carries its own file directory and sources: two loaded from
// different files (as a test process or a program loading twice does) do
// not see each other's, and one built around a bare viper has no file.
func TestConfigsAreIndependent(t *testing.T) {
	var cfgs []*Config
	var dirs []string
	for _, body := range []string{"tls:\n  ca_file: a.crt\n", "controller: c:1\n"} {
		dir := t.TempDir()
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(Options{File: p, Defaults: testDefaults()})
		if err != nil {
			t.Fatal(err)
		}
		cfgs, dirs = append(cfgs, c), append(dirs, dir)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"first dir", cfgs[0].FileDir(), dirs[0]},
		{"second dir", cfgs[1].FileDir(), dirs[1]},
		{"first ca_file from file", cfgs[0].FromFile("tls.ca_file"), true},
		{"second ca_file not from file", cfgs[1].FromFile("tls.ca_file"), false},
		{"first controller not from file", cfgs[0].FromFile("controller"), false},
		{"second controller from file", cfgs[1].FromFile("CONTROLLER"), true},
		{"first path resolved", cfgs[0].Path("tls.ca_file"), filepath.Join(dirs[0], "a.crt")},
		{"bare viper has no dir", (&Config{Viper: cfgs[0].Viper}).FileDir(), ""},
		{"bare viper leaves paths", (&Config{Viper: cfgs[0].Viper}).Path("tls.ca_file"), "a.crt"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

// TestDescribe: an error about a value names the setting the way the user
// set it: the flag, the environment variable or the key in the file.
func TestDescribe(t *testing.T) {
	file := writeFile(t, "c.yaml", "controller: file:1\n")
	for _, tc := range []struct {
		name  string
		file  string
		env   string
		flags []string
		key   string
		want  string
	}{
		{name: "default", key: "controller", want: "--controller x:1 (controller)"},
		{name: "flag", flags: []string{"--controller", "x:1"}, file: file, env: "env:1", key: "controller", want: "--controller x:1 (controller)"},
		{name: "env", env: "env:1", file: file, key: "controller", want: "LDCFGTEST_CONTROLLER=x:1 (--controller, controller)"},
		{name: "file", file: file, key: "controller", want: "controller: x:1 in " + file + " (--controller)"},
		{name: "flag named otherwise", key: "tls.ca_file", want: "--ca-file x:1 (tls.ca_file)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("LDCFGTEST_CONTROLLER", tc.env)
			}
			c, err := Load(Options{
				File: tc.file, EnvPrefix: testPrefix, Flags: testFlags(t, tc.flags...),
				FlagKeys: map[string]string{"tls.ca_file": "ca-file"}, Defaults: testDefaults(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Describe(tc.key, "x:1"); got != tc.want {
				t.Errorf("Describe = %q, want %q", got, tc.want)
			}
		})
	}
	c, err := Load(Options{EnvPrefix: testPrefix, Defaults: testDefaults()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Describe("timeout", "1s"), "timeout 1s"; got != want {
		t.Errorf("without flags: %q, want %q", got, want)
	}
}
