// Package capture is the controller's side of captures: it validates and
// stores them, arms their targets at the rollout rate (queuing offline agents
// until expiry), ingests trigger events in batches, enforces the fleet-wide
// dump limit and expiry, and feeds live watchers.
package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
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

// Request is a validated capture request.
type Request struct {
	Spec  *livedumpv1.CaptureSpec
	Actor string
	Admin bool
}

// Create validates spec, resolves its statuses, renders its probe, picks
// the targets and stores everything; nothing is stored for a rejected spec.
func (l *lifecycle) Create(ctx context.Context, r Request) (*livedumpv1.Capture, error) {
	spec := r.Spec
	if spec == nil {
		return nil, &FieldError{"spec", "missing"}
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
	id := newID()
	arm := armOf(id, spec, values, time.Time{})
	ps := probe.FromArm(arm)
	var rendered string
	var warnings []string
	if spec.GetScript() == "" {
		if err := ps.Validate(); err != nil {
			var fe *probe.FieldError
			if errors.As(err, &fe) {
				return nil, &FieldError{fe.Field, fe.Reason}
			}
			return nil, &FieldError{"spec", err.Error()}
		}
		if rendered, err = probe.Render(ps, 0); err != nil {
			return nil, &FieldError{"spec", err.Error()}
		}
		warnings = ps.Warnings() // truncated names, names without an extension
	} else {
		rendered = spec.GetScript()
	}

	now := l.clock.Now().UTC()
	agents, err := l.store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	var targets []store.CaptureTarget
	for _, a := range agents {
		if a.Revoked || !sel.Matches(agentLabels(a)) {
			continue
		}
		targets = append(targets, store.CaptureTarget{AgentID: a.ID, State: TargetPending, Updated: now})
	}
	specJSON, err := protojson.Marshal(spec)
	if err != nil {
		return nil, err
	}
	statusJSON, err := json.Marshal(resolved)
	if err != nil {
		return nil, err
	}
	c := store.Capture{
		ID: id, Spec: string(specJSON), State: StateActive, Created: now, Expires: now.Add(expire),
		CreatedBy: r.Actor, Rendered: rendered, Statuses: string(statusJSON), Warnings: warnings,
	}
	if len(targets) == 0 {
		c.State, c.Detail = StateDone, "no agent matches the selector"
	}
	if err := l.store.CreateCapture(ctx, c, targets); err != nil {
		return nil, err
	}
	l.log.Info("capture created", "capture_id", id, "targets", len(targets), "by", r.Actor)
	l.kick.Kick()
	l.router.CaptureChanged(ctx, id)
	return l.Get(ctx, id)
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
