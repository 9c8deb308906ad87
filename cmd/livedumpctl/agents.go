package main

import (
	"context"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (a *app) agentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List, describe, label, check and revoke agents",
	}
	groupCommand(cmd)
	cmd.AddCommand(a.agentsListCmd(), a.agentsDescribeCmd(), a.agentsLabelCmd(), a.agentsRevokeCmd(), a.agentsCheckCmd())
	return cmd
}

func (a *app) agentsListCmd() *cobra.Command {
	var (
		sel  string
		port int
	)
	cmd := &cobra.Command{
		Use:   "list [-l SELECTOR]",
		Short: "List agents, optionally only those matching a label selector",
		Long: `List agents, optionally only those matching a label selector.

The selector has the Kubernetes syntax, e.g. 'site=ams,role in (vdi,kiosk),!canary'.
Every agent has the built-in labels hostname and os.build. The LABELS column
shows the user labels; -o json shows everything.

-o prometheus-sd prints a Prometheus file_sd target list of the online and
offline agents: <hostname>:<--metrics-port>, labelled agent_id, hostname and
livedump_label_<key> for each user label (see deploy/prometheus).`,
		Example: `  livedumpctl agents list -l role=vdi
  livedumpctl agents list -l 'site=ams,role in (vdi,kiosk)' -o json
  livedumpctl agents list -l site=ams -o prometheus-sd > /etc/prometheus/livedump/agents.json`,
		Annotations: map[string]string{annotationOutputs: outputPrometheusSD},
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Fail fast, without a round trip, on a malformed selector.
			if _, err := selector.Parse(sel); err != nil {
				return usageErrorf(cmd, "-l/--selector: %v", err)
			}
			if port < 1 || port > 65535 {
				return usageErrorf(cmd, "--metrics-port: %d is not a TCP port (1-65535)", port)
			}
			resp := &livedumpv1.ListAgentsResponse{}
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				page, err := client.ListAgents(ctx, &livedumpv1.ListAgentsRequest{Selector: sel, After: after})
				resp.Agents = append(resp.Agents, page.GetAgents()...)
				return page.GetNext(), err
			})
			if err != nil {
				return err
			}
			switch s.output {
			case outputJSON:
				return writeJSON(a.stdout, resp)
			case outputPrometheusSD:
				return writePrometheusSD(a.stdout, resp.GetAgents(), port)
			}
			return writeAgents(a.stdout, a.now(), resp.GetAgents())
		},
	}
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label `SELECTOR`, e.g. 'site=ams,role in (vdi,kiosk)'")
	cmd.Flags().IntVar(&port, "metrics-port", defaultMetricsPort, "agents' metrics `PORT`, for -o prometheus-sd")
	return cmd
}

func (a *app) agentsLabelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "label AGENT KEY=VALUE... [KEY-]...",
		Short: "Set (KEY=VALUE) and remove (KEY-) user labels of an agent",
		Long: `Set (KEY=VALUE) and remove (KEY-) user labels of an agent, like kubectl label.
AGENT is the agent's ID or its hostname (in any case).

The built-in labels hostname and os.build come from the agent's inventory and
cannot be changed.`,
		Example: `  livedumpctl agents label ws-0042 role=vdi site=ams
  livedumpctl agents label ws-0042 canary-`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageErrorf(cmd, "want AGENT and at least one KEY=VALUE or KEY-")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			agent := args[0]
			if err := checkAgentRef("AGENT", agent); err != nil {
				return usageErrorf(cmd, "%v", err)
			}
			set, remove, err := selector.ParseAssignments(args[1:])
			if err != nil {
				return usageErrorf(cmd, "%v", err)
			}
			for _, k := range append(mapKeys(set), remove...) {
				if selector.IsBuiltin(k) {
					return usageErrorf(cmd, "label key %q: built-in label, set from the agent's inventory; it cannot be changed by hand", k)
				}
				if _, ok := set[k]; ok && slices.Contains(remove, k) {
					return usageErrorf(cmd, "label key %q: both set and removed", k)
				}
			}
			if agent, err = a.resolveAgentArg(cmd, "AGENT", agent); err != nil {
				return err
			}
			resp, s, err := call(a, cmd, fleetClient.LabelAgent, &livedumpv1.LabelAgentRequest{AgentId: agent, Set: set, Remove: remove})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeAgents(a.stdout, a.now(), []*livedumpv1.Agent{resp.GetAgent()})
		},
	}
}

func (a *app) agentsRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke AGENT",
		Short: "Revoke an agent (by ID or hostname): its stream is closed and its next call refused",
		Args:  exactArgs("AGENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveAgentArg(cmd, "AGENT", args[0])
			if err != nil {
				return err
			}
			resp, s, err := call(a, cmd, fleetClient.RevokeAgent, &livedumpv1.RevokeAgentRequest{AgentId: id})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeAgents(a.stdout, a.now(), []*livedumpv1.Agent{resp.GetAgent()})
		},
	}
}

// writeAgents prints the agents table. The built-in labels are columns of
// their own (HOSTNAME, BUILD), so LABELS holds only the user labels.
func writeAgents(w io.Writer, now time.Time, agents []*livedumpv1.Agent) error {
	t := newTable(w, "ID", "HOSTNAME", "STATE", "BUILD", "EDITION", "VERSION", "LAST SEEN", "PROVISIONING", "LABELS")
	for _, ag := range agents {
		if ag == nil {
			continue
		}
		inv := ag.GetInventory()
		host := ag.GetHostname()
		if host == "" {
			host = inv.GetHostname()
		}
		t.row(ag.GetId(), host, agentState(ag.GetState()), build(ag), inv.GetOsEdition(),
			inv.GetAgentVersion(), ago(now, ag.GetLastSeen()), provisioning(ag), formatLabels(ag.GetLabels(), true))
	}
	return t.flush()
}

func agentState(s livedumpv1.AgentState) string {
	if !enumname.Valid(s) {
		return "unknown"
	}
	return enumname.Name(s, "-")
}

// build renders the Windows build with its update revision, e.g.
// "22631.4037", the form winver shows.
func build(ag *livedumpv1.Agent) string {
	inv := ag.GetInventory()
	b := inv.GetOsBuild()
	if b == "" {
		b = ag.GetLabels()[selector.LabelOSBuild]
	}
	if b != "" && inv.GetOsUbr() != 0 {
		b += "." + strconv.FormatUint(uint64(inv.GetOsUbr()), 10)
	}
	return b
}

func mapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// provisioning renders the provisioning state the way SREs read it:
// "ready", "blocked: BitLocker is on...", "failed: bcd.dtrace: ...".
func provisioning(ag *livedumpv1.Agent) string {
	st := provisionStateName(ag.GetProvisionState())
	if st == "" {
		return "-"
	}
	if d := ag.GetProvisionDetail(); d != "" && (st == "blocked" || st == "failed") {
		return st + ": " + d
	}
	return st
}
