package api

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of CheckAgents and of the self-test reports agents send.
const (
	defaultCheckWait = 2 * time.Minute
	maxCheckWait     = 10 * time.Minute
	// MaxCheckAgents bounds one CheckAgents call: each selected machine
	// runs dtrace, and the answer carries every report (at most
	// MaxSelfTestReportBytes each, so about 2 MiB in all).
	MaxCheckAgents = 128
	// MaxSelfTestReportBytes bounds one SelfTestReport, encoded.
	MaxSelfTestReportBytes = 16 << 10
	// MaxSelfTestChecks bounds the checks of one report.
	MaxSelfTestChecks = 32
	maxCheckName      = 64
	maxCheckEvidence  = 1024
	maxDirectiveID    = 64
)

// CheckAgents implements FleetService.CheckAgents: it sends a self-test
// directive to each selected agent and collects the reports that arrive
// within the wait. Offline agents are reported, never queued: a self-test
// says how a machine is now.
func (s *FleetServer) CheckAgents(ctx context.Context, req *livedumpv1.CheckAgentsRequest) (*livedumpv1.CheckAgentsResponse, error) {
	setAuditTarget(ctx, req.GetSelector())
	wait, err := checkWait(req.GetWait())
	if err != nil {
		return nil, err
	}
	sel, err := machineSelector(req.GetSelector())
	if err != nil {
		return nil, err
	}
	all, err := s.cfg.Store.ListAgents(ctx)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list agents", err)
	}
	var targets []store.Agent
	for _, a := range all {
		if !a.Revoked && sel.Matches(allLabels(a)) {
			targets = append(targets, a)
		}
	}
	if len(targets) > MaxCheckAgents {
		return nil, invalid("selector", "matches %d agents; a self-test runs dtrace on each machine, so one call checks at most %d: narrow the selector (e.g. add site=... or hostname in (...))", len(targets), MaxCheckAgents)
	}
	sort.Slice(targets, func(i, j int) bool {
		if targets[i].Hostname != targets[j].Hostname {
			return targets[i].Hostname < targets[j].Hostname
		}
		return targets[i].ID < targets[j].ID
	})
	results := make([]*livedumpv1.AgentSelfTestResult, len(targets))
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var wg sync.WaitGroup
	for i, a := range targets {
		results[i] = &livedumpv1.AgentSelfTestResult{AgentId: a.ID, Hostname: a.Hostname}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := &livedumpv1.Directive{Id: newDirectiveID(), Created: timestamppb.New(s.cfg.Clock.Now()),
				Kind: &livedumpv1.Directive_SelfTest{SelfTest: &livedumpv1.SelfTestDirective{Timeout: durationpb.New(wait)}}}
			rep, err := s.exchange(wctx, a.ID, dir)
			switch {
			case err == nil:
				if st, ok := rep.(*livedumpv1.SelfTestReport); ok {
					results[i].Report = st
				} else {
					results[i].Error = fmt.Sprintf("answered with a %T", rep)
				}
			case errors.Is(err, fleet.ErrOffline):
				results[i].Error = "offline: not checked; run again when the agent is online"
			case errors.Is(err, context.DeadlineExceeded):
				results[i].Error = "no report within " + wait.String() + " (an agent too old to know the self-test does not answer)"
			default:
				results[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	return &livedumpv1.CheckAgentsResponse{Results: results}, nil
}

func checkWait(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return defaultCheckWait, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("wait", "%v", err)
	}
	w := d.AsDuration()
	if w < time.Second || w > maxCheckWait {
		return 0, invalid("wait", "must be between 1s and %s, got %s", maxCheckWait, w)
	}
	return w, nil
}

// exchange sends a directive to the agent wherever its stream is and
// waits for the report answering it.
func (s *FleetServer) exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (fleet.Report, error) {
	if s.cfg.Peers != nil {
		return s.cfg.Peers.Exchange(ctx, agentID, d)
	}
	return s.cfg.Local.Exchange(ctx, agentID, d)
}

// validSelfTestReport checks a report from an agent against the limits
// above before anything of it is kept or passed on.
func validSelfTestReport(r *livedumpv1.SelfTestReport) error {
	if n := proto.Size(r); n > MaxSelfTestReportBytes {
		return invalid("self_test_report", "%d bytes encoded, more than %d", n, MaxSelfTestReportBytes)
	}
	if err := validDirectiveID(r.GetDirectiveId()); err != nil {
		return err
	}
	if n := len(r.GetChecks()); n > MaxSelfTestChecks {
		return invalid("self_test_report.checks", "%d checks, more than %d", n, MaxSelfTestChecks)
	}
	if !utf8.ValidString(r.GetError()) || len(r.GetError()) > maxCheckEvidence {
		return invalid("self_test_report.error", "not UTF-8 or longer than %d bytes", maxCheckEvidence)
	}
	for i, c := range r.GetChecks() {
		if n := c.GetName(); n == "" || len(n) > maxCheckName || strings.IndexFunc(n, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		}) >= 0 {
			return invalid(fmt.Sprintf("self_test_report.checks[%d].name", i), "want 1-%d characters of a-z 0-9 . _ -", maxCheckName)
		}
		if !enumname.Valid(c.GetStatus()) {
			return invalid(fmt.Sprintf("self_test_report.checks[%d].status", i), "unknown status %d", c.GetStatus())
		}
		if e := c.GetEvidence(); !utf8.ValidString(e) || len(e) > maxCheckEvidence {
			return invalid(fmt.Sprintf("self_test_report.checks[%d].evidence", i), "not UTF-8 or longer than %d bytes", maxCheckEvidence)
		}
	}
	return nil
}

// validDirectiveID accepts the IDs newDirectiveID makes, and any other
// short lower-case hex or dash ID a future controller might.
func validDirectiveID(id string) error {
	if id == "" || len(id) > maxDirectiveID || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'f' || r >= '0' && r <= '9' || r == '-')
	}) >= 0 {
		return invalid("self_test_report.directive_id", "want 1-%d characters of 0-9 a-f -", maxDirectiveID)
	}
	return nil
}

// selfTestReport passes a report to the CheckAgents call waiting for it.
// A report that breaks the limits, or answers no self-test directive sent
// to this agent and still awaited (a stolen identity's forgery, or a
// report that came too late), is dropped, logged and audited within the
// stream's audit budget.
func (s *AgentServer) selfTestReport(ctx context.Context, actor string, sess *fleet.Session, r *livedumpv1.SelfTestReport, budget *auditBudget) {
	var outcome string
	if err := validSelfTestReport(r); err != nil {
		outcome = "invalid_argument: " + grpcstatus.Convert(err).Message()
	} else if !sess.Deliver(r) {
		outcome = "ignored: no self-test directive " + r.GetDirectiveId() + " sent to this agent is awaiting a report"
	} else {
		return
	}
	s.refuseReport(ctx, actor, "AgentService/SelfTestReport", "self-test report refused", r.GetDirectiveId(), outcome, s.cfg.Metrics.SelfTestReportsRefused, budget)
}

// refuseReport logs, counts and (within the stream's audit budget) audits
// an agent's report answering a directive that was dropped: outcome says
// why; the directive ID is the audit target when it is a valid one.
func (s *AgentServer) refuseReport(ctx context.Context, actor, action, msg, directiveID, outcome string, refused prometheus.Counter, budget *auditBudget) {
	target := directiveID
	if validDirectiveID(target) != nil {
		target = ""
	}
	s.cfg.Logger.Warn(msg, "agent", actor, "directive_id", target, "reason", outcome)
	refused.Inc()
	if !budget.allow(s.cfg.Clock.Now()) {
		return
	}
	if len(outcome) > 512 {
		outcome = strings.ToValidUTF8(outcome[:512], "")
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.cfg.Store.AppendAudit(actx, store.AuditEntry{Time: s.cfg.Clock.Now().UTC(), Actor: actor,
		Action: action, Target: target, Outcome: outcome}); err != nil {
		s.cfg.Logger.Error("audit write failed", "action", action, "actor", actor, "err", err)
	}
}
