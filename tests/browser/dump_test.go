//go:build unix

package browser

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

type dump struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size,string"`
}

// TestDownloadDump downloads a dump of the dump capture from its page's
// a.download link in the browser and checks the file's SHA-256 against
// `livedumpctl dumps list`.
func TestDownloadDump(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)

	dumps := e.waitDumps(t)
	ctx := e.tab(t, e.admin)
	open(t, ctx, e.admin, "/captures/"+e.dumpCapture)
	mustHave(t, ctx, "dump capture", "table#dumps a.download")
	href := eval[string](t, ctx, `document.querySelector("table#dumps a.download").getAttribute("href")`)
	id := strings.TrimSuffix(strings.TrimPrefix(href, "/dumps/"), "/download")
	var want *dump
	for i := range dumps {
		if dumps[i].ID == id {
			want = &dumps[i]
		}
	}
	if want == nil || !strings.HasPrefix(href, "/dumps/") || !strings.HasSuffix(href, "/download") {
		t.Fatalf("a.download href %q: not one of the uploaded dumps %+v", href, dumps)
	}

	dir := t.TempDir()
	bctx := chromedp.FromContext(ctx).BrowserContextID
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior:         browser.SetDownloadBehaviorBehaviorAllowAndName,
		BrowserContextID: bctx,
		DownloadPath:     dir,
		EventsEnabled:    new(true),
	}); err != nil {
		t.Fatalf("Browser.setDownloadBehavior: %v", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	events := chromedp.BrowserEvents(dctx, browser.DownloadProgress)
	started := time.Now()
	do(t, ctx, "click a.download", chromedp.Click(chromedp.CSS("table#dumps a.download")))
	var file string
	for ev, err := range events {
		if err != nil {
			t.Fatalf("download of %s: %v", href, err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatalf("download of %s: cancelled after %d bytes", href, int64(ev.ReceivedBytes))
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 || n != want.Size {
		t.Errorf("downloaded %s: %d bytes, SHA-256 %s; dumps list: %d bytes, %s", href, n, got, want.Size, want.SHA256)
	}
	t.Logf("downloaded dump %s: %d MiB in %s, SHA-256 matches", id, n>>20, time.Since(started).Round(time.Millisecond))
}

// waitDumps waits until the dump capture has uploaded dumps (the dev
// agents' 32 MiB ones), and returns them.
func (e *env) waitDumps(t *testing.T) []dump {
	t.Helper()
	var dumps []dump
	if err := waitFor(180*time.Second, func() error {
		var resp struct {
			Dumps []dump `json:"dumps"`
		}
		if err := e.ctlJSON(&resp, "dumps", "list", "--capture", e.dumpCapture); err != nil {
			return err
		}
		dumps = dumps[:0]
		for _, d := range resp.Dumps {
			if d.State == "DUMP_STATE_UPLOADED" && len(d.SHA256) == 64 {
				dumps = append(dumps, d)
			}
		}
		if len(dumps) < 2 {
			return fmt.Errorf("%d of 2 dumps uploaded: %+v", len(dumps), resp.Dumps)
		}
		return nil
	}); err != nil {
		t.Fatalf("dump capture %s: %v", e.dumpCapture, err)
	}
	return dumps
}
