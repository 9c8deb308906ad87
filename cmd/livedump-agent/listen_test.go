package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/tests/testca"
)

// TestMetricsListenInUse: an agent whose metrics port is taken says which
// setting chose it and what to do, in one line.
func TestMetricsListenInUse(t *testing.T) {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LIVEDUMP_AGENT_") {
			t.Setenv(strings.SplitN(kv, "=", 2)[0], "")
		}
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := pki.WriteCerts(ca, testca.New(t, testca.Options{}).Cert); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--simulate", "--state-dir", t.TempDir(), "--controller", "127.0.0.1:1", "--ca", ca, "--token", "x", "--metrics-listen", addr}, &stdout, &stderr)
	want := "livedump-agent: --metrics-listen " + addr + ` (metrics_listen): address already in use: another livedump-agent or another program listens there; pick another port with --metrics-listen ("-" serves none), or stop it` + "\n"
	if stderr.String() != want || code != 1 {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, stderr.String(), want)
	}
}
