// Package capture is the controller's side of captures: it validates and
// stores them, arms their targets at the rollout rate (queuing offline agents
// until expiry), ingests trigger events in batches, enforces the fleet-wide
// dump limit and expiry, and feeds live watchers.
package capture

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of a capture.
const (
	DefaultExpire = 24 * time.Hour
	MaxExpire     = 7 * 24 * time.Hour
	MinExpire     = time.Minute
	MaxStatuses   = 64
	MaxRollout    = 100000
	MaxRawScript  = 64 << 10
)

// Capture states as stored.
const (
	StateActive    = "active"
	StateDone      = "done"
	StateExpired   = "expired"
	StateCancelled = "cancelled"
	StateFailed    = "failed" // every target finished, and every one failed
)

// Target states as stored.
const (
	TargetPending   = "pending"
	TargetDelivered = "delivered"
	TargetArmed     = "armed"
	TargetTriggered = "triggered"
	TargetDumping   = "dumping"
	TargetDone      = "done"
	TargetFailed    = "failed"
	TargetExpired   = "expired"
	TargetCancelled = "cancelled"
)

func targetTerminal(s string) bool {
	switch s {
	case TargetDone, TargetFailed, TargetExpired, TargetCancelled:
		return true
	}
	return false
}

// FieldError names the spec field that was rejected.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "c-" + hex.EncodeToString(b)
}

// Request is a capture request.
type Request struct {
	Spec  *livedumpv1.CaptureSpec
	Actor string
	Admin bool
	// DryRun validates, matches and renders, stores nothing and returns
	// the preview only.
	DryRun bool
	// Force creates a capture that can catch nothing (see
	// CatchesNothingError).
	Force bool
}

// CatchesNothingError refuses a capture that can catch nothing: its
// selector matches no machine, or none of those it matches is provisioned.
// Request.Force creates it anyway. Message is what the operator reads; it
// names the selector and what to do.
type CatchesNothingError struct {
	Selector string
	Matched  int
	Message  string
}

func (e *CatchesNothingError) Error() string { return e.Message }

// Preview limits.
const (
	// MaxPreviewTargets bounds the machines a preview lists one by one;
	// the others are counted.
	MaxPreviewTargets = 1000
	// DryRunID is the capture ID a dry run renders its script under.
	DryRunID = "dry-run"
	// provisionUnknown names the state of an agent that has not reported
	// one yet.
	provisionUnknown = "unknown"
	provisionReady   = "ready"
)

// plan is a validated capture, not yet stored: what Create stores and what
// its preview shows.
type plan struct {
	id       string
	spec     *livedumpv1.CaptureSpec
	expire   time.Duration
	resolved []*livedumpv1.ResolvedStatus
	rendered string
	warnings []string
	targets  []store.CaptureTarget
	hosts    map[string]string // target agent ID -> hostname
	preview  *livedumpv1.CapturePreview
}

// Create validates the spec, resolves its statuses, renders its probe and
// picks the targets. A dry run returns the preview only; otherwise a
// capture that can catch nothing is refused with a *CatchesNothingError
// (unless forced), and the others are stored and returned with the same
// preview. Nothing is stored for a rejected spec.
func (l *lifecycle) Create(ctx context.Context, r Request) (*livedumpv1.Capture, *livedumpv1.CapturePreview, error) {
	id := newID()
	if r.DryRun {
		id = DryRunID
	}
	p, err := l.plan(ctx, r, id)
	if err != nil {
		return nil, nil, err
	}
	if r.DryRun {
		return nil, p.preview, nil
	}
	if p.preview.GetRefused() != "" && !r.Force {
		return nil, p.preview, &CatchesNothingError{Selector: p.spec.GetSelector(), Matched: int(p.preview.GetMatched()), Message: p.preview.GetRefused()}
	}
	specJSON, err := protojson.Marshal(p.spec)
	if err != nil {
		return nil, nil, err
	}
	statusJSON, err := json.Marshal(p.resolved)
	if err != nil {
		return nil, nil, err
	}
	// At the store's precision (milliseconds), so the capture returned
	// below is the one a read gives back.
	now := time.UnixMilli(l.clock.Now().UnixMilli()).UTC()
	for i := range p.targets {
		p.targets[i].Updated = now
	}
	expires := time.UnixMilli(now.Add(p.expire).UnixMilli()).UTC()
	c := store.Capture{
		ID: id, Spec: string(specJSON), State: StateActive, Created: now, Expires: expires,
		CreatedBy: r.Actor, Rendered: p.rendered, Statuses: string(statusJSON), Warnings: p.warnings,
	}
	if len(p.targets) == 0 {
		c.State, c.Detail = StateDone, "no agent matches the selector"
	}
	if err := l.store.CreateCapture(ctx, c, p.targets); err != nil {
		return nil, nil, err
	}
	if l.handOff != nil {
		handed := slices.Clone(p.targets)
		for i := range handed {
			handed[i].CaptureID = id
		}
		l.handOff(id, handed)
	}
	l.log.Info("capture created", "capture_id", id, "targets", len(p.targets), "ready", p.preview.GetReady(), "forced", r.Force && p.preview.GetRefused() != "", "by", r.Actor)
	l.kick.Kick()
	l.router.CaptureChanged(ctx, id)
	// The capture as stored, from what was just written rather than read
	// back: at 10,000 targets reading them and their hostnames again took
	// as much CPU as the scheduler's first claims, which it ran beside.
	slices.SortFunc(p.targets, func(a, b store.CaptureTarget) int { return strings.Compare(a.AgentID, b.AgentID) })
	got, err := toProto(c, p.targets, p.hosts)
	if err != nil {
		return nil, nil, err
	}
	got.OfflineTargets = countOffline(ctx, l.online, p.targets)
	return got, p.preview, nil
}

// plan validates r and computes everything Create stores, under capture
// ID id, with the preview.
func (l *lifecycle) plan(ctx context.Context, r Request, id string) (*plan, error) {
	spec := r.Spec
	if spec == nil {
		return nil, &FieldError{"spec", "missing"}
	}
	if err := checkControlChars(spec); err != nil {
		return nil, err
	}
	sel, err := selector.ParseRequired(spec.GetSelector())
	if err != nil {
		return nil, &FieldError{"selector", err.Error()}
	}
	expire := DefaultExpire
	if d := spec.GetExpire(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, &FieldError{"expire", err.Error()}
		}
		expire = d.AsDuration()
	}
	if expire < MinExpire || expire > MaxExpire {
		return nil, &FieldError{"expire", fmt.Sprintf("must be between %s and %s, got %s", MinExpire, MaxExpire, expire)}
	}
	if spec.GetRolloutRate() > MaxRollout {
		return nil, &FieldError{"rollout_rate", fmt.Sprintf("at most %d agents per minute", MaxRollout)}
	}
	if spec.GetScript() != "" {
		if !r.Admin {
			return nil, &FieldError{"script", "raw D scripts need the admin role"}
		}
		if len(spec.GetScript()) > MaxRawScript {
			return nil, &FieldError{"script", fmt.Sprintf("longer than %d bytes", MaxRawScript)}
		}
	}
	if len(spec.GetStatuses()) > MaxStatuses {
		return nil, &FieldError{"status", fmt.Sprintf("at most %d status codes", MaxStatuses)}
	}
	var resolved []*livedumpv1.ResolvedStatus
	var values []uint32
	for _, s := range spec.GetStatuses() {
		res, err := ntstatus.Resolve(s)
		if err != nil {
			return nil, &FieldError{"status", err.Error()}
		}
		resolved = append(resolved, &livedumpv1.ResolvedStatus{Input: res.Input, Kind: string(res.Kind), Name: res.Name, Ntstatus: res.NTStatus, Note: res.Note})
		values = append(values, res.NTStatus...)
	}
	slices.Sort(values)
	values = slices.Compact(values)
	if len(values) > MaxStatuses {
		return nil, &FieldError{"status", fmt.Sprintf("the codes resolve to %d NTSTATUS values; at most %d fit in one probe", len(values), MaxStatuses)}
	}
	arm := armOf(id, spec, values, time.Time{})
	ps := probe.FromArm(arm)
	p := &plan{id: id, spec: spec, expire: expire, resolved: resolved, hosts: map[string]string{}}
	if spec.GetScript() == "" {
		if err := ps.Validate(); err != nil {
			var fe *probe.FieldError
			if errors.As(err, &fe) {
				return nil, &FieldError{fe.Field, fe.Reason}
			}
			return nil, &FieldError{"spec", err.Error()}
		}
		if p.rendered, err = probe.Render(ps, 0); err != nil {
			return nil, &FieldError{"spec", err.Error()}
		}
		p.warnings = ps.Warnings() // truncated names, names without an extension
	} else {
		p.rendered = spec.GetScript()
	}

	agents, err := l.store.ListAgentSelectors(ctx)
	if err != nil {
		return nil, err
	}
	pv := &livedumpv1.CapturePreview{
		Selector: spec.GetSelector(), ProvisionStates: map[string]int64{}, Statuses: resolved,
		RenderedScript: p.rendered, Warnings: p.warnings,
	}
	var labelSets []map[string]string
	for _, a := range agents {
		if a.Revoked {
			continue
		}
		set := agentLabels(a)
		if !sel.Matches(set) {
			labelSets = append(labelSets, set)
			continue
		}
		p.targets = append(p.targets, store.CaptureTarget{AgentID: a.ID, State: TargetPending})
		p.hosts[a.ID] = a.Hostname
		state := a.ProvisionState
		if state == "" {
			state = provisionUnknown
		}
		pv.ProvisionStates[state]++
		if state == provisionReady {
			pv.Ready++
		}
		pv.Targets = append(pv.Targets, &livedumpv1.PreviewTarget{
			AgentId: a.ID, Hostname: a.Hostname, ProvisionState: provisionStateValue(a.ProvisionState), ProvisionDetail: a.ProvisionDetail,
		})
	}
	pv.Matched = int64(len(p.targets))
	slices.SortFunc(pv.Targets, func(a, b *livedumpv1.PreviewTarget) int {
		return cmp.Or(strings.Compare(a.GetHostname(), b.GetHostname()), strings.Compare(a.GetAgentId(), b.GetAgentId()))
	})
	if len(pv.Targets) > MaxPreviewTargets {
		pv.OmittedTargets = int64(len(pv.Targets) - MaxPreviewTargets)
		pv.Targets = pv.Targets[:MaxPreviewTargets]
	}
	if spec.GetScript() == "" && !spec.GetOnDemand() {
		for _, proc := range ps.Processes {
			name, truncated := probe.ExecName(proc)
			pv.Processes = append(pv.Processes, &livedumpv1.PreviewProcess{Input: proc, Execname: name, Truncated: truncated})
		}
	}
	switch {
	case pv.Matched == 0:
		pv.Refused = noMatchMessage(spec.GetSelector(), sel.Suggest(labelSets))
	case pv.Ready == 0:
		pv.Refused = noneReadyMessage(spec.GetSelector(), pv.Matched, pv.ProvisionStates)
	}
	p.preview = pv
	return p, nil
}

// noMatchMessage is the refusal of a selector that matches no machine.
func noMatchMessage(sel, suggestion string) string {
	msg := fmt.Sprintf("selector %q matches no machine: the capture would catch nothing", sel)
	if suggestion != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", suggestion)
	}
	return msg + fmt.Sprintf("; check with `livedumpctl agents list -l %s`, or give --force to create it anyway", shellWord(sel))
}

// noneReadyMessage is the refusal of a selector whose machines are none
// of them provisioned.
func noneReadyMessage(sel string, matched int64, states map[string]int64) string {
	names := make([]string, 0, len(states))
	for s := range states {
		names = append(names, s)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(states[b], states[a]), strings.Compare(a, b)) })
	counts := make([]string, len(names))
	for i, s := range names {
		counts[i] = fmt.Sprintf("%d %s", states[s], s)
	}
	machines := "machines"
	none := "none is provisioned"
	if matched == 1 {
		machines, none = "machine", "it is not provisioned"
	}
	return fmt.Sprintf("selector %q matches %d %s and %s (%s): the capture would catch nothing; "+
		"provision with `livedumpctl provision apply -l %s`, check with `livedumpctl agents list -l %s`, "+
		"or give --force to arm anyway (a machine not provisioned when the probe reaches it fails its target)",
		sel, matched, machines, none, strings.Join(counts, ", "), shellWord(sel), shellWord(sel))
}

// shellWord quotes a selector for a shell command line when it needs it.
func shellWord(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("=,._-/", c)) {
			return "'" + s + "'"
		}
	}
	return s
}

// checkControlChars refuses a control character in any string of the spec
// that reaches a D script, a label match or a name (everything but the raw
// script, which is D source): such a value is never partly used.
func checkControlChars(spec *livedumpv1.CaptureSpec) error {
	check := func(field string, vals ...string) error {
		for _, v := range vals {
			if i := strings.IndexFunc(v, unicode.IsControl); i >= 0 {
				return &FieldError{field, fmt.Sprintf("%q contains the control character %U: a value is used whole or refused", v, []rune(v[i:])[0])}
			}
		}
		return nil
	}
	for _, err := range []error{
		check("selector", spec.GetSelector()),
		check("process", spec.GetProcesses()...),
		check("syscall", spec.GetSyscalls()...),
		check("status", spec.GetStatuses()...),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// provisionStateValue is the wire value of a stored provisioning state
// name ("reboot-required"); unspecified for an unknown one.
func provisionStateValue(name string) livedumpv1.ProvisionState {
	st, _ := enumname.Parse[livedumpv1.ProvisionState](name, "-")
	return st
}

func agentLabels(a store.Agent) map[string]string {
	l := map[string]string{}
	for k, v := range a.Labels {
		l[k] = v
	}
	l[selector.LabelHostname] = a.Hostname
	l[selector.LabelOSBuild] = a.OSBuild
	return l
}

func armOf(id string, spec *livedumpv1.CaptureSpec, statuses []uint32, expires time.Time) *livedumpv1.ArmCapture {
	a := &livedumpv1.ArmCapture{
		CaptureId: id, Processes: spec.GetProcesses(), Syscalls: spec.GetSyscalls(), Statuses: statuses,
		Ustack: spec.GetUstack(), Kstack: spec.GetKstack(), Action: spec.GetAction(), LkdMode: spec.GetLkdMode(),
		PerAgentCap: spec.GetPerAgentCap(), Script: spec.GetScript(), Upload: spec.GetUpload(), OnDemand: spec.GetOnDemand(),
	}
	if spec.GetOnDemand() {
		a.Action = livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP
	}
	if !expires.IsZero() {
		a.Expires = timestamppb.New(expires)
	}
	return a
}

// ExpireIn is for tests and the CLI: how long the default expiry is.
func ExpireIn(d *durationpb.Duration) time.Duration {
	if d == nil {
		return DefaultExpire
	}
	return d.AsDuration()
}

// ParseState is the inverse of the stored state names, for filters.
func ParseState(s string) (string, error) {
	switch strings.ToLower(s) {
	case StateActive, StateDone, StateFailed, StateExpired, StateCancelled:
		return strings.ToLower(s), nil
	}
	return "", fmt.Errorf("state %q: want active, done, failed, expired or cancelled", s)
}
