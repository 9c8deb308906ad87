package fakes

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/fleet"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Sent is a directive a fake was asked to deliver.
type Sent struct {
	AgentID   string
	Directive *livedumpv1.Directive
}

// answers scripts how agents answer directives, for the fakes that reach
// agents (Sessions, Peers).
type answers struct {
	mu      sync.Mutex
	answer  map[string]answer
	sent    Log[Sent]
	reached func(agentID string) bool
}

type answer struct {
	report fleet.Report
	err    error
}

// Answer makes the agent answer every directive with a copy of report
// (its directive ID set to the directive's), or fail with err.
func (a *answers) Answer(agentID string, report fleet.Report, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.answer == nil {
		a.answer = map[string]answer{}
	}
	a.answer[agentID] = answer{report, err}
}

// Sent returns the directives sent, in order.
func (a *answers) Sent() []Sent { return a.sent.All() }

// Exchange sends d: an agent that is not reached is offline; one without
// a scripted answer does not answer before ctx ends.
func (a *answers) Exchange(ctx context.Context, agentID string, d *livedumpv1.Directive) (fleet.Report, error) {
	a.mu.Lock()
	ans, scripted := a.answer[agentID]
	online := a.reached(agentID)
	if online || scripted {
		a.sent.add(Sent{agentID, d})
	}
	a.mu.Unlock()
	switch {
	case scripted && ans.err != nil:
		return nil, ans.err
	case scripted:
		r := proto.Clone(ans.report).(fleet.Report)
		switch m := r.(type) {
		case *livedumpv1.ProvisionReport:
			m.DirectiveId = d.GetId()
		case *livedumpv1.SelfTestReport:
			m.DirectiveId = d.GetId()
		}
		return r, nil
	case !online:
		return nil, fleet.ErrOffline
	}
	<-ctx.Done()
	return nil, ctx.Err()
}
