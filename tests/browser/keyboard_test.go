//go:build unix

package browser

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// press sends keys to the page as a keyboard would, and returns the ID (or
// tag) of the element that has the focus afterwards.
func press(t *testing.T, ctx context.Context, keys string) string {
	t.Helper()
	do(t, ctx, "keys "+keys, chromedp.KeyEvent(keys))
	return eval[string](t, ctx, `(e => e ? (e.id || e.tagName.toLowerCase() + (e.getAttribute("href") ? "[href=" + e.getAttribute("href") + "]" : "")) : "")(document.activeElement)`)
}

// tabTo presses Tab until the element with id has the focus (at most max
// times), and fails naming the focus path otherwise.
func tabTo(t *testing.T, ctx context.Context, id string, max int) {
	t.Helper()
	var path []string
	for i := 0; i < max; i++ {
		got := press(t, ctx, kb.Tab)
		path = append(path, got)
		if got == id {
			return
		}
	}
	t.Fatalf("Tab never reached #%s; the focus went %s", id, strings.Join(path, " → "))
}

// TestKeyboardOnly creates a capture through the preview with the keyboard
// alone: the first Tab stop skips the menu, every form field is reached by
// Tab and takes typing, Enter previews, and the preview's button arms it.
func TestKeyboardOnly(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)
	ctx := e.tab(t, e.admin)

	open(t, ctx, e.admin, "/captures/new")
	if got := press(t, ctx, kb.Tab); got != "a[href=#main]" {
		t.Errorf("the first Tab stop is %q, want the skip link", got)
	}
	type field struct{ id, keys string }
	for _, f := range []field{
		{"f-selector", vdiSelector},
		{"f-processes", "ms-teams.exe"},
		{"f-statuses", "STATUS_INVALID_PARAMETER"},
	} {
		tabTo(t, ctx, f.id, 20)
		press(t, ctx, f.keys)
	}
	tabTo(t, ctx, "f-expire", 10)
	eval[bool](t, ctx, `(document.activeElement.select(), true)`) // as a user selects the default to replace it
	press(t, ctx, "10m")
	got := eval[string](t, ctx, `[...new FormData(document.querySelector("form#capture-form")).entries()].filter(([k]) => k !== "csrf").map(([k, v]) => k + "=" + v).join("&")`)
	for _, want := range []string{"selector=" + vdiSelector, "processes=ms-teams.exe", "statuses=STATUS_INVALID_PARAMETER", "expire=10m"} {
		if !strings.Contains(got, want) {
			t.Fatalf("typed form %q lacks %q", got, want)
		}
	}
	// Enter in a text field submits the form: the preview.
	tctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(tctx, chromedp.KeyEvent(kb.Enter))
	if err != nil || resp.Status != 200 {
		t.Fatalf("Enter on the form: %v %v: %.300s", err, resp, text(t, ctx, "body"))
	}
	mustHave(t, ctx, "preview", "section#preview", "button#create")
	tabTo(t, ctx, "create", 60)
	resp, err = chromedp.RunResponse(tctx, chromedp.KeyEvent(kb.Enter))
	if err != nil || resp.Status != 200 {
		t.Fatalf("Enter on #create: %v %v", err, resp)
	}
	m := capturePath.FindStringSubmatch(location(t, ctx))
	if m == nil {
		t.Fatalf("Enter on #create led to %s: %.300s", location(t, ctx), text(t, ctx, "body"))
	}
	t.Cleanup(func() { _, _ = e.run("capture", "cancel", m[1]) })
	// The capture page's links are reachable too: the flame graph link, by Tab.
	tabTo(t, ctx, "flamegraph-link", 20)
}
