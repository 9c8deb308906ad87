//go:build windows

package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/windows/svc"
)

func TestQuoteImagePath(t *testing.T) {
	exe := `C:\Program Files\livedump\livedump-agent.exe`
	for _, tc := range []struct {
		in, want string
		changed  bool
	}{
		{exe + ` service`, `"` + exe + `" service`, true},
		{exe, `"` + exe + `"`, true},
		{`"` + exe + `" service`, `"` + exe + `" service`, false},
		{`c:\program files\LIVEDUMP\livedump-agent.exe service`, `"` + exe + `" service`, true},
		{`C:\Other\x.exe service`, `C:\Other\x.exe service`, false},
		{exe + `x service`, exe + `x service`, false},
	} {
		got, changed := quoteImagePath(tc.in, exe)
		if got != tc.want || changed != tc.changed {
			t.Errorf("quoteImagePath(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
	if got, changed := quoteImagePath(`C:\livedump\a.exe service`, `C:\livedump\a.exe`); changed {
		t.Errorf("a path without spaces was rewritten to %q", got)
	}
}

// drive runs h.Execute with a request channel and collects the statuses.
func drive(h *serviceHandler) (req chan svc.ChangeRequest, statuses chan svc.Status, result chan [2]any) {
	req = make(chan svc.ChangeRequest)
	statuses = make(chan svc.Status, 100)
	result = make(chan [2]any, 1)
	go func() {
		ssec, code := h.Execute(nil, req, statuses)
		result <- [2]any{ssec, code}
	}()
	return
}

func waitRunning(t *testing.T, statuses chan svc.Status) {
	t.Helper()
	for {
		select {
		case s := <-statuses:
			if s.State == svc.Running {
				if s.Accepts&svc.AcceptStop == 0 || s.Accepts&svc.AcceptShutdown == 0 {
					t.Errorf("running but accepts %v", s.Accepts)
				}
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("never running")
		}
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestServiceStopCancelsTheAgent(t *testing.T) {
	h := &serviceHandler{parent: context.Background(), log: quiet, timeout: 5 * time.Second,
		run: func(ctx context.Context) error { <-ctx.Done(); return nil }}
	req, statuses, result := drive(h)
	waitRunning(t, statuses)
	start := time.Now()
	req <- svc.ChangeRequest{Cmd: svc.Stop}
	r := <-result
	if r[0] != false || r[1] != uint32(0) {
		t.Errorf("Execute = %v, %v; want a clean stop", r[0], r[1])
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stop took %v", d)
	}
}

func TestServiceStopWatchdog(t *testing.T) {
	h := &serviceHandler{parent: context.Background(), log: quiet, timeout: 1500 * time.Millisecond,
		run: func(ctx context.Context) error { select {} }} // never stops
	req, statuses, result := drive(h)
	waitRunning(t, statuses)
	start := time.Now()
	req <- svc.ChangeRequest{Cmd: svc.Shutdown}
	r := <-result
	d := time.Since(start)
	if d < 1500*time.Millisecond || d > 4*time.Second {
		t.Errorf("watchdog fired after %v, want about 1.5 s", d)
	}
	if r[0] != false || r[1] != uint32(0) {
		t.Errorf("Execute = %v, %v", r[0], r[1])
	}
	pending := 0
	for len(statuses) > 0 {
		if s := <-statuses; s.State == svc.StopPending {
			pending++
		}
	}
	if pending < 2 {
		t.Errorf("%d stop-pending statuses, want checkpoints while waiting", pending)
	}
}

func TestServiceAgentFailureIsAServiceError(t *testing.T) {
	h := &serviceHandler{parent: context.Background(), log: quiet, timeout: time.Second,
		run: func(context.Context) error { return errors.New("enrollment refused") }}
	_, _, result := drive(h)
	r := <-result
	if r[0] != true || r[1] != uint32(exitAgentFailed) {
		t.Errorf("Execute = %v, %v; want a service-specific exit code", r[0], r[1])
	}
	if h.err == nil {
		t.Error("the agent's error is lost")
	}
}

func TestRemoveTree(t *testing.T) {
	// Not t.TempDir: its cleanup fails under Wine 8, which is the point.
	dir, err := os.MkdirTemp("", "livedump")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{`logs\livedump-agent.log`, `spool\a\b.json`, `agent.yaml`} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeTree(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if err := removeTree(dir); err != nil {
		t.Errorf("removing a missing tree: %v", err)
	}
}
