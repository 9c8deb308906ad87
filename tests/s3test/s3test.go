// Package s3test runs a real S3-compatible server for tests: VersityGW in
// front of a temporary directory, one process per Start.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// InstallHint is how to get the server binary.
const InstallHint = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

const startTimeout = 20 * time.Second

// Server is a running VersityGW.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
}

// Binary finds versitygw: $LIVEDUMP_VERSITYGW, then PATH, then ~/go/bin.
func Binary() (string, error) {
	if p := os.Getenv("LIVEDUMP_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("LIVEDUMP_VERSITYGW: %w", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, "go", "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("versitygw not installed: " + InstallHint)
}

// Start runs VersityGW on a free loopback port with a posix backend in a
// temporary directory and stops it when the test ends. Without the binary
// the test is skipped, or fails when $CI is set: CI must not pass by
// skipping.
func Start(t testing.TB) Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v", err)
		}
		t.Skipf("needs VersityGW (S3): %v", err)
	}
	s := Server{AccessKey: "livedump-" + randomHex(4), SecretKey: randomHex(16)}
	root := t.TempDir()
	// The port is chosen by closing a listener, so another process can take
	// it first; a few attempts make that harmless.
	var lastErr error
	for range 3 {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = s.run(t, bin, addr, root); lastErr == nil {
			return s
		}
	}
	t.Fatalf("versitygw: %v", lastErr)
	return s
}

func (s *Server) run(t testing.TB, bin, addr, root string) error {
	var out syncBuffer
	cmd := exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", addr, "--quiet", "posix", root)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	s.Endpoint = "http://" + addr
	deadline := time.Now().Add(startTimeout)
	for {
		// Any HTTP answer (403 to an anonymous request) means it serves.
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			stop()
			return fmt.Errorf("exited (%v) before serving on %s:\n%s", err, addr, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("not serving on %s after %s:\n%s", addr, startTimeout, out.String())
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})
	return nil
}

// Client returns an S3 client authenticated as the server's root user.
func (s Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint[len("http://"):], &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewBucket creates an empty bucket with a fresh name and returns the name.
func (s Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := "test-" + randomHex(6)
	if err := s.Client(t).MakeBucket(context.Background(), name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	return name
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// syncBuffer collects the server's output, written by exec's copying
// goroutines while a test may read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
