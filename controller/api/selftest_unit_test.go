package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestCheckAgents(t *testing.T) {
	r := newRig(t, false)
	r.addAgent(t, store.Agent{ID: agentB, Hostname: "WS-B", Labels: map[string]string{"site": "ber"}})
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A", Labels: map[string]string{"site": "ber"}})
	r.addAgent(t, store.Agent{ID: agentC, Hostname: "WS-C", Labels: map[string]string{"site": "ber"}})
	pass := &livedumpv1.SelfTestReport{Checks: []*livedumpv1.SelfTestCheck{{Name: "dtrace.version", Status: livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS}}}
	r.local.Answer(agentA, pass, nil)
	r.local.Answer(agentB, &livedumpv1.ProvisionReport{}, nil) // answers with the wrong kind

	for _, tc := range []struct {
		req   *livedumpv1.CheckAgentsRequest
		field string
	}{
		{&livedumpv1.CheckAgentsRequest{Selector: ""}, "selector: "},
		{&livedumpv1.CheckAgentsRequest{Selector: "site=ber", Wait: durationpb.New(time.Millisecond)}, "wait: must be between 1s and 10m0s"},
		{&livedumpv1.CheckAgentsRequest{Selector: "site=ber", Wait: durationpb.New(time.Hour)}, "wait: "},
	} {
		_, err := r.fleet.CheckAgents(ctxAs(operator), tc.req)
		wantCode(t, err, codes.InvalidArgument, tc.field)
	}

	ctx, rec := as(operator)
	resp, err := r.fleet.CheckAgents(ctx, &livedumpv1.CheckAgentsRequest{Selector: "site=ber", Wait: durationpb.New(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetResults()
	if len(res) != 3 || res[0].GetHostname() != "WS-A" || res[1].GetHostname() != "WS-B" || res[2].GetHostname() != "WS-C" {
		t.Fatalf("results %v: want all three, by hostname", res)
	}
	if res[0].GetReport().GetChecks()[0].GetName() != "dtrace.version" ||
		res[1].GetError() != "answered with a *livedumpv1.ProvisionReport" ||
		!strings.HasPrefix(res[2].GetError(), "offline: not checked") || rec.target != "site=ber" {
		t.Fatalf("results %v, target %q", res, rec.target)
	}
	if d := r.local.Sent()[0].Directive.GetSelfTest(); d.GetTimeout().AsDuration() != 3*time.Second {
		t.Fatalf("self-test directive %v: want the call's wait as its timeout", d)
	}
}

func TestCheckAgentsBoundsTheSelection(t *testing.T) {
	r := newRig(t, false)
	for i := range MaxCheckAgents + 1 {
		r.addAgent(t, store.Agent{ID: fmt.Sprintf("%016x", i+1), Hostname: fmt.Sprintf("WS-%03d", i), Labels: map[string]string{"site": "ber"}})
	}
	_, err := r.fleet.CheckAgents(ctxAs(operator), &livedumpv1.CheckAgentsRequest{Selector: "site=ber"})
	wantCode(t, err, codes.InvalidArgument, fmt.Sprintf("selector: matches %d agents", MaxCheckAgents+1))
	if len(r.local.Sent()) != 0 {
		t.Fatal("directives sent for a refused selection")
	}
}

func TestValidSelfTestReport(t *testing.T) {
	ok := func() *livedumpv1.SelfTestReport {
		return &livedumpv1.SelfTestReport{DirectiveId: "0a1b-2c", Checks: []*livedumpv1.SelfTestCheck{
			{Name: "dtrace.version", Status: livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS, Evidence: "2.0"}}}
	}
	if err := validSelfTestReport(ok()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(r *livedumpv1.SelfTestReport)
		field string
	}{
		{"no directive", func(r *livedumpv1.SelfTestReport) { r.DirectiveId = "" }, "self_test_report.directive_id: "},
		{"directive not hex", func(r *livedumpv1.SelfTestReport) { r.DirectiveId = "XYZ" }, "self_test_report.directive_id: "},
		{"too many checks", func(r *livedumpv1.SelfTestReport) {
			for range MaxSelfTestChecks {
				r.Checks = append(r.Checks, r.Checks[0])
			}
		}, "self_test_report.checks: "},
		{"bad name", func(r *livedumpv1.SelfTestReport) { r.Checks[0].Name = "Dtrace Version" }, "self_test_report.checks[0].name: "},
		{"unknown status", func(r *livedumpv1.SelfTestReport) { r.Checks[0].Status = 99 }, "self_test_report.checks[0].status: unknown status 99"},
		{"unspecified status", func(r *livedumpv1.SelfTestReport) { r.Checks[0].Status = 0 }, "self_test_report.checks[0].status: "},
		{"bad evidence", func(r *livedumpv1.SelfTestReport) { r.Checks[0].Evidence = "\xff" }, "self_test_report.checks[0].evidence: "},
		{"long error", func(r *livedumpv1.SelfTestReport) { r.Error = strings.Repeat("e", 1025) }, "self_test_report.error: "},
		{"too large", func(r *livedumpv1.SelfTestReport) { r.Error = strings.Repeat("e", MaxSelfTestReportBytes) }, "self_test_report: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := ok()
			tc.edit(rep)
			wantCode(t, validSelfTestReport(rep), codes.InvalidArgument, tc.field)
		})
	}
}
