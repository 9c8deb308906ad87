package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of DescribeAgent and of the log tails agents send.
const (
	// MaxLogLines and MaxLogBytes bound the log tail one DescribeAgent
	// asks for, and what the controller accepts from an agent: a larger
	// request is clamped, a larger report refused.
	MaxLogLines = 200
	MaxLogBytes = 64 << 10
	// MaxAgentLogReportBytes bounds an AgentLogReport, encoded: the text,
	// its line framing and the small fields around it.
	MaxAgentLogReportBytes = MaxLogBytes + 4*MaxLogLines + 2<<10
	maxLogFileName         = 255
	maxLogError            = 1024

	defaultDescribeLimit = 10
	maxDescribeLimit     = 50
	defaultLogWait       = 10 * time.Second
	maxLogWait           = 30 * time.Second
)

// DescribeAgent implements FleetService.DescribeAgent: everything the
// controller knows about one agent, and, when asked by an operator, the
// tail of the agent's own log fetched over its stream.
func (s *FleetServer) DescribeAgent(ctx context.Context, req *livedumpv1.DescribeAgentRequest) (*livedumpv1.DescribeAgentResponse, error) {
	if err := validAgentID(req.GetAgentId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetAgentId())
	lines, limit := int(req.GetLogLines()), int(req.GetLimit())
	if lines < 0 {
		return nil, invalid("log_lines", "must not be negative, got %d", lines)
	}
	if limit < 0 {
		return nil, invalid("limit", "must not be negative, got %d", limit)
	}
	// Bounds: a larger request is clamped, not refused; the response says
	// what was sent.
	lines, limit = min(lines, MaxLogLines), min(limit, maxDescribeLimit)
	if limit == 0 {
		limit = defaultDescribeLimit
	}
	wait := defaultLogWait
	if w := req.GetLogWait(); w != nil {
		if err := w.CheckValid(); err != nil {
			return nil, invalid("log_wait", "%v", err)
		}
		if wait = w.AsDuration(); wait < time.Second || wait > maxLogWait {
			return nil, invalid("log_wait", "must be between 1s and %s, got %s", maxLogWait, wait)
		}
	}
	if lines > 0 {
		// An agent's log holds hostnames, paths, user names in errors:
		// more than a viewer reads elsewhere. The interceptor audits the
		// refusal (DescribeAgent is audited).
		if id, ok := IdentityFromContext(ctx); !ok || !id.Role.Allows(pki.RoleOperator) {
			return nil, grpcstatus.Errorf(codes.PermissionDenied, "log_lines: reading an agent's log needs role operator, not %s (logs hold hostnames, paths and errors); describe it without the log", id.Role)
		}
	}
	a, err := s.cfg.Store.GetAgent(ctx, req.GetAgentId())
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "agent "+req.GetAgentId(), err)
	}
	resp := &livedumpv1.DescribeAgentResponse{Agent: s.view(ctx, a), Certificate: certificateProto(a)}
	if m, err := s.cfg.Store.AgentMemory(ctx, a.ID); err == nil && m > 0 {
		resp.Agent.Inventory.MemoryBytes = uint64(m)
	}

	targets, err := s.cfg.Store.ListAgentTargets(ctx, a.ID, limit+1)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list captures of agent "+a.ID, err)
	}
	if len(targets) > limit {
		targets, resp.MoreCaptures = targets[:limit], true
	}
	for _, t := range targets {
		c, err := s.cfg.Store.GetCapture(ctx, t.CaptureID)
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "capture "+t.CaptureID, err)
		}
		resp.Captures = append(resp.Captures, agentCaptureProto(c, t, a.Hostname))
	}

	ds, err := s.cfg.Store.ListAgentDumps(ctx, a.ID, limit+1)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list dumps of agent "+a.ID, err)
	}
	if len(ds) > limit {
		ds, resp.MoreDumps = ds[:limit], true
	}
	for _, d := range ds {
		resp.Dumps = append(resp.Dumps, dumps.Proto(d, a.Hostname))
	}
	if resp.DumpBytes, err = s.cfg.Store.DumpBytes(ctx, a.ID); err != nil {
		return nil, toStatus(s.cfg.Logger, "dump bytes of agent "+a.ID, err)
	}

	if lines > 0 {
		resp.Log = s.agentLog(ctx, a, lines, wait)
	}
	return resp, nil
}

// agentLog asks the agent for the tail of its own log and waits for it.
func (s *FleetServer) agentLog(ctx context.Context, a store.Agent, lines int, wait time.Duration) *livedumpv1.AgentLog {
	if a.Revoked {
		return &livedumpv1.AgentLog{Error: "revoked: a revoked agent is not asked"}
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	d := &livedumpv1.Directive{Id: newDirectiveID(), Created: timestamppb.New(s.cfg.Clock.Now()),
		Kind: &livedumpv1.Directive_AgentLog{AgentLog: &livedumpv1.AgentLogDirective{MaxLines: uint32(lines), MaxBytes: MaxLogBytes}}}
	rep, err := s.exchange(wctx, a.ID, d)
	switch {
	case errors.Is(err, fleet.ErrOffline):
		return &livedumpv1.AgentLog{Error: "offline: the log is read from the agent itself; try again when it is online"}
	case errors.Is(err, context.DeadlineExceeded):
		return &livedumpv1.AgentLog{Error: "no answer within " + wait.String() + " (an agent too old to know the request does not answer)"}
	case err != nil:
		return &livedumpv1.AgentLog{Error: err.Error()}
	}
	lr, ok := rep.(*livedumpv1.AgentLogReport)
	if !ok {
		return &livedumpv1.AgentLog{Error: fmt.Sprintf("answered with a %T", rep)}
	}
	// Checked when it arrived on whichever replica holds the stream;
	// checked again here, since a relayed report comes through the store.
	if err := validAgentLogReport(lr, lines); err != nil {
		return &livedumpv1.AgentLog{Error: "refused: " + grpcstatus.Convert(err).Message()}
	}
	return &livedumpv1.AgentLog{Report: lr}
}

func certificateProto(a store.Agent) *livedumpv1.AgentCertificate {
	c := &livedumpv1.AgentCertificate{Serial: a.CertSerial, PreviousSerial: a.PrevSerial}
	if !a.CertExpiry.IsZero() {
		c.NotAfter = timestamppb.New(a.CertExpiry)
	}
	if a.PrevSerial != "" && !a.PrevUntil.IsZero() {
		c.PreviousUntil = timestamppb.New(a.PrevUntil)
	}
	if a.Revoked && !a.RevokedAt.IsZero() {
		c.RevokedAt = timestamppb.New(a.RevokedAt)
	}
	return c
}

func agentCaptureProto(c store.Capture, t store.CaptureTarget, hostname string) *livedumpv1.AgentCapture {
	st, _ := enumname.Parse[livedumpv1.CaptureState](c.State, "_")
	p := &livedumpv1.AgentCapture{
		CaptureId: c.ID, State: st, Created: timestamppb.New(c.Created), Expires: timestamppb.New(c.Expires),
		Target: &livedumpv1.CaptureTarget{AgentId: t.AgentID, Hostname: hostname, State: capture.TargetStateValue(t.State),
			Detail: t.Detail, Events: t.Events, Updated: timestamppb.New(t.Updated)},
	}
	spec := &livedumpv1.CaptureSpec{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(c.Spec), spec); err == nil {
		p.Selector, p.Processes, p.Statuses, p.Action = spec.GetSelector(), spec.GetProcesses(), spec.GetStatuses(), spec.GetAction()
	}
	return p
}

// validAgentLogReport checks a log tail from an agent against the limits
// above, and against the lines asked for (0: only the limits).
func validAgentLogReport(r *livedumpv1.AgentLogReport, asked int) error {
	if n := proto.Size(r); n > MaxAgentLogReportBytes {
		return invalid("agent_log_report", "%d bytes encoded, more than %d", n, MaxAgentLogReportBytes)
	}
	if err := validDirectiveID(r.GetDirectiveId()); err != nil {
		return err
	}
	limit := MaxLogLines
	if asked > 0 {
		limit = min(asked, MaxLogLines)
	}
	if n := len(r.GetLines()); n > limit {
		return invalid("agent_log_report.lines", "%d lines, more than the %d asked for", n, limit)
	}
	text := 0
	for _, l := range r.GetLines() {
		text += len(l)
	}
	if text > MaxLogBytes {
		return invalid("agent_log_report.lines", "%d bytes of text, more than %d", text, MaxLogBytes)
	}
	if n := r.GetFileName(); len(n) > maxLogFileName || strings.ContainsAny(n, `/\`) {
		return invalid("agent_log_report.file_name", "a base name of at most %d bytes", maxLogFileName)
	}
	if len(r.GetError()) > maxLogError {
		return invalid("agent_log_report.error", "longer than %d bytes", maxLogError)
	}
	if r.GetFileSize() < 0 {
		return invalid("agent_log_report.file_size", "negative")
	}
	return nil
}

// agentLogReport passes a log tail to the DescribeAgent call waiting for
// it. A report that breaks the limits is not passed on: the call waiting
// for it (if the directive ID names one of this agent's) gets an error in
// its place, and the refusal is logged and audited within the stream's
// audit budget; a report answering no log directive sent to this agent (a
// stolen identity's forgery, or one that came too late) is dropped the
// same way.
func (s *AgentServer) agentLogReport(ctx context.Context, actor string, sess *fleet.Session, r *livedumpv1.AgentLogReport, budget *auditBudget) {
	var outcome string
	if err := validAgentLogReport(r, 0); err != nil {
		outcome = "invalid_argument: " + grpcstatus.Convert(err).Message()
		if validDirectiveID(r.GetDirectiveId()) == nil {
			sess.Deliver(&livedumpv1.AgentLogReport{DirectiveId: r.GetDirectiveId(), Error: "the agent's answer was refused: " + grpcstatus.Convert(err).Message()})
		}
	} else if !sess.Deliver(r) {
		outcome = "ignored: no log directive " + r.GetDirectiveId() + " sent to this agent is awaiting a report"
	} else {
		return
	}
	s.refuseReport(ctx, actor, "AgentService/AgentLogReport", "agent log report refused", r.GetDirectiveId(), outcome, s.cfg.Metrics.AgentLogReportsRefused, budget)
}
