//go:build unix

package browser

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// viewerRefusal is the controller's refusal of a viewer's CreateCapture
// (controller/auth, as `livedumpctl` prints it).
const viewerRefusal = "role viewer may not call FleetService/CreateCapture"

// TestViewer signs in to the viewer's console: no page offers a create or
// cancel control; a POST to /captures made anyway (with the page's CSRF
// token) gets the controller's permission refusal, and the admin sees it
// in the audit log.
func TestViewer(t *testing.T) {
	needBrowser(t)
	e := getEnv(t)
	ctx := e.tab(t, e.viewer)

	var agentID string
	for id := range e.agents(t, vdiSelector) {
		agentID = id
	}
	// An active capture, whose page offers the admin form#cancel-form.
	out, err := e.run("capture", "create", "-l", vdiSelector, "--process", "ms-teams.exe",
		"--status", "STATUS_INVALID_PARAMETER", "--action", "stacks", "--per-agent", "1000", "--expire", "10m")
	if err != nil {
		t.Fatal(err)
	}
	active := lastLine(out)
	t.Cleanup(func() { _, _ = e.run("capture", "cancel", active) })
	admin := e.tab(t, e.admin)
	open(t, admin, e.admin, "/captures/"+active)
	mustHave(t, admin, "admin, an active capture", "form#cancel-form")
	open(t, admin, e.admin, "/captures")
	mustHave(t, admin, "admin, captures", "a#new-capture")
	pages := []string{
		"/agents", "/agents?selector=" + vdiSelector, "/agents/" + agentID, "/captures", "/captures/new",
		"/captures/" + e.stacksCapture, "/captures/" + e.stacksCapture + "/flamegraph", "/captures/" + e.dumpCapture, "/captures/" + active, "/audit",
	}
	for _, p := range pages {
		resp := openStatus(t, ctx, e.viewer, p)
		for _, sel := range []string{"a#new-capture", "#create", "#cancel-form", `nav a[href="/audit"]`} {
			if n := count(t, ctx, sel); n != 0 {
				t.Errorf("viewer, %s (HTTP %d): %s is shown", p, resp.Status, sel)
			}
		}
		switch p {
		case "/audit":
			if resp.Status < 400 || count(t, ctx, "div#error") == 0 || count(t, ctx, "table#audit") != 0 {
				t.Errorf("viewer, /audit: HTTP %d, want the controller's refusal in div#error: %.300s", resp.Status, text(t, ctx, "body"))
			}
		case "/captures/new":
			// The form may show (a dry run is the viewer's to ask), or a
			// refusal; either way no button arms a capture (above).
		default:
			if resp.Status != 200 {
				t.Errorf("viewer, %s: HTTP %d: %.300s", p, resp.Status, text(t, ctx, "body"))
			}
		}
	}

	// A POST anyway, from the viewer's page, with its CSRF token.
	open(t, ctx, e.viewer, "/captures")
	type result struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	r := eval[result](t, ctx, `(async () => {
		const csrf = document.querySelector('meta[name="csrf"]').content;
		const body = new URLSearchParams({csrf, selector: "role=vdi", processes: "ms-teams.exe",
			statuses: "STATUS_INVALID_PARAMETER", action: "stacks", expire: "10m"});
		const r = await fetch("/captures", {method: "POST", body, redirect: "manual"});
		return {status: r.status, body: await r.text()};
	})()`)
	if r.Status != 403 || !strings.Contains(r.Body, viewerRefusal) || !strings.Contains(r.Body, `id="error"`) {
		t.Errorf("viewer's POST /captures: HTTP %d, want 403 with div#error naming %q: %.800s", r.Status, viewerRefusal, r.Body)
	}

	// The admin sees the refused call: in the audit log (CLI) and on the
	// audit page.
	var audit struct {
		Entries []struct {
			Actor   string `json:"actor"`
			Action  string `json:"action"`
			Outcome string `json:"outcome"`
		} `json:"entries"`
	}
	if err := waitFor(10*time.Second, func() error {
		if err := e.ctlJSON(&audit, "audit", "list", "--limit", "200"); err != nil {
			return err
		}
		for _, a := range audit.Entries {
			if a.Action == "FleetService/CreateCapture" && strings.Contains(a.Actor, viewerName) && a.Outcome != "ok" {
				return nil
			}
		}
		b, _ := json.Marshal(audit.Entries[:min(len(audit.Entries), 5)])
		return fmt.Errorf("no refused CreateCapture by %s in the audit log: %s", viewerName, b)
	}); err != nil {
		t.Error(err)
	}
	open(t, admin, e.admin, "/audit")
	found := eval[bool](t, admin, `[...document.querySelectorAll("table#audit tr")].some(r =>
		r.innerText.includes("FleetService/CreateCapture") && r.innerText.includes(`+jsString(viewerName)+`) && r.innerText.includes(`+jsString(viewerRefusal)+`))`)
	if !found {
		t.Errorf("the admin's audit page shows no refused CreateCapture by %s: %.1000s", viewerName, text(t, admin, "table#audit"))
	}
}
