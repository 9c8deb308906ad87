package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/editdist"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Where an agent is named (AGENT arguments, --agent flags), its ID or its
// hostname is accepted. Hostnames are compared case-insensitively, as
// Windows compares them.

// hostnameRe is what an agent reference may look like when it is not an
// agent ID: a DNS or NetBIOS name.
var hostnameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// maxResolvePages bounds how many pages of ListAgents (about 1 MiB each)
// one resolution reads when the cheap lookup by hostname label was not
// enough: a mixed-case hostname, an agent ID, or a name nobody has.
const maxResolvePages = 8

// checkAgentRef checks the syntax of an agent reference locally, before
// any call: what names it (AGENT, --agent) and why it cannot be one.
func checkAgentRef(what, ref string) error {
	if pki.ValidateAgentID(ref) == nil || hostnameRe.MatchString(ref) {
		return nil
	}
	return fmt.Errorf("%s %q: neither an agent id (2-64 characters of a-z, 0-9 and '-') nor a hostname (letters, digits, '.', '_' and '-')", what, ref)
}

// agentMatches is what a resolution found.
type agentMatches struct {
	byID     map[string]*livedumpv1.Agent // ID or hostname matches, by ID
	complete bool                         // the whole fleet was read
	seen     []*livedumpv1.Agent          // the agents read, for suggestions
}

func hostOf(ag *livedumpv1.Agent) string {
	if h := ag.GetHostname(); h != "" {
		return h
	}
	return ag.GetInventory().GetHostname()
}

// findAgents looks ref up as an ID and as a hostname. First by the
// hostname label (ref as typed, upper and lower case: one cheap call);
// then, unless that found exactly one agent for a ref that cannot be an
// ID, by reading the fleet (at most maxResolvePages pages).
func findAgents(ctx context.Context, client fleetClient, s settings, ref string) (agentMatches, error) {
	m := agentMatches{byID: map[string]*livedumpv1.Agent{}}
	add := func(ag *livedumpv1.Agent) {
		if ag.GetId() == ref || strings.EqualFold(hostOf(ag), ref) {
			m.byID[ag.GetId()] = ag
		}
	}
	variants := []string{ref}
	for _, v := range []string{strings.ToUpper(ref), strings.ToLower(ref)} {
		if !slices.Contains(variants, v) {
			variants = append(variants, v)
		}
	}
	if selector.ValidateValue(selector.LabelHostname, ref) == nil && len(ref) <= 63 {
		sel := selector.LabelHostname + " in (" + strings.Join(variants, ",") + ")"
		err := listAgentPages(ctx, client, s, sel, maxResolvePages, func(page []*livedumpv1.Agent) {
			for _, ag := range page {
				add(ag)
			}
		})
		if err != nil && err != errMorePages {
			return m, err
		}
	}
	if len(m.byID) == 1 && pki.ValidateAgentID(ref) != nil {
		return m, nil
	}
	err := listAgentPages(ctx, client, s, "", maxResolvePages, func(page []*livedumpv1.Agent) {
		for _, ag := range page {
			add(ag)
		}
		m.seen = append(m.seen, page...)
	})
	if err == errMorePages {
		return m, nil
	}
	m.complete = err == nil
	return m, err
}

// errMorePages stops listAgentPages at its page limit.
var errMorePages = fmt.Errorf("more pages")

// listAgentPages reads the agents matching sel page by page, each call
// bounded by the timeout; at most maxPages pages (0: all), and then
// errMorePages if more follow.
func listAgentPages(ctx context.Context, client fleetClient, s settings, sel string, maxPages int, each func([]*livedumpv1.Agent)) error {
	after := ""
	for n := 1; ; n++ {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		resp, err := client.ListAgents(cctx, &livedumpv1.ListAgentsRequest{Selector: sel, After: after})
		cancel()
		if err != nil {
			return rpcError(err, s)
		}
		each(resp.GetAgents())
		if resp.GetNext() == "" {
			return nil
		}
		if resp.GetNext() == after {
			return fmt.Errorf("controller %s: the list does not advance past page token %q", s.controller, after)
		}
		if maxPages > 0 && n >= maxPages {
			return errMorePages
		}
		after = resp.GetNext()
	}
}

// resolveAgent turns ref (an agent ID or hostname) into the agent's ID.
// An ambiguous ref (several agents share the hostname, or it is one
// agent's ID and another's hostname) and an unknown one are usage errors
// (exit 2) that list the candidates, or say which names come close. A
// well-formed agent ID that no agent read has, in a fleet too large to
// read whole, is passed on for the controller to answer.
func resolveAgent(cmd *cobra.Command, client fleetClient, s settings, what, ref string) (string, error) {
	if err := checkAgentRef(what, ref); err != nil {
		return "", usageErrorf(cmd, "%v", err)
	}
	m, err := findAgents(cmd.Context(), client, s, ref)
	if err != nil {
		return "", err
	}
	switch len(m.byID) {
	case 1:
		for id := range m.byID {
			return id, nil
		}
	case 0:
		if pki.ValidateAgentID(ref) == nil && !m.complete {
			return ref, nil
		}
		msg := fmt.Sprintf("%s %q: no agent has this ID or hostname", what, ref)
		if !m.complete {
			msg += fmt.Sprintf(" (hostnames compared in any case among the first %d agents; give the agent ID)", len(m.seen))
		}
		if s := suggestAgents(ref, m.seen); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		} else {
			msg += "; see 'livedumpctl agents list'"
		}
		return "", usageErrorf(cmd, "%s", msg)
	}
	cands := make([]*livedumpv1.Agent, 0, len(m.byID))
	for _, ag := range m.byID {
		cands = append(cands, ag)
	}
	slices.SortFunc(cands, func(a, b *livedumpv1.Agent) int {
		return strings.Compare(hostOf(a)+"\x00"+a.GetId(), hostOf(b)+"\x00"+b.GetId())
	})
	parts := make([]string, len(cands))
	for i, ag := range cands {
		parts[i] = fmt.Sprintf("%s (id %s, %s)", cell(hostOf(ag)), ag.GetId(), agentState(ag.GetState()))
	}
	return "", usageErrorf(cmd, "%s %q is ambiguous: %d agents match: %s; give the agent ID", what, ref, len(cands), strings.Join(parts, ", "))
}

// suggestAgents returns up to 3 hostnames or IDs close to ref: the ones
// that start with it (in any case), else those at the smallest edit
// distance (at most 2, or 1 for short names), for "did you mean". Names
// that differ only in case are offered once, hostnames before IDs.
func suggestAgents(ref string, seen []*livedumpv1.Agent) []string {
	up := strings.ToUpper(ref)
	var names []string
	have := map[string]bool{}
	for _, pass := range []func(*livedumpv1.Agent) string{hostOf, (*livedumpv1.Agent).GetId} {
		for _, ag := range seen {
			if n := pass(ag); n != "" && !have[strings.ToUpper(n)] {
				have[strings.ToUpper(n)] = true
				names = append(names, n)
			}
		}
	}
	var prefix []string
	for _, n := range names {
		if strings.HasPrefix(strings.ToUpper(n), up) {
			prefix = append(prefix, n)
		}
	}
	if len(prefix) > 0 {
		slices.Sort(prefix)
		return prefix[:min(len(prefix), 3)]
	}
	best := 3
	if len(ref) < 8 {
		best = 2
	}
	var cands []string
	for _, n := range names {
		d := editdist.Distance(up, strings.ToUpper(n), best+1)
		switch {
		case d < best:
			best, cands = d, []string{n}
		case d == best && len(cands) > 0 && len(cands) < 3:
			cands = append(cands, n)
		}
	}
	slices.Sort(cands)
	return cands
}

// resolveAgentArg connects and resolves one agent reference, for commands
// that then make their own call.
func (a *app) resolveAgentArg(cmd *cobra.Command, what, ref string) (string, error) {
	if err := checkAgentRef(what, ref); err != nil {
		return "", usageErrorf(cmd, "%v", err)
	}
	client, s, closeConn, err := a.connect(cmd)
	if err != nil {
		return "", err
	}
	defer closeConn()
	return resolveAgent(cmd, client, s, what, ref)
}
