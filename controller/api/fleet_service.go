package api

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// FleetConfig wires a FleetServer.
type FleetConfig struct {
	Store    store.Store
	Blobs    blobstore.Blobs
	Profile  profile.Profile
	Captures Captures
	Events   CaptureEvents
	Dumps    DumpReader
	Tokens   TokenIssuer
	// Local are the agents attached to this replica.
	Local LocalAgents
	// Peers reaches agents attached to other replicas; nil for a lone
	// controller, whose agents are all Local.
	Peers Peers
	// Revocations ends a revoked identity's streams on every replica; nil
	// for a lone controller.
	Revocations Revocations
	Logger      *slog.Logger
	Clock       clockwork.Clock
	// PageBytes is the encoded size a list response stays under (0: 1 MiB).
	PageBytes int
	// Deleter deletes dumps and captures (DeleteDump, DeleteCapture); nil:
	// those calls are unimplemented.
	Deleter Deleter
}

// FleetServer implements livedump.v1.FleetService.
type FleetServer struct {
	livedumpv1.UnimplementedFleetServiceServer
	cfg FleetConfig
}

// NewFleetServer returns the operator-facing service.
func NewFleetServer(cfg FleetConfig) *FleetServer { return &FleetServer{cfg: cfg} }

// view renders an agent with its live state. The store's last_seen is
// written at connect and disconnect only (heartbeats would be a write per
// agent per interval); for an online agent the session's last heartbeat is
// the fresher answer.
func (s *FleetServer) view(ctx context.Context, a store.Agent) *livedumpv1.Agent {
	hb, online := s.cfg.Local.LastHeartbeat(a.ID)
	if !online && s.cfg.Peers != nil {
		// Attached to another replica whose lease is live.
		online = s.cfg.Peers.Online(ctx, a.ID)
	}
	state := livedumpv1.AgentState_AGENT_STATE_OFFLINE
	switch {
	case a.Revoked:
		state = livedumpv1.AgentState_AGENT_STATE_REVOKED
	case online:
		state = livedumpv1.AgentState_AGENT_STATE_ONLINE
		if hb.After(a.LastSeen) {
			a.LastSeen = hb.UTC()
		}
	}
	return agentToProto(a, state)
}

// ListAgents implements FleetService.ListAgents.
func (s *FleetServer) ListAgents(ctx context.Context, req *livedumpv1.ListAgentsRequest) (*livedumpv1.ListAgentsResponse, error) {
	sel, err := selector.Parse(req.GetSelector())
	if err != nil {
		return nil, invalid("selector", "%v", err)
	}
	// The position is the last agent looked at, matching or not, so a page
	// goes on where the previous one stopped reading.
	host, id := "", ""
	if req.GetAfter() != "" {
		k, err := decodeCursor(req.GetAfter(), "ListAgents", 2)
		if err != nil {
			return nil, err
		}
		host, id = k[0], k[1]
	}
	resp := &livedumpv1.ListAgentsResponse{}
	pg := page{budget: s.pageBudget()}
	for {
		agents, err := s.cfg.Store.ListAgentsPage(ctx, host, id, agentChunk)
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "list agents", err)
		}
		for _, a := range agents {
			if sel.Matches(allLabels(a)) {
				v := s.view(ctx, a)
				if !pg.fits(v) {
					resp.Next = encodeCursor("ListAgents", host, id)
					return resp, nil
				}
				resp.Agents = append(resp.Agents, v)
			}
			host, id = a.Hostname, a.ID
		}
		if len(agents) < agentChunk {
			return resp, nil
		}
	}
}

// agentChunk is how many agents ListAgents reads from the store at a time.
const agentChunk = 500

func validAgentID(id string) error {
	if err := pki.ValidateAgentID(id); err != nil {
		return invalid("agent_id", "%v", err)
	}
	return nil
}

// LabelAgent implements FleetService.LabelAgent.
func (s *FleetServer) LabelAgent(ctx context.Context, req *livedumpv1.LabelAgentRequest) (*livedumpv1.LabelAgentResponse, error) {
	if err := validAgentID(req.GetAgentId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetAgentId())
	if len(req.GetSet()) == 0 && len(req.GetRemove()) == 0 {
		return nil, invalid("set", "nothing to set or remove")
	}
	if err := selector.ValidateUserLabels(req.GetSet()); err != nil {
		return nil, labelErr("set", err)
	}
	for _, k := range req.GetRemove() {
		if err := selector.ValidateKey(k); err != nil {
			return nil, labelErr("remove", err)
		}
		if selector.IsBuiltin(k) {
			return nil, invalid("remove", "label key %q: built-in label, cannot be removed", k)
		}
		if _, both := req.GetSet()[k]; both {
			return nil, invalid("remove", "label key %q is both set and removed", k)
		}
	}
	a, err := s.cfg.Store.GetAgent(ctx, req.GetAgentId())
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "agent "+req.GetAgentId(), err)
	}
	labels := maps.Clone(a.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	before := len(labels)
	maps.Copy(labels, req.GetSet())
	for _, k := range req.GetRemove() {
		delete(labels, k)
	}
	if len(labels) > selector.MaxUserLabels && len(labels) > before {
		return nil, invalid("set", "the agent would have %d labels: at most %d", len(labels), selector.MaxUserLabels)
	}
	a, err = s.cfg.Store.SetLabels(ctx, a.ID, labels)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "agent "+req.GetAgentId(), err)
	}
	return &livedumpv1.LabelAgentResponse{Agent: s.view(ctx, a)}, nil
}

// RevokeAgent implements FleetService.RevokeAgent.
func (s *FleetServer) RevokeAgent(ctx context.Context, req *livedumpv1.RevokeAgentRequest) (*livedumpv1.RevokeAgentResponse, error) {
	if err := validAgentID(req.GetAgentId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetAgentId())
	a, err := s.cfg.Store.RevokeAgent(ctx, req.GetAgentId(), s.cfg.Clock.Now().UTC())
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "agent "+req.GetAgentId(), err)
	}
	if s.cfg.Revocations != nil {
		s.cfg.Revocations.Revoked(ctx, a.ID)
	} else {
		s.cfg.Local.Disconnect(a.ID, fleet.ErrRevoked)
	}
	s.cfg.Logger.Info("agent revoked", "agent_id", a.ID)
	return &livedumpv1.RevokeAgentResponse{Agent: s.view(ctx, a)}, nil
}

// CreateToken implements FleetService.CreateToken.
func (s *FleetServer) CreateToken(ctx context.Context, req *livedumpv1.CreateTokenRequest) (*livedumpv1.CreateTokenResponse, error) {
	var ttl time.Duration
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil {
			return nil, invalid("ttl", "%v", err)
		}
		ttl = req.GetTtl().AsDuration()
		if ttl <= 0 {
			return nil, invalid("ttl", "must be positive, got %s", ttl)
		}
	}
	id, _ := IdentityFromContext(ctx)
	t, secret, err := s.cfg.Tokens.CreateToken(ctx, enroll.TokenRequest{
		Uses:      int(req.GetUses()),
		TTL:       ttl,
		Labels:    req.GetLabels(),
		CreatedBy: id.String(),
	})
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "create token", err)
	}
	setAuditTarget(ctx, t.ID)
	return &livedumpv1.CreateTokenResponse{Token: tokenToProto(t), Secret: secret}, nil
}

// ListTokens implements FleetService.ListTokens.
// Tokens are few (an admin creates each) and small (bounded labels): they
// are paged here, over the store's full list, in its order.
func (s *FleetServer) ListTokens(ctx context.Context, req *livedumpv1.ListTokensRequest) (*livedumpv1.ListTokensResponse, error) {
	var after store.Token
	if req.GetAfter() != "" {
		k, err := decodeCursor(req.GetAfter(), "ListTokens", 2)
		if err != nil {
			return nil, err
		}
		if after.Created, err = parseCursorTime(k[0], "ListTokens"); err != nil {
			return nil, err
		}
		after.ID = k[1]
	}
	ts, err := s.cfg.Store.ListTokens(ctx)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list tokens", err)
	}
	// Newest first, then by ID descending (the store's order, made exact).
	before := func(a, b store.Token) bool {
		if !a.Created.Equal(b.Created) {
			return a.Created.After(b.Created)
		}
		return a.ID > b.ID
	}
	sort.SliceStable(ts, func(i, j int) bool { return before(ts[i], ts[j]) })
	start := 0
	if after.ID != "" {
		start = sort.Search(len(ts), func(i int) bool { return before(after, ts[i]) })
	}
	resp := &livedumpv1.ListTokensResponse{}
	pg := page{budget: s.pageBudget()}
	for i, t := range ts[start:] {
		p := tokenToProto(t)
		if !pg.fits(p) {
			last := ts[start+i-1]
			resp.Next = encodeCursor("ListTokens", cursorTime(last.Created), last.ID)
			break
		}
		resp.Tokens = append(resp.Tokens, p)
	}
	return resp, nil
}

// RevokeToken implements FleetService.RevokeToken.
func (s *FleetServer) RevokeToken(ctx context.Context, req *livedumpv1.RevokeTokenRequest) (*livedumpv1.RevokeTokenResponse, error) {
	if req.GetId() == "" {
		return nil, invalid("id", "missing")
	}
	setAuditTarget(ctx, req.GetId())
	t, err := s.cfg.Store.RevokeToken(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "token "+req.GetId(), err)
	}
	return &livedumpv1.RevokeTokenResponse{Token: tokenToProto(t)}, nil
}

// ListAudit implements FleetService.ListAudit.
func (s *FleetServer) ListAudit(ctx context.Context, req *livedumpv1.ListAuditRequest) (*livedumpv1.ListAuditResponse, error) {
	limit := int(req.GetLimit())
	if limit < 0 || limit > 10000 {
		return nil, invalid("limit", "must be between 0 and 10000, got %d", limit)
	}
	if limit == 0 {
		limit = 100
	}
	f := store.AuditFilter{}
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, invalid("since", "%v", err)
		}
		f.Since = req.GetSince().AsTime()
	}
	if req.GetAfter() != "" {
		k, err := decodeCursor(req.GetAfter(), "ListAudit", 2)
		if err != nil {
			return nil, err
		}
		if f.BeforeTime, err = parseCursorTime(k[0], "ListAudit"); err != nil {
			return nil, err
		}
		if f.BeforeID, err = strconv.ParseInt(k[1], 10, 64); err != nil || f.BeforeID <= 0 {
			return nil, invalid("after", "not a page token of ListAudit: pass the next field of the previous response unchanged")
		}
	}
	resp := &livedumpv1.ListAuditResponse{}
	pg := page{budget: s.pageBudget()}
	next := func(e store.AuditEntry) string {
		return encodeCursor("ListAudit", cursorTime(e.Time), strconv.FormatInt(e.ID, 10))
	}
	// Read in chunks: entries can be large, and only a page is kept.
	for {
		f.Limit = min(limit-len(resp.Entries), auditChunk)
		es, err := s.cfg.Store.ListAudit(ctx, f)
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "list audit", err)
		}
		for _, e := range es {
			p := auditToProto(e)
			if proto.Size(p) > pg.budget {
				p.Details = fmt.Sprintf(`{"omitted":"%d bytes of details, too large to list"}`, len(e.Details))
			}
			if !pg.fits(p) {
				return resp, nil // Next was set for the entry before
			}
			resp.Entries = append(resp.Entries, p)
			f.BeforeTime, f.BeforeID = e.Time, e.ID
			resp.Next = next(e)
		}
		if len(resp.Entries) >= limit {
			return resp, nil // more may follow
		}
		if len(es) < f.Limit {
			resp.Next = ""
			return resp, nil
		}
	}
}

// auditChunk is how many audit entries ListAudit reads at a time.
const auditChunk = 256
