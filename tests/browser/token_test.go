//go:build unix

package browser

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// client is an HTTP client that does not follow redirects, with a cookie
// jar when jar is true.
func client(t *testing.T, jar bool) *http.Client {
	t.Helper()
	c := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if jar {
		j, err := cookiejar.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Jar = j
	}
	return c
}

// do sends a request and returns the status and body.
func send(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

func get(t *testing.T, rawURL, host string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	return req
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf" content="([^"]+)"`)

// TestRefusedWithoutToken: the console answers only a request with its
// URL token or its cookie, on its own Host, and a POST only with the
// page's CSRF token.
func TestRefusedWithoutToken(t *testing.T) {
	e := getEnv(t)
	c := e.admin
	anon := client(t, false)

	// No token, no cookie; a wrong token.
	for _, path := range []string{"/", "/captures", "/agents", "/captures/" + e.stacksCapture + "/flamegraph.svg",
		"/captures/" + e.stacksCapture + "/live", "/audit", "/static/style.css"} {
		if code, body := send(t, anon, get(t, c.base+path, "")); code != http.StatusForbidden {
			t.Errorf("GET %s without the token: HTTP %d, want 403: %.200s", path, code, body)
		}
	}
	for _, path := range []string{"/", "/captures"} {
		if code, _ := send(t, anon, get(t, c.base+path+"?token=not-the-token", "")); code != http.StatusForbidden {
			t.Errorf("GET %s with a wrong token: HTTP %d, want 403", path, code)
		}
	}
	if code, _ := send(t, anon, get(t, e.viewer.loginURL("/"), c.host)); code != http.StatusForbidden {
		t.Errorf("GET / with the viewer console's token on the admin's console: HTTP %d, want 403", code)
	}

	// Another Host (a DNS-rebinding page), even with the right token.
	_, port, _ := strings.Cut(c.host, ":")
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1", "localhost", "127.0.0.1:1"} {
		if code, _ := send(t, anon, get(t, c.loginURL("/"), host)); code != http.StatusForbidden {
			t.Errorf("GET /?token= with Host %s: HTTP %d, want 403", host, code)
		}
	}
	// The Hosts it answers: 127.0.0.1:PORT and localhost:PORT.
	for _, host := range []string{c.host, "localhost:" + port} {
		req := get(t, c.loginURL("/captures"), host)
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
			t.Errorf("GET /captures?token= with Host %s: HTTP %d, want a redirect", host, resp.StatusCode)
			continue
		}
		if loc := resp.Header.Get("Location"); strings.Contains(loc, "token") || !strings.HasSuffix(loc, "/captures") {
			t.Errorf("GET /captures?token= with Host %s: redirect to %q, want /captures without the token", host, loc)
		}
		var cookie *http.Cookie
		for _, ck := range resp.Cookies() {
			cookie = ck
		}
		if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
			t.Errorf("GET /captures?token= with Host %s: cookie %+v, want HttpOnly and SameSite=Strict", host, cookie)
		}
	}

	// Signed in with the cookie: a page from another Host is refused too.
	jar := client(t, true)
	if code, _ := send(t, jar, get(t, c.loginURL("/"), "")); code != http.StatusSeeOther && code != http.StatusFound {
		t.Fatalf("GET /?token=: HTTP %d, want a redirect", code)
	}
	code, page := send(t, jar, get(t, c.base+"/captures", ""))
	if code != http.StatusOK {
		t.Fatalf("GET /captures with the cookie: HTTP %d", code)
	}
	if code, _ := send(t, jar, get(t, c.base+"/captures", "evil.example:"+port)); code != http.StatusForbidden {
		t.Errorf("GET /captures with the cookie and Host evil.example:%s: HTTP %d, want 403", port, code)
	}

	// A POST without the CSRF field, or with a wrong one, is refused and
	// creates nothing.
	m := csrfMeta.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("/captures: no <meta name=\"csrf\">: %.500s", page)
	}
	before := e.captureCount(t)
	form := url.Values{"selector": {vdiSelector}, "processes": {"ms-teams.exe"}, "statuses": {"STATUS_INVALID_PARAMETER"},
		"action": {"stacks"}, "expire": {"10m"}, "per_agent": {"1"}}
	for name, csrf := range map[string]string{"without csrf": "", "with a wrong csrf": m[1] + "x"} {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if csrf != "" {
			f.Set("csrf", csrf)
		}
		for _, path := range []string{"/captures", "/captures/preview"} {
			req, err := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(f.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if code, body := send(t, jar, req); code != http.StatusForbidden {
				t.Errorf("POST %s %s: HTTP %d, want 403: %.300s", path, name, code, body)
			}
		}
	}
	if after := e.captureCount(t); after != before {
		t.Errorf("refused POSTs: %d captures before, %d after", before, after)
	}

	// A fresh browser (no cookie) without the token.
	if hasChrom {
		ctx, cancel := chromedp.NewContext(e.browserCtx, chromedp.WithNewBrowserContext())
		defer cancel()
		tctx, tcancel := context.WithTimeout(ctx, pageTimeout)
		defer tcancel()
		for _, path := range []string{"/", "/captures"} {
			resp, err := chromedp.Run(tctx, chromedp.NavigateResponse(c.base+path))
			if err != nil {
				t.Fatalf("browser GET %s: %v", path, err)
			}
			if resp.Status != http.StatusForbidden {
				t.Errorf("browser GET %s without the token: HTTP %d, want 403", path, resp.Status)
			}
		}
	}
}

// captureCount is how many captures the controller lists.
func (e *env) captureCount(t *testing.T) int {
	t.Helper()
	var list struct {
		Captures []struct {
			ID string `json:"id"`
		} `json:"captures"`
	}
	if err := e.ctlJSON(&list, "capture", "list"); err != nil {
		t.Fatal(err)
	}
	return len(list.Captures)
}
