// Package console is livedumpctl's web console: a local web server that
// shows the fleet, captures, flame graphs of their stacks, dumps and the
// audit log, and creates and cancels captures.
//
// It adds no way into the controller. It runs on the operator's machine,
// listens on loopback only, and every page is made from FleetService calls
// with the operator's own certificate, so the controller authorises and
// audits each of them as that operator, exactly as it does the CLI's. What
// the console hides from a viewer (the create and cancel buttons, dump
// downloads, the audit log) it hides for readability only: a viewer who
// posts anyway is refused by the controller.
//
// Since any local process and any web page the operator visits can send
// requests to a loopback port, the server itself trusts nothing it is sent:
//
//   - A random token is required. The URL the console prints carries it as
//     ?token=; the first request with it sets a cookie (HttpOnly,
//     SameSite=Strict, named after the port, so consoles on two ports do not
//     share it) and redirects to the same page without it, so it does not
//     stay in the address bar or in the history. This is how notebook
//     servers do it.
//   - The Host header must be the loopback address or localhost with the
//     console's port, which defeats DNS rebinding.
//   - A POST must carry a form field csrf, derived from the token (every
//     page has it in <meta name="csrf">), and, when the browser sends an
//     Origin, the console's own.
//   - Responses forbid framing, sniffing, referrers and any script or style
//     not served by the console itself (Content-Security-Policy).
//   - Request bodies, live streams and downloads are bounded.
//
// Every refusal is logged with its reason.
package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Limits on what a browser (or anything else on the machine) can make the
// console do.
const (
	// MaxFormBytes bounds a POST body: a capture form is a few hundred
	// bytes; a raw D script is not accepted from the console.
	MaxFormBytes = 64 << 10
	// MaxLiveStreams bounds the live pages open at once (each holds a
	// WatchCapture stream on the controller).
	MaxLiveStreams = 8
	// MaxDownloads bounds dump downloads running at once.
	MaxDownloads = 4
	// MaxFlameEvents bounds the events read for one flame graph.
	MaxFlameEvents = 100_000
	// MaxFlameGraphs bounds the flame graphs drawn at once (each may hold
	// MaxFlameEvents events in memory while it is drawn).
	MaxFlameGraphs = 2
	// pageRows bounds the rows of a table read in one page load.
	pageRows = 1000
)

// Config configures a console.
type Config struct {
	// Client calls the controller with the operator's certificate.
	Client livedumpv1.FleetServiceClient
	// Operator is the identity in that certificate. It decides only what
	// the pages offer; the controller decides what is allowed.
	Operator pki.Identity
	// Controller is the controller's address, shown on every page.
	Controller string
	// Timeout bounds each controller call (streams excepted).
	Timeout time.Duration
	// Token is the URL token; empty picks a random one.
	Token string
	// Log receives refusals and failures.
	Log *slog.Logger
}

// Server is a console. Create it with New, then Serve.
type Server struct {
	cfg      Config
	token    string
	csrf     string
	pages    pageSet
	port     atomic.Int32 // set by Serve: the Host header must name it
	live     chan struct{}
	download chan struct{}
	flames   chan struct{}
	mux      *http.ServeMux
}

// New checks cfg and makes a server.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil {
		return nil, errors.New("console: no controller client")
	}
	if err := cfg.Operator.Validate(); err != nil || cfg.Operator.Kind != pki.KindOperator {
		return nil, fmt.Errorf("console: the certificate is not an operator's (%s)", cfg.Operator)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	token := cfg.Token
	if token == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		token = base64.RawURLEncoding.EncodeToString(b)
	}
	if len(token) < 32 {
		return nil, errors.New("console: token: at least 32 characters")
	}
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("livedump console csrf"))
	csrf := hex.EncodeToString(mac.Sum(nil))
	pages, err := parsePages(csrf)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, token: token, csrf: csrf, pages: pages,
		live: make(chan struct{}, MaxLiveStreams), download: make(chan struct{}, MaxDownloads),
		flames: make(chan struct{}, MaxFlameGraphs),
	}
	s.routes()
	return s, nil
}

// Token is the URL token.
func (s *Server) Token() string { return s.token }

// URL is the address to open: the console's root with the token.
func (s *Server) URL(addr net.Addr) string {
	return "http://" + addr.String() + "/?token=" + url.QueryEscape(s.token)
}

// Listen opens a loopback listener on addr (host:port, port 0 for a free
// one). Any other host is refused: the console must not be reachable from
// the network.
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %q: want 127.0.0.1:PORT or [::1]:PORT: %v", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("listen %q: the console listens on a loopback address only (127.0.0.1 or ::1)", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("listen %q: port %q: want 0-65535", addr, port)
	}
	return net.Listen("tcp", net.JoinHostPort(ip.String(), port))
}

// Serve serves on ln until ctx ends. ln must be a loopback listener (from
// Listen).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return fmt.Errorf("console: %s is not a loopback TCP address", ln.Addr())
	}
	s.port.Store(int32(tcp.Port))
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// cookieName is per port: browsers share cookies between the ports of one
// host, and a viewer's console must not take an admin console's cookie.
func (s *Server) cookieName() string {
	return "livedump_console_" + strconv.Itoa(int(s.port.Load()))
}

// ServeHTTP checks every request (host, token, CSRF) before routing it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: with no-referrer Chromium sends "Origin:
	// null" on form posts, which the Origin check must refuse. The token
	// never stays in a URL (see above), so a same-origin referrer holds none.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")

	if !s.hostAllowed(r.Host) {
		s.refuse(w, r, http.StatusForbidden, "the Host header must be 127.0.0.1 or localhost with the console's port", "host "+strconv.Quote(r.Host))
		return
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		if !s.tokenOK(tok) {
			s.refuse(w, r, http.StatusForbidden, "wrong token: open the URL livedumpctl ui printed", "bad URL token")
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: s.cookieName(), Value: s.token, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode,
		})
		q := r.URL.Query()
		q.Del("token")
		u := *r.URL
		u.RawQuery = q.Encode()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
	} else if c, err := r.Cookie(s.cookieName()); err != nil || !s.tokenOK(c.Value) {
		s.refuse(w, r, http.StatusForbidden, "no token: open the URL livedumpctl ui printed (it ends in ?token=…)", "no token")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if r.Method != http.MethodPost {
			s.refuse(w, r, http.StatusMethodNotAllowed, "method not allowed", "method "+r.Method)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !s.originAllowed(o) {
			s.refuse(w, r, http.StatusForbidden, "cross-origin request refused", "origin "+strconv.Quote(o))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
		if err := r.ParseForm(); err != nil {
			s.refuse(w, r, http.StatusRequestEntityTooLarge, "form: "+err.Error(), "form: "+err.Error())
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1 {
			s.refuse(w, r, http.StatusForbidden, "missing or wrong csrf field: reload the page and try again", "bad csrf")
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

// hostAllowed accepts 127.0.0.1, [::1] and localhost with the console's
// port, and nothing else (a rebinding DNS name would be evil.example:PORT).
func (s *Server) hostAllowed(hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || port != strconv.Itoa(int(s.port.Load())) {
		return false
	}
	switch host {
	case "127.0.0.1", "::1", "localhost":
		return true
	}
	return false
}

func (s *Server) originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Scheme == "http" && s.hostAllowed(u.Host)
}

// refuse answers a request the console itself turns away, and logs why.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg, reason string) {
	s.cfg.Log.Warn("console: request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", code, "reason", reason)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, "livedump console: "+msg)
}

// can reports whether the operator's role allows min: what the pages offer.
func (s *Server) can(min pki.Role) bool { return s.cfg.Operator.Role.Allows(min) }

// call bounds one controller call.
func (s *Server) call(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.Timeout)
}
