package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// occupy listens on a free loopback port for the test's duration and
// returns its address.
func occupy(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// runController runs the controller's main with args and returns its exit
// status and stderr. The test fails if it does not exit within 60s: every
// case here must fail at start.
func runController(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	if ctx.Err() != nil {
		t.Fatalf("%v: still running after 60s; stderr:\n%s", args, stderr.String())
	}
	return code, stderr.String()
}

// TestBindErrorsNameTheFlag: when the controller cannot listen, the one
// line on stderr names the setting as the user set it (flag, environment
// variable or config file, with the config key) and what to do; a port in
// use exits 1, a malformed address is a usage error (2).
func TestBindErrorsNameTheFlag(t *testing.T) {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LIVEDUMP_CONTROLLER_") {
			t.Setenv(strings.SplitN(kv, "=", 2)[0], "")
		}
	}
	busy := occupy(t)
	_, busyPort, _ := net.SplitHostPort(busy)
	port, _ := strconv.Atoi(busyPort)
	free := "127.0.0.1:0"
	dir := func() string { return filepath.Join(t.TempDir(), "data") }
	cfgFile := filepath.Join(t.TempDir(), "controller.yaml")
	if err := os.WriteFile(cfgFile, []byte("metrics_listen: "+busy+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{
			name: "dev, --listen in use",
			args: []string{"--dev", "--dev-agents", "0", "--data-dir", dir(), "--listen", busy, "--metrics-listen", free},
			code: exitError,
			want: "--listen " + busy + " (listen): address already in use: another livedump-controller --dev may be running; pick another port with --listen, or stop it" + secondDev,
		},
		{
			name: "dev, --metrics-listen in use",
			args: []string{"--dev", "--dev-agents", "0", "--data-dir", dir(), "--listen", free, "--metrics-listen", busy},
			code: exitError,
			want: "--metrics-listen " + busy + ` (metrics_listen): address already in use: another livedump-controller --dev may be running; pick another port with --metrics-listen ("-" serves none), or stop it` + secondDev,
		},
		{
			name: "dev, an agent metrics port in use",
			args: []string{"--dev", "--dev-agents", "2", "--dev-agent-metrics-port", strconv.Itoa(port - 1), "--data-dir", dir(), "--listen", free, "--metrics-listen", free},
			code: exitError,
			want: fmt.Sprintf("--dev-agent-metrics-port %d: simulated agent 2's metrics address %s (port+1): address already in use: another livedump-controller --dev may be running; pick other ports with --dev-agent-metrics-port (agent i uses port+i; 0 picks free ports), or stop it%s", port-1, busy, secondDev),
		},
		{
			name: "dev, agent metrics ports beyond 65535",
			args: []string{"--dev", "--dev-agents", "3", "--dev-agent-metrics-port", "65534", "--data-dir", dir(), "--listen", free, "--metrics-listen", free},
			code: exitUsage,
			want: "--dev-agent-metrics-port 65534: the 3 simulated agents would use ports 65534-65536: want ports within 1-65535 (0 picks free ports)",
		},
		{
			name: "environment, listen in use",
			env:  map[string]string{"LIVEDUMP_CONTROLLER_LISTEN": busy},
			args: []string{"--data-dir", dir(), "--metrics-listen", free},
			code: exitError,
			want: "LIVEDUMP_CONTROLLER_LISTEN=" + busy + " (--listen, listen): address already in use: another process listens there (ss -ltnp shows which); pick another port with --listen, or stop it",
		},
		{
			name: "config file, metrics_listen in use",
			args: []string{"--config", cfgFile, "--data-dir", dir(), "--listen", free},
			code: exitError,
			want: "metrics_listen: " + busy + " in " + cfgFile + ` (--metrics-listen): address already in use: another process listens there (ss -ltnp shows which); pick another port with --metrics-listen ("-" serves none), or stop it`,
		},
		{
			name: "malformed address",
			args: []string{"--data-dir", dir(), "--listen", "127.0.0.1", "--metrics-listen", free},
			code: exitUsage,
			want: "--listen 127.0.0.1 (listen): missing port in address: want HOST:PORT, e.g. 127.0.0.1:7443",
		},
		{
			name: "unknown flag",
			args: []string{"--listne", free},
			code: exitUsage,
			want: "unknown flag: --listne",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stderr := runController(t, tc.args...)
			if want := "livedump-controller: " + tc.want + "\n"; stderr != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
			}
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
		})
	}
}
