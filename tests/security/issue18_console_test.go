package security

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/console"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// syncBuffer collects a console's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// webConsole is a running console (livedumpctl ui) and a browser-like
// client that opened its URL: cookies kept, redirects not followed.
type webConsole struct {
	t      *testing.T
	base   string // http://127.0.0.1:PORT
	url    string // the printed URL, with the token
	token  string
	client *http.Client
	log    *syncBuffer
	csrf   string
}

// startConsole runs a console for client, holding an operator certificate
// of role, and opens its URL.
func startConsole(t *testing.T, client livedumpv1.FleetServiceClient, role pki.Role) *webConsole {
	t.Helper()
	logs := &syncBuffer{}
	srv, err := console.New(console.Config{
		Client: client, Operator: pki.OperatorIdentity(role, "test-"+string(role)), Controller: "controller.test:7443",
		Timeout: 10 * time.Second, Log: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := console.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	jar, _ := cookiejar.New(nil)
	w := &webConsole{
		t: t, base: "http://" + ln.Addr().String(), url: srv.URL(ln.Addr()), token: srv.Token(), log: logs,
		client: &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
	resp, err := w.client.Get(w.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("opening the console URL: %s, Location %q; want 303 to / (the token out of the address bar)", resp.Status, resp.Header.Get("Location"))
	}
	_, body := w.get("/agents")
	m := regexp.MustCompile(`<meta name="csrf" content="([0-9a-f]{64})">`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf meta on /agents: %s", body)
	}
	w.csrf = m[1]
	return w
}

// do sends req with the console's cookies and returns the status and body.
func (w *webConsole) do(req *http.Request) (int, string) {
	w.t.Helper()
	resp, err := w.client.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (w *webConsole) get(path string) (int, string) {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.base+path, nil)
	return w.do(req)
}

func (w *webConsole) post(path string, form url.Values) (int, string) {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, w.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return w.do(req)
}

// captureForm is the console's create form for a stacks capture on sel.
func captureForm(csrf, sel string) url.Values {
	return url.Values{
		"csrf": {csrf}, "selector": {sel}, "processes": {"ms-teams.exe"}, "statuses": {"STATUS_INVALID_PARAMETER"},
		"action": {"stacks"}, "expire": {"10m"}, "ustack": {"10"}, "lkd_mode": {"0"}, "upload": {"full"}, "force": {"on"},
	}
}

func captureCount(t *testing.T, c *harness.Controller) int {
	t.Helper()
	cs, err := c.Store().ListCaptures(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}

// TestAttacker6_ConsoleRefusesRequestsWithoutTheToken: another local user or
// process, or a web page the operator visits, sends requests to the
// console's loopback port without the URL token (or with a wrong one, or
// with another console's). Every page, the live stream, the download and
// the create are refused with 403, each refusal is logged, and the
// controller is never called: nothing is created.
func TestAttacker6_ConsoleRefusesRequestsWithoutTheToken(t *testing.T) {
	c := harness.StartController(t, nil)
	w := startConsole(t, c.Fleet(t, pki.RoleAdmin), pki.RoleAdmin)
	other := startConsole(t, c.Fleet(t, pki.RoleAdmin), pki.RoleAdmin)
	bare := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	paths := []string{"/", "/agents", "/agents/abcdef0123456789", "/captures", "/captures/new", "/captures/c-1", "/captures/c-1/live",
		"/captures/c-1/flamegraph", "/captures/c-1/flamegraph.svg", "/dumps/0123456789abcdef/download", "/audit", "/static/live.js"}
	try := func(name string, req *http.Request) {
		t.Helper()
		resp, err := bare.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", name, req.URL, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s %s = %s, want 403 Forbidden (%s)", name, req.Method, req.URL.Path, resp.Status, b)
		}
		if resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s: %s set a cookie on a refused request", name, req.URL.Path)
		}
	}
	for _, p := range paths {
		req, _ := http.NewRequest(http.MethodGet, w.base+p, nil)
		try("no token", req)
		req, _ = http.NewRequest(http.MethodGet, w.base+p+"?token=guess", nil)
		try("wrong token", req)
		req, _ = http.NewRequest(http.MethodGet, w.base+p+"?token="+url.QueryEscape(other.token), nil)
		try("another console's token", req)
		req, _ = http.NewRequest(http.MethodGet, w.base+p, nil)
		port := strings.TrimPrefix(w.base, "http://127.0.0.1:")
		req.AddCookie(&http.Cookie{Name: "livedump_console_" + port, Value: other.token})
		try("another console's token as the cookie", req)
	}
	req, _ := http.NewRequest(http.MethodPost, w.base+"/captures", strings.NewReader(captureForm(w.csrf, "site=lab").Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	try("create without the token (csrf known)", req)

	if n := captureCount(t, c); n != 0 {
		t.Fatalf("%d captures stored after refused creates", n)
	}
	if got := strings.Count(w.log.String(), "console: request refused"); got < 4*len(paths)+1 {
		t.Fatalf("%d refusals logged, want at least %d:\n%s", got, 4*len(paths)+1, w.log.String())
	}
	// The cookie the real URL set is per port: the other console's cookie
	// jar does not open this one.
	if code, _ := other.get("/agents"); code != http.StatusOK {
		t.Fatalf("the other console with its own cookie: %d", code)
	}
}

// TestAttacker6_ConsoleRefusesForeignHostsOriginsAndForgedForms: a web page
// the operator visits tries the console through DNS rebinding (its own
// name resolving to 127.0.0.1, so the browser sends the console's cookie…
// never, but a Host header of its own), a cross-site form post (no csrf
// field, or a wrong one), and a post from a foreign Origin. All refused,
// nothing created.
func TestAttacker6_ConsoleRefusesForeignHostsOriginsAndForgedForms(t *testing.T) {
	c := harness.StartController(t, nil)
	c.EnrollRaw(t, "LAB-01", map[string]string{"site": "lab"})
	w := startConsole(t, c.Fleet(t, pki.RoleAdmin), pki.RoleAdmin)

	for _, host := range []string{"evil.example:" + strings.TrimPrefix(w.base, "http://127.0.0.1:"), "127.0.0.1", "127.0.0.1:1", "localhost.evil.example:80"} {
		req, _ := http.NewRequest(http.MethodGet, w.base+"/agents", nil)
		req.Host = host
		if code, body := w.do(req); code != http.StatusForbidden || !strings.Contains(body, "Host header") {
			t.Errorf("Host %q: %d %q, want 403 naming the Host header", host, code, body)
		}
	}
	form := captureForm(w.csrf, "site=lab")
	form.Del("csrf")
	if code, body := w.post("/captures", form); code != http.StatusForbidden || !strings.Contains(body, "csrf") {
		t.Errorf("create without csrf: %d %q, want 403 naming csrf", code, body)
	}
	form.Set("csrf", strings.Repeat("0", 64))
	if code, _ := w.post("/captures", form); code != http.StatusForbidden {
		t.Errorf("create with a wrong csrf: %d, want 403", code)
	}
	form.Set("csrf", w.csrf)
	req, _ := http.NewRequest(http.MethodPost, w.base+"/captures", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if code, body := w.do(req); code != http.StatusForbidden || !strings.Contains(body, "cross-origin") {
		t.Errorf("create from a foreign Origin: %d %q, want 403", code, body)
	}
	// A sandboxed frame posts with the opaque origin "null".
	req, _ = http.NewRequest(http.MethodPost, w.base+"/captures", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "null")
	if code, _ := w.do(req); code != http.StatusForbidden {
		t.Errorf("create from Origin null: %d, want 403", code)
	}
	// Methods other than GET and POST are refused too.
	req, _ = http.NewRequest(http.MethodDelete, w.base+"/captures/c-1", nil)
	if code, _ := w.do(req); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d, want 405", code)
	}
	if n := captureCount(t, c); n != 0 {
		t.Fatalf("%d captures stored after forged forms", n)
	}
	// The control: the same form, from the console's own page, creates.
	req, _ = http.NewRequest(http.MethodPost, w.base+"/captures", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", w.base)
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/captures/c-") {
		t.Fatalf("the console's own create: %s → %q", resp.Status, resp.Header.Get("Location"))
	}
	if n := captureCount(t, c); n != 1 {
		t.Fatalf("%d captures after the real create, want 1", n)
	}
}

// TestAttacker4_ViewerConsoleOffersNothingAndTheControllerRefuses: a
// viewer's console shows no create, cancel, download or audit; a viewer who
// posts the create form anyway (or asks for a dump, an agent's log or the
// audit log) is
// refused by the controller, which audits the refusal under the viewer's
// own identity: the console adds no way in.
func TestAttacker4_ViewerConsoleOffersNothingAndTheControllerRefuses(t *testing.T) {
	c := harness.StartController(t, nil)
	thief := c.EnrollRaw(t, "LAB-01", map[string]string{"site": "lab"})
	st := evConnect(t, thief, "LAB-01")
	capID := evCapture(t, c.Fleet(t, pki.RoleOperator), "site=lab")
	st.events(evEvent(thief.ID, capID))
	v := startConsole(t, c.Fleet(t, pki.RoleViewer), pki.RoleViewer)

	for _, p := range []string{"/agents", "/agents/" + thief.ID, "/captures", "/captures/" + capID, "/captures/" + capID + "/flamegraph"} {
		code, body := v.get(p)
		if code != http.StatusOK {
			t.Fatalf("viewer GET %s: %d: %s", p, code, body)
		}
		for _, offer := range []string{`id="new-capture"`, `id="create"`, `id="cancel-form"`, `class="download"`, `id="nav-audit"`, `id="agent-log-link"`} {
			if strings.Contains(body, offer) {
				t.Errorf("viewer's %s offers %s", p, offer)
			}
		}
	}
	before := captureCount(t, c)
	code, body := v.post("/captures", captureForm(v.csrf, "site=lab"))
	if code != http.StatusForbidden || !strings.Contains(body, "permission denied") || !strings.Contains(body, "role viewer may not call FleetService/CreateCapture") {
		t.Fatalf("viewer's create: %d, want 403 with the controller's refusal: %s", code, body)
	}
	code, body = v.post("/captures/preview", captureForm(v.csrf, "site=lab"))
	if code != http.StatusForbidden || !strings.Contains(body, "permission denied") {
		t.Fatalf("viewer's preview: %d, want 403: %s", code, body)
	}
	code, _ = v.post("/captures/"+capID+"/cancel", url.Values{"csrf": {v.csrf}})
	if code != http.StatusForbidden {
		t.Fatalf("viewer's cancel: %d, want 403", code)
	}
	if code, _ = v.get("/dumps/0123456789abcdef/download"); code != http.StatusForbidden {
		t.Fatalf("viewer's download: %d, want 403", code)
	}
	if code, body = v.get("/agents/" + thief.ID + "?log=1"); code != http.StatusForbidden || !strings.Contains(body, "log_lines") {
		t.Fatalf("viewer's agent log: %d, want 403 naming log_lines: %s", code, body)
	}
	if code, _ = v.get("/audit"); code != http.StatusForbidden {
		t.Fatalf("viewer's audit page: %d, want 403", code)
	}
	if n := captureCount(t, c); n != before {
		t.Fatalf("captures: %d, want %d", n, before)
	}
	cp, err := c.Store().GetCapture(context.Background(), capID)
	if err != nil || cp.State != "active" {
		t.Fatalf("the capture after the viewer's cancel: %q %v", cp.State, err)
	}
	entries, err := c.Store().ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]bool{}
	for _, e := range entries {
		if e.Actor == "operator/viewer/test-viewer" && e.Outcome != "ok" {
			refused[e.Action] = true
		}
	}
	for _, a := range []string{"FleetService/CreateCapture", "FleetService/CancelCapture", "FleetService/GetDump", "FleetService/ListAudit", "FleetService/DescribeAgent"} {
		if !refused[a] {
			t.Errorf("no refused %s audited for the viewer (audited: %v)", a, refused)
		}
	}
}

// TestAttacker2_HostileStacksCannotScriptTheConsole: a stolen agent identity
// sends events whose frames hold markup and script. The capture page, the
// live stream, the flame graph page and its SVG show them as text: no
// element of the attacker's reaches the operator's browser, which holds a
// console that can arm captures fleet-wide.
func TestAttacker2_HostileStacksCannotScriptTheConsole(t *testing.T) {
	c := harness.StartController(t, nil)
	thief := c.EnrollRaw(t, "LAB-01", map[string]string{"site": "lab"})
	st := evConnect(t, thief, "LAB-01")
	capID := evCapture(t, c.Fleet(t, pki.RoleOperator), "site=lab")
	hostile := []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(2)>`, `</title><script>alert(3)</script>`, `]]><svg onload=alert(4)>`}
	ev := evEvent(thief.ID, capID)
	ev.UserFrames = []*livedumpv1.Frame{
		{Module: hostile[0], Function: hostile[1], Offset: 4},
		{Module: "ntdll", Function: hostile[2]},
		{Module: hostile[3], Function: "Run"},
	}
	if refused := st.events(ev); len(refused) != 0 {
		t.Fatalf("the controller refused the event (%v): the attack needs it stored", refused)
	}
	w := startConsole(t, c.Fleet(t, pki.RoleAdmin), pki.RoleAdmin)
	// Markup, not text: an element of the attacker's, or an attribute
	// inside one of the page's own elements.
	bad := regexp.MustCompile(`(?i)<script|<img|<svg[^>]*onload|"[^"<>]*onerror=`)
	for _, p := range []string{"/captures/" + capID, "/captures/" + capID + "/flamegraph", "/captures/" + capID + "/flamegraph.svg"} {
		code, body := w.get(p)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, code, body)
		}
		// The page's own script tag is the only one.
		body = strings.Replace(body, `<script src="/static/live.js" defer></script>`, "", 1)
		if m := bad.FindString(body); m != "" {
			t.Errorf("%s carries the attacker's markup %q", p, m)
		}
		if !strings.Contains(body, "alert(1)") {
			t.Errorf("%s does not show the hostile frame as text", p)
		}
	}
	// The live stream: JSON in an SSE data line, with < > & escaped.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"/captures/"+capID+"/live", nil)
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "event: trigger") || !strings.Contains(got.String(), "\n\n") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		if strings.Count(got.String(), "event: trigger") > 0 && strings.HasSuffix(got.String(), "\n\n") {
			break
		}
	}
	if !strings.Contains(got.String(), "event: trigger") {
		t.Fatalf("no trigger on the live stream: %q", got.String())
	}
	if strings.ContainsAny(strings.SplitN(got.String(), "event: trigger", 2)[1], "<>") {
		t.Fatalf("the live stream carries raw markup: %q", got.String())
	}
}

// fakeDumps is a compromised (or broken) controller's GetDump: it announces
// a dump and sends other bytes.
type fakeDumps struct {
	livedumpv1.FleetServiceClient
	dump   *livedumpv1.Dump
	chunks [][]byte
	err    error // sent after the chunks, if set
}

type fakeDumpStream struct {
	grpc.ClientStream
	msgs []*livedumpv1.GetDumpResponse
	err  error
}

func (f *fakeDumpStream) Recv() (*livedumpv1.GetDumpResponse, error) {
	if len(f.msgs) == 0 {
		if f.err != nil {
			return nil, f.err
		}
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}
func (f *fakeDumpStream) Header() (metadata.MD, error) { return nil, nil }

func (f *fakeDumps) GetDump(ctx context.Context, in *livedumpv1.GetDumpRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[livedumpv1.GetDumpResponse], error) {
	s := &fakeDumpStream{err: f.err}
	s.msgs = append(s.msgs, &livedumpv1.GetDumpResponse{Msg: &livedumpv1.GetDumpResponse_Dump{Dump: f.dump}})
	for _, c := range f.chunks {
		s.msgs = append(s.msgs, &livedumpv1.GetDumpResponse{Msg: &livedumpv1.GetDumpResponse_Chunk{Chunk: c}})
	}
	return s, nil
}

func (f *fakeDumps) ListAgents(ctx context.Context, in *livedumpv1.ListAgentsRequest, _ ...grpc.CallOption) (*livedumpv1.ListAgentsResponse, error) {
	return &livedumpv1.ListAgentsResponse{}, nil
}

// TestAttacker5_ConsoleDownloadThatDoesNotVerifyIsCutShort: a compromised
// controller (or a corrupted store) serves a dump whose bytes are not the
// ones whose SHA-256 was verified at upload, sends too many or too few, or
// breaks the stream. The console holds the last bytes back until the hash
// matches, so the browser gets a truncated response (a failed download),
// never a complete file with the wrong content; the good dump downloads
// whole, with its digest announced.
func TestAttacker5_ConsoleDownloadThatDoesNotVerifyIsCutShort(t *testing.T) {
	good := bytes.Repeat([]byte("PAGEDU64"), 64<<10)
	sum := sha256.Sum256(good)
	dump := func() *livedumpv1.Dump {
		return &livedumpv1.Dump{Id: "0123456789abcdef", Hostname: "LAB-01/../../x", Size: int64(len(good)), Sha256: hex.EncodeToString(sum[:]), State: livedumpv1.DumpState_DUMP_STATE_UPLOADED}
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	half := len(good) / 2
	cases := []struct {
		name   string
		chunks [][]byte
		err    error
		ok     bool
	}{
		{"the verified bytes", [][]byte{good[:half], good[half:]}, nil, true},
		{"one bit changed in the last chunk", [][]byte{flipped[:half], flipped[half:]}, nil, false},
		{"one bit changed, one chunk", [][]byte{flipped}, nil, false},
		{"too few bytes", [][]byte{good[:half]}, nil, false},
		{"too many bytes", [][]byte{good, []byte("x")}, nil, false},
		{"the stream breaks", [][]byte{good[:half]}, status.Error(codes.Unavailable, "gone"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := startConsole(t, &fakeDumps{dump: dump(), chunks: tc.chunks, err: tc.err}, pki.RoleOperator)
			req, _ := http.NewRequest(http.MethodGet, w.base+"/dumps/0123456789abcdef/download", nil)
			resp, err := w.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, rerr := io.ReadAll(resp.Body)
			got := sha256.Sum256(body)
			if tc.ok {
				if rerr != nil || got != sum {
					t.Fatalf("good dump: %d bytes, err %v, sha256 %x", len(body), rerr, got)
				}
				if d := resp.Header.Get("Repr-Digest"); !strings.HasPrefix(d, "sha-256=:") {
					t.Fatalf("Repr-Digest %q", d)
				}
				if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="LAB-01_.._.._x-0123456789abcdef.dmp"` {
					t.Fatalf("Content-Disposition %q: the hostname must not make a path", cd)
				}
				return
			}
			if rerr == nil && got == sum {
				t.Fatal("a dump that does not verify was delivered whole")
			}
			if rerr == nil && len(body) == len(good) {
				t.Fatalf("the browser got all %d bytes of a dump that does not verify (no error)", len(body))
			}
			if !errors.Is(rerr, io.ErrUnexpectedEOF) && rerr == nil {
				t.Fatalf("read: %v after %d bytes, want a truncated response", rerr, len(body))
			}
			if !strings.Contains(w.log.String(), "dump download aborted") {
				t.Fatalf("no abort logged: %s", w.log.String())
			}
		})
	}
}

// TestAttacker6_ConsoleBoundsWhatABrowserCanTake: a page (with the token,
// e.g. a runaway tab) or a local process posts a huge form, opens many live
// streams; the console refuses past its bounds, and it will not listen
// beyond loopback.
func TestAttacker6_ConsoleBoundsWhatABrowserCanTake(t *testing.T) {
	c := harness.StartController(t, nil)
	thief := c.EnrollRaw(t, "LAB-01", map[string]string{"site": "lab"})
	evConnect(t, thief, "LAB-01")
	capID := evCapture(t, c.Fleet(t, pki.RoleOperator), "site=lab")
	w := startConsole(t, c.Fleet(t, pki.RoleAdmin), pki.RoleAdmin)

	form := captureForm(w.csrf, "site=lab")
	form.Set("processes", strings.Repeat("a.exe,", console.MaxFormBytes/6+10))
	if code, _ := w.post("/captures/preview", form); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a %d KiB form: %d, want 413", len(form.Encode())>>10, code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var open []*http.Response
	for i := 0; i < console.MaxLiveStreams; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"/captures/"+capID+"/live", nil)
		resp, err := w.client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("live stream %d: %v %v", i, err, resp)
		}
		open = append(open, resp)
	}
	if code, body := w.get("/captures/" + capID + "/live"); code != http.StatusServiceUnavailable {
		t.Fatalf("live stream %d: %d %s, want 503", console.MaxLiveStreams+1, code, body)
	}
	open[0].Body.Close()
	cancel()
	for _, r := range open {
		r.Body.Close()
	}
	harness.Eventually(t, 10*time.Second, "a live stream slot freed", func() bool {
		req, _ := http.NewRequest(http.MethodGet, w.base+"/captures/"+capID+"/live", nil)
		ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel2()
		resp, err := w.client.Do(req.WithContext(ctx2))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "example.com:0", "[::]:0"} {
		if ln, err := console.Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) accepted: the console must listen on loopback only", addr)
		}
	}
	// The bad IDs never reach the controller.
	for _, p := range []string{"/captures/..%2f..%2fetc/flamegraph", "/dumps/ZZZ/download", "/agents/" + strings.Repeat("a", 100)} {
		if code, _ := w.get(p); code != http.StatusBadRequest && code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 400 or 404", p, code)
		}
	}
}

// slowEvents is a controller whose ListEvents answers only when released:
// flame graphs being drawn.
type slowEvents struct {
	livedumpv1.FleetServiceClient
	started chan struct{}
	release chan struct{}
}

func (f *slowEvents) ListAgents(ctx context.Context, in *livedumpv1.ListAgentsRequest, _ ...grpc.CallOption) (*livedumpv1.ListAgentsResponse, error) {
	return &livedumpv1.ListAgentsResponse{}, nil
}

func (f *slowEvents) ListEvents(ctx context.Context, in *livedumpv1.ListEventsRequest, _ ...grpc.CallOption) (*livedumpv1.ListEventsResponse, error) {
	f.started <- struct{}{}
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &livedumpv1.ListEventsResponse{}, nil
}

// TestAttacker6_ConsoleDrawsFewFlameGraphsAtOnce: a page asks for many
// flame graphs at once (each may read 100,000 events); past
// console.MaxFlameGraphs the console answers 503 without reading any.
func TestAttacker6_ConsoleDrawsFewFlameGraphsAtOnce(t *testing.T) {
	f := &slowEvents{started: make(chan struct{}, 16), release: make(chan struct{})}
	w := startConsole(t, f, pki.RoleViewer)
	codes := make(chan int, console.MaxFlameGraphs)
	for i := 0; i < console.MaxFlameGraphs; i++ {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, w.base+"/captures/c-1/flamegraph.svg", nil)
			resp, err := w.client.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
		<-f.started
	}
	if code, body := w.get("/captures/c-1/flamegraph.svg"); code != http.StatusServiceUnavailable {
		t.Fatalf("flame graph %d while %d are drawn: %d %s, want 503", console.MaxFlameGraphs+1, console.MaxFlameGraphs, code, body)
	}
	select {
	case <-f.started:
		t.Fatal("the refused flame graph read events")
	default:
	}
	close(f.release)
	for i := 0; i < console.MaxFlameGraphs; i++ {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("a flame graph drawn within the bound: %d", c)
		}
	}
	if code, _ := w.get("/captures/c-1/flamegraph.svg"); code != http.StatusOK {
		t.Fatalf("a flame graph once the others finished: %d", code)
	}
}
