//go:build unix

package browser

import (
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestEveryPage opens each page of the console as the admin, checks what
// it must show, and takes a full-page screenshot of it.
func TestEveryPage(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)
	ctx := e.tab(t, e.admin)
	vdi := e.agents(t, vdiSelector)

	// The fleet: all three machines, then the selector box with the same
	// syntax as -l.
	open(t, ctx, e.admin, "/agents")
	if n := count(t, ctx, "table#agents tr.agent[data-id]"); n != 3 {
		t.Errorf("fleet: %d rows, want 3", n)
	}
	mustHave(t, ctx, "fleet", `form#selector-form input[name="selector"]`)
	do(t, ctx, "select role=vdi",
		chromedp.SetValue(chromedp.CSS(`form#selector-form input[name="selector"]`), vdiSelector),
		chromedp.Submit(chromedp.CSS(`form#selector-form input[name="selector"]`)),
	)
	waitJS(t, ctx, pageTimeout, "the selector's page", `location.search.includes("selector=")`)
	waitJS(t, ctx, pageTimeout, "the fleet table", `!!document.querySelector("table#agents")`)
	if q, _ := url.Parse(location(t, ctx)); q == nil || q.Query().Get("selector") != vdiSelector {
		t.Errorf("fleet: the selector form went to %s", location(t, ctx))
	}
	ids := eval[[]string](t, ctx, `[...document.querySelectorAll("table#agents tr.agent[data-id]")].map(r => r.dataset.id)`)
	if len(ids) != 2 {
		t.Errorf("fleet with %s: %d rows, want 2", vdiSelector, len(ids))
	}
	for _, id := range ids {
		if _, ok := vdi[id]; !ok {
			t.Errorf("fleet with %s: row %s is not a VDI machine (%v)", vdiSelector, id, vdi)
		}
	}
	fitsLaptop(t, ctx, "fleet")
	screenshot(t, ctx, "fleet")

	// An agent.
	var id string
	for a := range vdi {
		if id == "" || a < id {
			id = a
		}
	}
	open(t, ctx, e.admin, "/agents/"+id)
	mustHave(t, ctx, "agent", "section#agent")
	if s := text(t, ctx, "section#agent"); !contains(s, vdi[id]) {
		t.Errorf("agent page: hostname %s not shown: %.300s", vdi[id], s)
	}
	fitsLaptop(t, ctx, "agent")
	screenshot(t, ctx, "agent")

	// Captures.
	open(t, ctx, e.admin, "/captures")
	mustHave(t, ctx, "captures", "table#captures",
		`tr.capture[data-id="`+e.stacksCapture+`"]`, `tr.capture[data-id="`+e.dumpCapture+`"]`, "a#new-capture")
	fitsLaptop(t, ctx, "captures")
	screenshot(t, ctx, "captures")

	// New capture.
	open(t, ctx, e.admin, "/captures/new")
	mustHave(t, ctx, "new capture", "form#capture-form", "button#preview")
	for _, name := range []string{"selector", "processes", "syscalls", "statuses", "action", "ustack", "kstack",
		"per_agent", "max_dumps", "dumps_per_signature", "rollout_rate", "expire", "lkd_mode", "upload", "force"} {
		if count(t, ctx, `form#capture-form [name="`+name+`"]`) == 0 {
			t.Errorf("new capture: no field named %s", name)
		}
	}
	fitsLaptop(t, ctx, "capture-new")
	screenshot(t, ctx, "capture-new")

	// A capture: the stacks capture, once its events are in (it is done,
	// so it offers no cancel; TestViewer checks the admin's on an active
	// one), and its flame graph through the page's link.
	e.waitStacksDone(t)
	open(t, ctx, e.admin, "/captures/"+e.stacksCapture)
	mustHave(t, ctx, "capture", "table#targets", "table#events", "tbody#event-rows tr.event",
		"table#buckets tr.bucket td.count", "table#buckets tr.bucket td.signature", "table#dumps",
		"a#flamegraph-link")
	fitsLaptop(t, ctx, "capture")
	href := eval[string](t, ctx, `document.querySelector("a#flamegraph-link").getAttribute("href")`)
	if !strings.HasPrefix(href, "/captures/"+e.stacksCapture+"/flamegraph") {
		t.Errorf("a#flamegraph-link: href %q", href)
	}
	open(t, ctx, e.admin, href)
	mustHave(t, ctx, "flame graph", "svg#flamegraph", "svg#flamegraph g.frame title")
	fitsLaptop(t, ctx, "flamegraph")
	screenshot(t, ctx, "flamegraph")

	// The dump capture (its two events, buckets and dumps make a page that
	// fits in a screenshot) is the capture shown.
	e.waitDumps(t)
	open(t, ctx, e.admin, "/captures/"+e.dumpCapture)
	mustHave(t, ctx, "dump capture", "table#targets", "tbody#event-rows tr.event", "table#buckets tr.bucket",
		"table#dumps a.download", "a#flamegraph-link")
	fitsLaptop(t, ctx, "capture")
	screenshot(t, ctx, "capture")

	// The audit log.
	open(t, ctx, e.admin, "/audit")
	mustHave(t, ctx, "audit", "table#audit")
	if s := text(t, ctx, "table#audit"); !contains(s, "FleetService/CreateCapture") {
		t.Errorf("audit: the admin's CreateCapture calls are not listed: %.500s", s)
	}
	fitsLaptop(t, ctx, "audit")
	screenshot(t, ctx, "audit")
}
