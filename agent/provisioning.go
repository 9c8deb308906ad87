package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/capture"
	"github.com/livedump/livedump/agent/provision"
	"github.com/livedump/livedump/agent/statedir"
	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ids"
	"github.com/livedump/livedump/internal/profile"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// handleDirective runs on the stream's receive path: it only checks the
// directive and hands the work to a goroutine, so heartbeats and other
// directives keep flowing while msiexec runs. A refusal is logged here and
// sent back to the controller in the directive's acknowledgement.
func (a *Agent) handleDirective(_ context.Context, d *livedumpv1.Directive) error {
	if err := a.directive(d); err != nil {
		reason := refusedOther
		if errors.Is(err, capture.ErrRawScriptNotAllowed) {
			reason = refusedRawScript
		}
		a.refused.WithLabelValues(reason).Inc()
		a.cfg.Logger.Warn("directive refused", "directive_kind", fmt.Sprintf("%T", d.GetKind()), "reason", reason, "err", err)
		return err
	}
	return nil
}

// Reasons of livedump_agent_directives_refused_total.
const (
	refusedRawScript = "raw_script"
	refusedOther     = "other"
)

// directive checks every identifier in d (the controller may be hostile:
// none may reach a path unchecked) and starts the work.
func (a *Agent) directive(d *livedumpv1.Directive) error {
	if err := ids.DirectiveID(d.GetId()); err != nil {
		return err
	}
	switch k := d.GetKind().(type) {
	case *livedumpv1.Directive_Provision:
		if err := checkArtifact(k.Provision.GetDtraceMsi()); err != nil {
			return err
		}
		prof, err := profile.FromProto(k.Provision.GetProfile())
		if err != nil {
			return err
		}
		go a.runProvision(d.GetId(), k.Provision, prof)
		return nil
	case *livedumpv1.Directive_Arm:
		return a.captures.Arm(k.Arm)
	case *livedumpv1.Directive_Disarm:
		if err := ids.CaptureID(k.Disarm.GetCaptureId()); err != nil {
			return err
		}
		a.captures.Disarm(k.Disarm.GetCaptureId(), k.Disarm.GetReason())
		return nil
	case *livedumpv1.Directive_PullDump:
		return a.dumps.Pull(k.PullDump.GetDumpId())
	case *livedumpv1.Directive_SelfTest:
		go a.runSelfTest(d.GetId(), k.SelfTest)
		return nil
	case *livedumpv1.Directive_AgentLog:
		go a.sendLogTail(d.GetId(), k.AgentLog)
		return nil
	}
	return fmt.Errorf("directive %s: unsupported kind %T (agent version too old?)", d.GetId(), d.GetKind())
}

// MaxArtifactBytes bounds an artifact the agent downloads, as the
// controller bounds uploads (the DTrace MSI is about 20 MB).
const MaxArtifactBytes = 512 << 20

// checkArtifact validates the installer a provisioning directive names;
// nil or empty means none.
func checkArtifact(art *livedumpv1.Artifact) error {
	if art.GetSha256() == "" && art.GetName() == "" && art.GetSize() == 0 {
		return nil
	}
	if err := ids.SHA256(art.GetSha256()); err != nil {
		return fmt.Errorf("dtrace_msi.%w", err)
	}
	if n := art.GetName(); n != "" {
		if err := ids.FileName(n); err != nil {
			return fmt.Errorf("dtrace_msi.name: %w", err)
		}
	}
	if s := art.GetSize(); s <= 0 || s > MaxArtifactBytes {
		return fmt.Errorf("dtrace_msi.size %d: want 1 to %d bytes", s, MaxArtifactBytes)
	}
	return nil
}

func (a *Agent) runProvision(id string, d *livedumpv1.ProvisionDirective, prof profile.Profile) {
	ctx := a.runCtx
	log := a.cfg.Logger.With("directive_id", id, "action", d.GetAction().String())
	msi := a.msiSource(d.GetDtraceMsi())
	policy := provision.RebootNever
	if d.GetReboot() == livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED {
		policy = provision.RebootIfNeeded
	}
	var (
		rep provision.Report
		err error
	)
	switch d.GetAction() {
	case livedumpv1.ProvisionAction_PROVISION_ACTION_PLAN:
		rep, err = a.prov.Plan(ctx, prof, msi)
	case livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY:
		rep, err = a.prov.Apply(ctx, prof, policy, msi)
	case livedumpv1.ProvisionAction_PROVISION_ACTION_REVERT:
		rep, err = a.prov.Revert(ctx, prof, policy)
	default:
		err = fmt.Errorf("unknown provisioning action %v", d.GetAction())
	}
	if err != nil {
		log.Error("provisioning failed", "err", err)
		rep = provision.Report{State: provision.Failed, Detail: err.Error()}
	}
	log.Info("provisioning done", "state", rep.State, "detail", rep.Detail)
	a.provState.Set(stateValue(rep.State))
	msg := reportToProto(id, d.GetAction(), rep)
	if err := a.session.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_ProvisionReport{ProvisionReport: msg}}); err != nil {
		log.Warn("provisioning report not delivered; the state report after reconnecting carries it", "err", err)
	}
}

// stateReport is sent after every (re)connect, so the controller learns the
// outcome of a reboot without asking.
func (a *Agent) stateReport(ctx context.Context) []*livedumpv1.ConnectRequest {
	rep, err := a.prov.State(ctx)
	if err != nil {
		a.cfg.Logger.Warn("provisioning state", "err", err)
		rep = provision.Report{State: provision.Failed, Detail: err.Error()}
	}
	a.provState.Set(stateValue(rep.State))
	msgs := []*livedumpv1.ConnectRequest{{Msg: &livedumpv1.ConnectRequest_ProvisionReport{
		ProvisionReport: reportToProto("", livedumpv1.ProvisionAction_PROVISION_ACTION_UNSPECIFIED, rep),
	}}}
	// Capture states and every unacknowledged event: whatever happened
	// while disconnected reaches the controller now.
	msgs = append(msgs, a.captures.Statuses()...)
	for _, d := range a.dumps.Reports() {
		msgs = append(msgs, &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_DumpReport{DumpReport: &livedumpv1.DumpReport{Dump: d}}})
	}
	return msgs
}

// provisionState is the wire value of a provisioning state, whose names
// are the enum's short names ("reboot-required").
func provisionState(s provision.State) livedumpv1.ProvisionState {
	v, _ := enumname.Parse[livedumpv1.ProvisionState](string(s), "-")
	return v
}

func stateValue(s provision.State) float64 { return float64(provisionState(s)) }

func reportToProto(id string, action livedumpv1.ProvisionAction, r provision.Report) *livedumpv1.ProvisionReport {
	m := &livedumpv1.ProvisionReport{
		DirectiveId:    id,
		Action:         action,
		State:          provisionState(r.State),
		Detail:         r.Detail,
		Blockers:       r.Blockers,
		Notes:          r.Notes,
		RebootRequired: r.RebootRequired,
	}
	if !r.RebootAt.IsZero() {
		m.RebootAt = timestamppb.New(r.RebootAt)
	}
	for _, s := range r.Steps {
		m.Steps = append(m.Steps, &livedumpv1.StepResult{
			Id: s.ID, Description: s.Description, Current: s.Current, Desired: s.Desired,
			Change: s.Change, NeedsReboot: s.NeedsReboot, Outcome: s.Outcome, Error: s.Error,
		})
	}
	return m
}

// msiSource returns where the DTrace MSI comes from: the controller's
// artifact (cached in the state directory, fetched over the mTLS
// connection and verified), or a pre-staged local file. Nil when neither
// exists.
func (a *Agent) msiSource(art *livedumpv1.Artifact) provision.MSISource {
	pre := a.cfg.DTraceMSI
	if art.GetSha256() == "" {
		if pre == "" {
			return nil
		}
		return func(context.Context) (string, error) {
			if _, err := os.Stat(pre); err != nil {
				return "", fmt.Errorf("pre-staged DTrace MSI: %w", err)
			}
			return pre, nil
		}
	}
	sum, size := art.GetSha256(), art.GetSize()
	return func(ctx context.Context) (string, error) {
		// Checked with the directive already; checked again because this
		// hash becomes a file name.
		if err := checkArtifact(art); err != nil {
			return "", err
		}
		if pre != "" && fileHash(pre) == sum {
			return pre, nil
		}
		path, err := statedir.Join(a.cfg.StateDir, "artifacts", sum+".msi")
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", err
		}
		if fileHash(path) == sum {
			return path, nil
		}
		if err := a.session.FetchArtifact(ctx, sum, size, path); err != nil {
			return "", err
		}
		return path, nil
	}
}

// fileHash is the hex SHA-256 of a file, or "" if it cannot be read.
func fileHash(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}
