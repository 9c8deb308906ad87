package deploy

import (
	"bufio"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// controllerKeys reads the controller's known configuration keys, the keys
// of the `defaults` map in cmd/livedump-controller/main.go, from the source:
// the map lives in package main, which a test cannot import.
func controllerKeys(t *testing.T) []string {
	t.Helper()
	path := filepath.Join(root, "cmd", "livedump-controller", "main.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "defaults" || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.CompositeLit)
		if !ok {
			t.Fatalf("%s: defaults is not a map literal", path)
		}
		for _, e := range lit.Elts {
			kv, ok := e.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			bl, ok := kv.Key.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				t.Fatalf("%s: a defaults key is not a string literal", path)
			}
			k, err := strconv.Unquote(bl.Value)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		return false
	})
	if len(keys) == 0 {
		t.Fatalf("%s: no defaults map found", path)
	}
	slices.Sort(keys)
	return keys
}

// sampleKeys flattens the sample's YAML mapping into dotted keys, and
// reports the keys that have no comment of their own (above the key, or on
// its line).
func sampleKeys(t *testing.T, path string) (keys, undocumented []string) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(readFile(t, path), &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatalf("%s: not a YAML mapping", path)
	}
	var walk func(m *yaml.Node, prefix string)
	walk = func(m *yaml.Node, prefix string) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := prefix + k.Value
			if v.Kind == yaml.MappingNode {
				walk(v, key+".")
				continue
			}
			keys = append(keys, key)
			if strings.TrimSpace(k.HeadComment+k.LineComment+v.LineComment) == "" {
				undocumented = append(undocumented, key)
			}
		}
	}
	walk(doc.Content[0], "")
	slices.Sort(keys)
	return keys, undocumented
}

// TestSampleControllerConfigDocumentsEveryKey: deploy/controller.yaml lists
// every key the controller knows, each with a comment, and nothing else.
func TestSampleControllerConfigDocumentsEveryKey(t *testing.T) {
	known := controllerKeys(t)
	keys, undocumented := sampleKeys(t, filepath.Join(root, "deploy", "controller.yaml"))
	for _, k := range known {
		if !slices.Contains(keys, k) {
			t.Errorf("deploy/controller.yaml lacks the key %s (cmd/livedump-controller/main.go defaults)", k)
		}
	}
	for _, k := range keys {
		if !slices.Contains(known, k) {
			t.Errorf("deploy/controller.yaml has the key %s, which the controller does not know", k)
		}
	}
	for _, k := range undocumented {
		t.Errorf("deploy/controller.yaml: key %s has no comment", k)
	}
}

var listeningLine = regexp.MustCompile(`msg="controller listening" addr=(\S+) metrics=(\S+)`)

// TestSampleControllerConfigStarts runs the real controller binary with the
// sample, unchanged, through its own config loader (strict keys, profile
// validation, durations, TLS settings), and requires it to become ready.
// Only the machine-specific values are overridden, with flags (which take
// precedence over the file): the data directory is a temp dir and both
// listeners are on 127.0.0.1:0. The binary is built from this tree, so the
// check does not depend on a stale bin/.
func TestSampleControllerConfigStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the controller binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "livedump-controller")
	build := exec.Command(goTool, "build", "-o", bin, "./cmd/livedump-controller")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/livedump-controller: %v\n%s", err, out)
	}

	sample, err := filepath.Abs(filepath.Join(root, "deploy", "controller.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", sample,
		"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	// No LIVEDUMP_CONTROLLER_* variable from the caller may override the file.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LIVEDUMP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var log strings.Builder
	metrics := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				metrics <- m[2]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		exited <- cmd.Wait()
	}()

	var addr string
	select {
	case addr = <-metrics:
	case err := <-exited:
		t.Fatalf("the controller exited with the sample config: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the controller did not report listening within 30s")
	}
	ready := func() error {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for err := ready(); err != nil; err = ready() {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("controller with the sample config not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the controller did not stop cleanly on SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Errorf("the controller did not stop within 20s of SIGTERM")
	}
}
