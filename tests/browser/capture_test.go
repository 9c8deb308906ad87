//go:build unix

package browser

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// setFields fills form#capture-form by field name, whatever the control is
// (text input, select, radio group, checkbox).
func setFields(t *testing.T, ctx context.Context, fields map[string]string) {
	t.Helper()
	for name, value := range fields {
		ok := eval[bool](t, ctx, `((name, value) => {
			const els = [...document.querySelectorAll("form#capture-form [name='" + name + "']")];
			if (els.length === 0) return false;
			for (const el of els) {
				if (el.type === "radio") { el.checked = el.value === value; }
				else if (el.type === "checkbox") { el.checked = value !== "" && value !== "false"; }
				else { el.value = value; }
				el.dispatchEvent(new Event("change", {bubbles: true}));
			}
			return els.some(el => el.type === "radio" ? el.checked : true);
		})(`+jsString(name)+`, `+jsString(value)+`)`)
		if !ok {
			t.Fatalf("form#capture-form: cannot set %s to %q", name, value)
		}
	}
}

var capturePath = regexp.MustCompile(`/captures/([0-9a-zA-Z_-]+)$`)

// TestCreateCaptureThroughPreview fills the new-capture form, reads the
// dry-run preview (2 targets, the D script), arms it, and lands on the
// capture's page.
func TestCreateCaptureThroughPreview(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)
	ctx := e.tab(t, e.admin)

	open(t, ctx, e.admin, "/captures")
	tctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	if _, err := chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS("a#new-capture"))); err != nil {
		t.Fatalf("click a#new-capture: %v", err)
	}
	if loc := location(t, ctx); !strings.HasSuffix(loc, "/captures/new") {
		t.Fatalf("a#new-capture led to %s", loc)
	}
	setFields(t, ctx, map[string]string{
		"selector":  vdiSelector,
		"processes": "ms-teams.exe",
		"statuses":  "STATUS_INVALID_PARAMETER",
		"action":    "stacks",
		"expire":    "10m",
	})
	resp, err := chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS("button#preview")))
	if err != nil {
		t.Fatalf("click button#preview: %v", err)
	}
	if resp.Status != 200 {
		t.Fatalf("preview: HTTP %d: %s", resp.Status, text(t, ctx, "body"))
	}
	mustHave(t, ctx, "preview", "section#preview", "table#preview-targets", "#preview-provisioning",
		"#preview-statuses", "pre#preview-script", "form#confirm-form button#create")
	targets := eval[int](t, ctx, `[...document.querySelectorAll("table#preview-targets tr")].filter(r => r.querySelector("td")).length`)
	if targets != 2 {
		t.Errorf("preview: %d targets, want 2: %s", targets, text(t, ctx, "table#preview-targets"))
	}
	if s := text(t, ctx, "pre#preview-script"); !strings.Contains(s, "ms-teams.exe") {
		t.Errorf("preview: the D script does not name ms-teams.exe:\n%s", s)
	}
	if s := text(t, ctx, "#preview-statuses"); !strings.Contains(s, "STATUS_INVALID_PARAMETER") {
		t.Errorf("preview: statuses %q", s)
	}
	screenshot(t, ctx, "capture-preview")

	before := location(t, ctx)
	resp, err = chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS("button#create")))
	if err != nil {
		t.Fatalf("click button#create: %v", err)
	}
	loc := location(t, ctx)
	m := capturePath.FindStringSubmatch(loc)
	if resp.Status != 200 || m == nil || loc == before {
		t.Fatalf("create: HTTP %d at %s, want a capture's page: %.500s", resp.Status, loc, text(t, ctx, "body"))
	}
	id := m[1]
	t.Cleanup(func() { _, _ = e.run("capture", "cancel", id) })
	mustHave(t, ctx, "the new capture", "table#targets", "table#events", "form#cancel-form")

	// The controller has it, with the spec the form gave.
	var c struct {
		Spec struct {
			Selector  string   `json:"selector"`
			Processes []string `json:"processes"`
		} `json:"spec"`
	}
	if err := e.ctlJSON(&c, "capture", "get", id); err != nil {
		t.Fatal(err)
	}
	if c.Spec.Selector != vdiSelector || len(c.Spec.Processes) != 1 || !strings.EqualFold(c.Spec.Processes[0], "ms-teams.exe") {
		t.Errorf("capture %s: spec %+v", id, c.Spec)
	}
}

// TestLiveEventsArrive opens a capture's page as it starts and sees event
// rows appended by the live stream, without reloading the page.
func TestLiveEventsArrive(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)
	ctx := e.tab(t, e.admin)

	out, err := e.run("capture", "create", "-l", vdiSelector, "--process", "ms-teams.exe",
		"--status", "STATUS_INVALID_PARAMETER", "--action", "stacks", "--per-agent", "100", "--expire", "10m")
	if err != nil {
		t.Fatal(err)
	}
	id := lastLine(out)
	t.Cleanup(func() { _, _ = e.run("capture", "cancel", id) })
	open(t, ctx, e.admin, "/captures/"+id)
	mustHave(t, ctx, "capture", "table#events tbody#event-rows")
	// A mark that a reload would wipe out.
	eval[bool](t, ctx, `(window.__notReloaded = true)`)
	first := count(t, ctx, "tbody#event-rows tr.event")
	waitJS(t, ctx, 60*time.Second, "new rows in tbody#event-rows",
		`document.querySelectorAll("tbody#event-rows tr.event").length > `+strconv.Itoa(first))
	if !eval[bool](t, ctx, `window.__notReloaded === true`) {
		t.Fatal("the page was reloaded")
	}
	// They keep coming (the per-agent cap of 100 at the lab's 5 a second
	// gives 20 s of events, so a page that loads slowly on a busy machine
	// still finds the capture running).
	waitJS(t, ctx, 60*time.Second, "20 rows in tbody#event-rows",
		`document.querySelectorAll("tbody#event-rows tr.event").length >= 20`)
	if !eval[bool](t, ctx, `window.__notReloaded === true`) {
		t.Fatal("the page was reloaded")
	}
	rows := eval[string](t, ctx, `document.querySelector("tbody#event-rows").innerText`)
	if !strings.Contains(strings.ToLower(rows), "ms-teams.exe") {
		t.Errorf("live rows do not name the process: %.500s", rows)
	}
	t.Logf("%d rows at load, %d after the live updates", first, count(t, ctx, "tbody#event-rows tr.event"))
}
