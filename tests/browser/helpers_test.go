//go:build unix

package browser

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// pageTimeout bounds one page action.
const pageTimeout = 30 * time.Second

// open navigates the tab to the console path and returns the document's
// response; an HTTP status other than 200 fails the test.
func open(t *testing.T, ctx context.Context, c console, path string) {
	t.Helper()
	resp := openStatus(t, ctx, c, path)
	if resp.Status != 200 {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("GET %s: HTTP %d: %.500s", path, resp.Status, body)
	}
}

// openStatus navigates and returns the response, whatever its status.
func openStatus(t *testing.T, ctx context.Context, c console, path string) *network.Response {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	resp, err := chromedp.Run(tctx, chromedp.NavigateResponse(c.base+path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// eval evaluates a JavaScript expression in the tab and decodes its value.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %.200s: %v", js, err)
	}
	return v
}

// count is the number of elements matching a CSS selector.
func count(t *testing.T, ctx context.Context, css string) int {
	t.Helper()
	return eval[int](t, ctx, "document.querySelectorAll("+jsString(css)+").length")
}

// text is the visible text of the first element matching css ("" if none).
func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	return eval[string](t, ctx, "(e => e ? e.innerText : '')(document.querySelector("+jsString(css)+"))")
}

// mustHave fails the test unless each selector matches an element.
func mustHave(t *testing.T, ctx context.Context, page string, css ...string) {
	t.Helper()
	for _, s := range css {
		if count(t, ctx, s) == 0 {
			t.Errorf("%s: no %s", page, s)
		}
	}
}

// location is the tab's URL.
func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// do runs actions with the page timeout.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// fitsLaptop checks that the page needs no horizontal scrolling in the
// 1280 px wide window (the issue: readable on a laptop screen).
func fitsLaptop(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	type widths struct {
		Page   int `json:"page"`
		Window int `json:"window"`
	}
	w := eval[widths](t, ctx, `({page: document.documentElement.scrollWidth, window: document.documentElement.clientWidth})`)
	if w.Page > w.Window {
		t.Errorf("%s: %d px wide in a %d px window (scrolls sideways on a laptop screen)", page, w.Page, w.Window)
	}
}

// screenshot takes a full-page PNG of the tab: to docs/screenshots/NAME.png
// with LIVEDUMP_UPDATE_SCREENSHOTS=1, else to a temp dir.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: not a PNG", name)
	}
	dir := t.TempDir()
	if os.Getenv("LIVEDUMP_UPDATE_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "..", "docs", "screenshots")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitJS polls a JavaScript boolean expression until it is true.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (%v)", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hostnames of the agents the selector matches, by ID.
func (e *env) agents(t *testing.T, selector string) map[string]string {
	t.Helper()
	var list struct {
		Agents []struct {
			ID       string `json:"id"`
			Hostname string `json:"hostname"`
		} `json:"agents"`
	}
	args := []string{"agents", "list"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	if err := e.ctlJSON(&list, args...); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, a := range list.Agents {
		m[a.ID] = a.Hostname
	}
	return m
}

// contains reports whether s holds every part.
func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
