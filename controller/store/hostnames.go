package store

import (
	"context"
	"errors"
)

// hostnameChunk is how many agents Hostnames reads at a time when it reads
// the fleet; up to byIDLimit agents it reads them one by one instead, which
// costs less than reading every agent.
const (
	hostnameChunk = 500
	byIDLimit     = 512
)

// AgentReader reads agents one by one or a page at a time: all Hostnames
// needs of a Store.
type AgentReader interface {
	GetAgent(ctx context.Context, id string) (Agent, error)
	ListAgentsPage(ctx context.Context, afterHostname, afterID string, limit int) ([]Agent, error)
}

// HostnameReader reads the hostnames of given agents alone, without their
// rows (sqlstore's stores do).
type HostnameReader interface {
	AgentHostnames(ctx context.Context, ids []string) (map[string]string, error)
}

// Hostnames returns agent ID -> hostname for the agents in want (every
// agent when want is nil; unknown IDs are left out). A few agents are read
// by ID; otherwise the fleet is read a page at a time, so memory holds the
// answer and one page of agents, never every agent with its labels.
func Hostnames(ctx context.Context, s AgentReader, want map[string]bool) (map[string]string, error) {
	if hr, ok := s.(HostnameReader); ok && want != nil && len(want) > byIDLimit {
		ids := make([]string, 0, len(want))
		for id := range want {
			ids = append(ids, id)
		}
		return hr.AgentHostnames(ctx, ids)
	}
	out := map[string]string{}
	if want != nil && len(want) <= byIDLimit {
		for id := range want {
			a, err := s.GetAgent(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out[id] = a.Hostname
		}
		return out, nil
	}
	host, id := "", ""
	for {
		page, err := s.ListAgentsPage(ctx, host, id, hostnameChunk)
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			if want == nil || want[a.ID] {
				out[a.ID] = a.Hostname
			}
		}
		if len(page) < hostnameChunk {
			return out, nil
		}
		host, id = page[len(page)-1].Hostname, page[len(page)-1].ID
	}
}
