package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var errCaptured = errors.New("captured")

// resolve runs "agents list" with args, stopping at the dial, and returns
// the settings livedumpctl would connect with.
func resolve(t *testing.T, args ...string) (settings, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	a := newApp(&stdout, &stderr)
	var got settings
	a.dial = func(_ context.Context, s settings) (fleetClient, func() error, error) {
		got = s
		return nil, nil, errCaptured
	}
	a.run(context.Background(), append(args, "agents", "list"))
	if stderr.String() == "livedumpctl: captured\n" {
		return got, ""
	}
	return settings{}, stderr.String()
}

// fileConfig writes a config file into a fresh temp dir.
func fileConfig(t *testing.T, name, content string) string {
	t.Helper()
	return writeFile(t, filepath.Join(t.TempDir(), name), content)
}

func TestConfigPrecedence(t *testing.T) {
	const full = "controller: file.example:7443\nca: certs/ca.crt\ncert: certs/op.crt\nkey: op.key\noutput: json\ntimeout: 1m\n"
	type check func(t *testing.T, s settings, file string)
	wantController := func(want string) check {
		return func(t *testing.T, s settings, _ string) {
			if s.controller != want {
				t.Errorf("controller = %q, want %q", s.controller, want)
			}
		}
	}
	tests := []struct {
		name  string
		file  string            // config content; written to a temp file
		how   string            // how the file is found: "flag", "env", "default"
		env   map[string]string // extra environment
		args  []string          // global flags
		check check
	}{
		{name: "file via --config", file: full, how: "flag", check: func(t *testing.T, s settings, file string) {
			dir := filepath.Dir(file)
			want := settings{configFile: file, controller: "file.example:7443",
				ca: filepath.Join(dir, "certs", "ca.crt"), cert: filepath.Join(dir, "certs", "op.crt"),
				key: filepath.Join(dir, "op.key"), output: "json", timeout: time.Minute}
			if s != want {
				t.Errorf("settings = %+v\nwant       %+v", s, want)
			}
		}},
		{name: "file via LIVEDUMPCTL_CONFIG", file: full, how: "env", check: wantController("file.example:7443")},
		{name: "file from the user config dir", file: full, how: "default", check: wantController("file.example:7443")},
		{name: "env beats file", file: full, how: "env",
			env: map[string]string{"LIVEDUMP_CONTROLLER": "env.example:7443", "LIVEDUMP_OUTPUT": "table", "LIVEDUMP_TIMEOUT": "30s"},
			check: func(t *testing.T, s settings, _ string) {
				if s.controller != "env.example:7443" || s.output != "table" || s.timeout != 30*time.Second {
					t.Errorf("settings = %+v, want env values", s)
				}
			}},
		{name: "flag beats env", file: full, how: "env",
			env:  map[string]string{"LIVEDUMP_CONTROLLER": "env.example:7443", "LIVEDUMP_TIMEOUT": "30s", "LIVEDUMP_OUTPUT": "json"},
			args: []string{"--controller", "flag.example:7443", "--timeout", "5s", "-o", "table"},
			check: func(t *testing.T, s settings, _ string) {
				if s.controller != "flag.example:7443" || s.timeout != 5*time.Second || s.output != "table" {
					t.Errorf("settings = %+v, want flag values", s)
				}
			}},
		{name: "flag beats file", file: full, how: "flag", args: []string{"--controller=flag.example:7443"}, check: wantController("flag.example:7443")},
		{name: "unset flags do not override the file", file: full, how: "env", args: []string{"--controller=flag.example:7443"},
			check: func(t *testing.T, s settings, _ string) {
				// -o and --timeout have defaults (table, 15s), but were not given.
				if s.output != "json" || s.timeout != time.Minute {
					t.Errorf("output %q, timeout %s: flag defaults overrode the file", s.output, s.timeout)
				}
			}},
		{name: "relative paths from flags stay relative to the working directory", file: full, how: "env",
			args: []string{"--ca", "mine/ca.crt"}, env: map[string]string{"LIVEDUMP_CERT": "env/op.crt"},
			check: func(t *testing.T, s settings, file string) {
				if s.ca != "mine/ca.crt" || s.cert != "env/op.crt" {
					t.Errorf("ca %q, cert %q: want them unresolved", s.ca, s.cert)
				}
			}},
		{name: "--config beats LIVEDUMPCTL_CONFIG", file: full, how: "flag",
			env: map[string]string{envConfigFile: filepath.Join(os.TempDir(), "does-not-exist.yaml")}, check: wantController("file.example:7443")},
		{name: "no file at all", env: map[string]string{
			"LIVEDUMP_CONTROLLER": "env.example:7443", "LIVEDUMP_CA": "ca.crt", "LIVEDUMP_CERT": "op.crt", "LIVEDUMP_KEY": "op.key"},
			check: func(t *testing.T, s settings, _ string) {
				want := settings{controller: "env.example:7443", ca: "ca.crt", cert: "op.crt", key: "op.key", output: "table", timeout: 15 * time.Second}
				if s != want {
					t.Errorf("settings = %+v, want %+v", s, want)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateEnv(t)
			var file string
			var args []string
			if tt.file != "" {
				switch tt.how {
				case "flag":
					file = fileConfig(t, "ctl.yaml", tt.file)
					args = append(args, "--config", file)
				case "env":
					file = fileConfig(t, "ctl.yaml", tt.file)
					t.Setenv(envConfigFile, file)
				case "default":
					file = defaultConfigFile()
					writeFile(t, file, tt.file)
				}
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			s, errLine := resolve(t, append(args, tt.args...)...)
			if errLine != "" {
				t.Fatalf("error: %s", errLine)
			}
			tt.check(t, s, file)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) []string // returns global flags
		want  []string
	}{
		{name: "missing LIVEDUMPCTL_CONFIG file", setup: func(t *testing.T) []string {
			t.Setenv(envConfigFile, filepath.Join(t.TempDir(), "gone.yaml"))
			return nil
		}, want: []string{"gone.yaml", "does not exist"}},
		{name: "missing --config file", setup: func(t *testing.T) []string {
			return []string{"--config", filepath.Join(t.TempDir(), "gone.yaml")}
		}, want: []string{"gone.yaml", "does not exist"}},
		{name: "unknown key", setup: func(t *testing.T) []string {
			return []string{"--config", fileConfig(t, "ctl.yaml", "controller: a:1\ncontroler: b:1\n")}
		}, want: []string{`unknown key "controler"`, "ctl.yaml"}},
		{name: "missing controller", setup: func(t *testing.T) []string {
			return []string{"--config", fileConfig(t, "ctl.yaml", "ca: ca.crt\ncert: op.crt\nkey: op.key\n")}
		}, want: []string{"controller is not set", "--controller", "LIVEDUMP_CONTROLLER", "ctl.yaml"}},
		{name: "missing cert and key", setup: func(t *testing.T) []string {
			t.Setenv("LIVEDUMP_CA", "ca.crt")
			return []string{"--controller", "c:1"}
		}, want: []string{"cert and key are not set", "--cert", "LIVEDUMP_KEY", filepath.Join("livedump", "livedumpctl.yaml")}},
		{name: "bad output", setup: func(t *testing.T) []string {
			t.Setenv("LIVEDUMP_OUTPUT", "yaml")
			return nil
		}, want: []string{`output "yaml"`, "table or json"}},
		{name: "bad timeout in file", setup: func(t *testing.T) []string {
			return []string{"--config", fileConfig(t, "ctl.yaml", "timeout: soon\n")}
		}, want: []string{"timeout", `"soon"`}},
		{name: "zero timeout", setup: func(t *testing.T) []string {
			return []string{"--timeout", "0s"}
		}, want: []string{"timeout", "positive"}},
		{name: "controller without port", setup: func(t *testing.T) []string {
			return []string{"--controller", "ctl.example", "--ca", "a", "--cert", "b", "--key", "c"}
		}, want: []string{`controller "ctl.example"`, "HOST:PORT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateEnv(t)
			args := append(tt.setup(t), "agents", "list")
			code, stdout, stderr := runCLI(t, args...)
			wantOneLineError(t, code, stdout, stderr, tt.want...)
		})
	}
}

func TestDefaultConfigFileIsOptional(t *testing.T) {
	isolateEnv(t)
	if _, err := os.Stat(defaultConfigFile()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("default config file should not exist in the test: %v", err)
	}
	code, _, stderr := runCLI(t, "agents", "list")
	// No file is fine; what is missing is the connection settings.
	if code == 0 || !strings.Contains(stderr, "controller, ca, cert and key are not set") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
