package agent

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/selftest"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Bounds of a self-test the controller asks for: its timeout is taken
// within these, whatever the directive says.
const (
	defaultSelfTestTimeout = 2 * time.Minute
	minSelfTestTimeout     = 10 * time.Second
	maxSelfTestTimeout     = 10 * time.Minute
)

// runSelfTest runs the self-test a directive asked for and sends the
// report on the Connect stream. A self-test already running is answered
// with an error report at once, so the caller is not left waiting.
func (a *Agent) runSelfTest(id string, d *livedumpv1.SelfTestDirective) {
	timeout := defaultSelfTestTimeout
	if t := d.GetTimeout(); t != nil && t.CheckValid() == nil {
		timeout = min(max(t.AsDuration(), minSelfTestTimeout), maxSelfTestTimeout)
	}
	ctx, cancel := context.WithTimeout(a.runCtx, timeout)
	defer cancel()
	started := time.Now()
	rep, err := a.selftest.Run(ctx)
	msg := SelfTestReportToProto(id, rep)
	if err != nil {
		msg = &livedumpv1.SelfTestReport{DirectiveId: id, Error: err.Error(), Started: timestamppb.New(started), Finished: timestamppb.Now()}
		if !errors.Is(err, selftest.ErrBusy) {
			a.cfg.Logger.Error("self-test failed", "directive_id", id, "err", err)
		}
	}
	a.cfg.Logger.Info("self-test done", "directive_id", id, "failed", rep.Failed(), "err", err)
	if err := a.session.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_SelfTestReport{SelfTestReport: msg}}); err != nil {
		a.cfg.Logger.Warn("self-test report not delivered", "directive_id", id, "err", err)
	}
}

var selfTestStatuses = map[selftest.Status]livedumpv1.SelfTestStatus{
	selftest.Pass:    livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS,
	selftest.Fail:    livedumpv1.SelfTestStatus_SELF_TEST_STATUS_FAIL,
	selftest.Unknown: livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNKNOWN,
}

// SelfTestReportToProto is the report as the controller receives it.
func SelfTestReportToProto(directiveID string, r selftest.Report) *livedumpv1.SelfTestReport {
	m := &livedumpv1.SelfTestReport{DirectiveId: directiveID}
	if !r.Started.IsZero() {
		m.Started, m.Finished = timestamppb.New(r.Started), timestamppb.New(r.Finished)
	}
	for _, c := range r.Checks {
		st, ok := selfTestStatuses[c.Status]
		if !ok {
			st = livedumpv1.SelfTestStatus_SELF_TEST_STATUS_UNKNOWN
		}
		m.Checks = append(m.Checks, &livedumpv1.SelfTestCheck{Name: c.Check, Status: st, Evidence: c.Evidence, Duration: durationpb.New(c.Duration)})
	}
	return m
}
