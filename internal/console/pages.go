package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/stack"
)

// pageSet holds one template per page, each with the layout.
type pageSet map[string]*template.Template

var funcs = template.FuncMap{
	"time": func(ts *timestamppb.Timestamp) string {
		if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
			return "—"
		}
		return ts.AsTime().UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(ts *timestamppb.Timestamp) string {
		if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
			return "never"
		}
		return humanize.Time(ts.AsTime())
	},
	"iso": func(ts *timestamppb.Timestamp) string {
		if ts == nil {
			return ""
		}
		return ts.AsTime().UTC().Format(time.RFC3339)
	},
	"bytes": func(n any) string {
		switch v := n.(type) {
		case int64:
			return humanize.IBytes(uint64(max(v, 0)))
		case uint64:
			return humanize.IBytes(v)
		}
		return fmt.Sprint(n)
	},
	"name":  enumName,
	"frame": stack.Frame,
	"labels": func(m map[string]string) []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			if k == "hostname" || k == "os.build" {
				continue // shown in their own columns
			}
			out = append(out, k+"="+v)
		}
		sort.Strings(out)
		return out
	},
	"join":   strings.Join,
	"status": ntstatus.Describe,
	"hex":    func(code uint32) string { return fmt.Sprintf("0x%X", code) },
	"hex8":   func(code uint32) string { return fmt.Sprintf("0x%08X", code) },
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"sortedCounts": func(m map[string]int64) []countRow {
		out := make([]countRow, 0, len(m))
		for k, v := range m {
			out = append(out, countRow{k, v})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	},
}

type countRow struct {
	Name  string
	Count int64
}

// enumName is an enum's short name ("online", "hash-only").
func enumName(e protoreflect.Enum) string { return enumname.Of(e, "-") }

func parsePages(csrf string) (pageSet, error) {
	fm := template.FuncMap{
		"csrf": func() string { return csrf },
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, fmt.Errorf("dict: odd arguments")
			}
			m := map[string]any{}
			for i := 0; i < len(kv); i += 2 {
				k, ok := kv[i].(string)
				if !ok {
					return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
				}
				m[k] = kv[i+1]
			}
			return m, nil
		},
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	ps := pageSet{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" || base == "partials" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).Funcs(fm).ParseFS(assets, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		ps[base] = t
	}
	return ps, nil
}

// view is what every page template gets.
type view struct {
	Title      string
	Nav        string // the nav entry to mark current
	Operator   string
	Role       string
	Controller string
	CSRF       string
	CanOperate bool // role operator or admin: create, cancel, download
	IsAdmin    bool
	Data       any
}

// render writes page name with data; a template error is a 500 that is
// logged (it is a bug, never the user's doing).
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name, title, nav string, data any) {
	t, ok := s.pages[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	v := view{
		Title: title, Nav: nav, Operator: s.cfg.Operator.Name, Role: string(s.cfg.Operator.Role),
		Controller: s.cfg.Controller, CSRF: s.csrf,
		CanOperate: s.can(pki.RoleOperator), IsAdmin: s.can(pki.RoleAdmin), Data: data,
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.cfg.Log.Error("console: rendering a page", "page", name, "err", err)
		http.Error(w, "livedump console: could not render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// errorView is the data of the error page.
type errorView struct {
	Code    int
	What    string // what the console was doing
	Message string // the controller's (or the console's) reason
	Back    string // a link back, if any
}

// fail shows an error page for err from a controller call made to do what.
// The controller's refusals keep their meaning: permission denied is 403,
// a bad request 400, not found 404.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, what string, err error, back string) {
	code := http.StatusBadGateway
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
		switch st.Code() {
		case codes.PermissionDenied, codes.Unauthenticated:
			code = http.StatusForbidden
			msg = "permission denied: " + msg
		case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.AlreadyExists:
			code = http.StatusBadRequest
		case codes.NotFound:
			code = http.StatusNotFound
		case codes.ResourceExhausted:
			code = http.StatusTooManyRequests
		case codes.DeadlineExceeded:
			code = http.StatusGatewayTimeout
			msg = "the controller did not answer in time: " + msg
		case codes.Unavailable:
			msg = "the controller is unreachable: " + msg
		}
		if code != http.StatusBadRequest && code != http.StatusNotFound {
			s.cfg.Log.Warn("console: controller call failed", "what", what, "code", st.Code().String(), "err", st.Message())
		}
	}
	s.render(w, r, code, "error", "Error", "", errorView{Code: code, What: what, Message: msg, Back: back})
}

// badInput shows the form error page (400) for a field.
func (s *Server) badInput(w http.ResponseWriter, r *http.Request, what string, err error, back string) {
	s.render(w, r, http.StatusBadRequest, "error", "Error", "", errorView{Code: http.StatusBadRequest, What: what, Message: err.Error(), Back: back})
}
