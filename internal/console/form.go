package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// captureForm is the create form's values as typed, so that a form shown
// again (after a preview or an error) holds exactly what was sent.
type captureForm struct {
	Selector          string
	Processes         string
	Syscalls          string
	Statuses          string
	Action            string // stacks, dump or on-demand
	UStack            string
	KStack            bool
	PerAgent          string
	MaxDumps          string
	DumpsPerSignature string
	RolloutRate       string
	Expire            string
	LkdMode           string
	Upload            string
	Force             bool
}

// defaultForm is a new capture's form: the CLI's defaults, a 1 h expiry.
func defaultForm() captureForm {
	return captureForm{Action: "stacks", UStack: "10", Expire: "1h", LkdMode: "0", Upload: "full"}
}

func readForm(v url.Values) captureForm {
	return captureForm{
		Selector: strings.TrimSpace(v.Get("selector")), Processes: strings.TrimSpace(v.Get("processes")),
		Syscalls: strings.TrimSpace(v.Get("syscalls")), Statuses: strings.TrimSpace(v.Get("statuses")),
		Action: strings.TrimSpace(v.Get("action")), UStack: strings.TrimSpace(v.Get("ustack")),
		KStack: v.Get("kstack") == "on", PerAgent: strings.TrimSpace(v.Get("per_agent")),
		MaxDumps: strings.TrimSpace(v.Get("max_dumps")), DumpsPerSignature: strings.TrimSpace(v.Get("dumps_per_signature")),
		RolloutRate: strings.TrimSpace(v.Get("rollout_rate")), Expire: strings.TrimSpace(v.Get("expire")),
		LkdMode: strings.TrimSpace(v.Get("lkd_mode")), Upload: strings.TrimSpace(v.Get("upload")),
		Force: v.Get("force") == "on",
	}
}

// fieldError names the form field a value was refused for.
type fieldError struct {
	Field  string
	Reason string
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Reason }

// list splits a comma-separated field. An empty item (a,,b) is refused,
// never dropped.
func list(field, s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, &fieldError{field, fmt.Sprintf("%q has an empty item: separate names with single commas", s)}
		}
		out = append(out, item)
	}
	return out, nil
}

// number parses an optional unsigned field; empty is 0 (the default).
func number(field, s string, lo, hi uint64) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < lo || n > hi {
		return 0, &fieldError{field, fmt.Sprintf("%q: want a whole number from %d to %d", s, lo, hi)}
	}
	return uint32(n), nil
}

// spec turns the form into a capture spec. It checks the form's own syntax
// (each error names its field); the controller checks the rest, as it does
// for the CLI, and its refusals are shown as they come.
func (f captureForm) spec() (*livedumpv1.CaptureSpec, error) {
	for _, kv := range [][2]string{{"selector", f.Selector}, {"processes", f.Processes}, {"syscalls", f.Syscalls},
		{"statuses", f.Statuses}, {"expire", f.Expire}} {
		if i := strings.IndexFunc(kv[1], unicode.IsControl); i >= 0 {
			return nil, &fieldError{kv[0], fmt.Sprintf("contains the control character %U: a value is used whole or refused", []rune(kv[1][i:])[0])}
		}
	}
	if f.Selector == "" {
		return nil, &fieldError{"selector", "required: the machines to arm, e.g. role=vdi"}
	}
	if _, err := selector.Parse(f.Selector); err != nil {
		return nil, &fieldError{"selector", err.Error()}
	}
	spec := &livedumpv1.CaptureSpec{Selector: f.Selector}
	var err error
	if spec.Processes, err = list("processes", f.Processes); err != nil {
		return nil, err
	}
	if spec.Syscalls, err = list("syscalls", f.Syscalls); err != nil {
		return nil, err
	}
	if spec.Statuses, err = list("statuses", f.Statuses); err != nil {
		return nil, err
	}
	switch f.Action {
	case "stacks":
		spec.Action = livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS
	case "dump":
		spec.Action = livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP
	case "on-demand":
		spec.Action = livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP
		spec.OnDemand = true
	default:
		return nil, &fieldError{"action", fmt.Sprintf("%q: want stacks, dump or on-demand", f.Action)}
	}
	if !spec.OnDemand && len(spec.Statuses) == 0 {
		return nil, &fieldError{"statuses", "at least one status code is required, e.g. STATUS_INVALID_PARAMETER"}
	}
	if f.UStack == "" {
		f.UStack = "10"
	}
	if spec.Ustack, err = number("ustack", f.UStack, 1, 100); err != nil {
		return nil, err
	}
	spec.Kstack = f.KStack
	if spec.PerAgentCap, err = number("per_agent", f.PerAgent, 1, 1_000_000); err != nil {
		return nil, err
	}
	if spec.MaxDumps, err = number("max_dumps", f.MaxDumps, 0, 1_000_000); err != nil {
		return nil, err
	}
	if spec.DumpsPerSignature, err = number("dumps_per_signature", f.DumpsPerSignature, 0, 1_000_000); err != nil {
		return nil, err
	}
	if spec.RolloutRate, err = number("rollout_rate", f.RolloutRate, 0, 1_000_000); err != nil {
		return nil, err
	}
	lkd, err := number("lkd_mode", f.LkdMode, 0, 255)
	if err != nil {
		return nil, err
	}
	spec.LkdMode = int32(lkd)
	switch f.Upload {
	case "", "full":
		spec.Upload = livedumpv1.UploadMode_UPLOAD_MODE_FULL
	case "hash-only":
		spec.Upload = livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY
	default:
		return nil, &fieldError{"upload", fmt.Sprintf("%q: want full or hash-only", f.Upload)}
	}
	if f.Expire == "" {
		return nil, &fieldError{"expire", "required: how long the capture lives, e.g. 1h (1m to 168h)"}
	}
	d, err := time.ParseDuration(f.Expire)
	if err != nil {
		return nil, &fieldError{"expire", fmt.Sprintf("%q: want a duration such as 30m or 24h", f.Expire)}
	}
	if d < time.Minute || d > 7*24*time.Hour {
		return nil, &fieldError{"expire", fmt.Sprintf("%s: must be between 1m and 168h", d)}
	}
	spec.Expire = durationpb.New(d)
	return spec, nil
}

type previewView struct {
	Form    captureForm
	Preview *livedumpv1.CapturePreview
	Error   string
}

func (s *Server) newCapture(w http.ResponseWriter, r *http.Request) {
	f := defaultForm()
	if sel := r.URL.Query().Get("selector"); sel != "" {
		f.Selector = sel
	}
	s.render(w, r, http.StatusOK, "capture_new", "New capture", "captures", previewView{Form: f})
}

// editCapture shows the create form again with the values of a preview.
func (s *Server) editCapture(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "capture_new", "New capture", "captures", previewView{Form: readForm(r.PostForm)})
}

// previewCapture asks the controller for a dry run of the form and shows
// what would be armed, with the button that creates it.
func (s *Server) previewCapture(w http.ResponseWriter, r *http.Request) {
	f := readForm(r.PostForm)
	spec, err := f.spec()
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "capture_new", "New capture", "captures", previewView{Form: f, Error: err.Error()})
		return
	}
	ctx, cancel := s.call(r)
	defer cancel()
	resp, err := s.cfg.Client.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec, DryRun: true, Force: f.Force})
	if err != nil {
		s.fail(w, r, "preview the capture", err, "/captures/new")
		return
	}
	s.render(w, r, http.StatusOK, "capture_preview", "Preview", "captures", previewView{Form: f, Preview: resp.GetPreview()})
}

// createCapture creates the capture the form describes (normally the
// preview's confirm form) and goes to its page.
func (s *Server) createCapture(w http.ResponseWriter, r *http.Request) {
	f := readForm(r.PostForm)
	spec, err := f.spec()
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "capture_new", "New capture", "captures", previewView{Form: f, Error: err.Error()})
		return
	}
	ctx, cancel := s.call(r)
	defer cancel()
	resp, err := s.cfg.Client.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec, Force: f.Force})
	if err != nil {
		s.fail(w, r, "create the capture", err, "/captures/new")
		return
	}
	id := resp.GetCapture().GetId()
	if id == "" {
		s.fail(w, r, "create the capture", errors.New("the controller answered without a capture ID"), "/captures")
		return
	}
	http.Redirect(w, r, "/captures/"+url.PathEscape(id), http.StatusSeeOther)
}
