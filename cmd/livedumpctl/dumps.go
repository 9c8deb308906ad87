package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func dumpStateName(s livedumpv1.DumpState) string {
	return enumname.Name(s, "-")
}

func (a *app) dumpsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dumps",
		Short: "List, download and pull live kernel dumps",
	}
	groupCommand(cmd)
	var captureID, agentRef string
	list := &cobra.Command{
		Use:   "list [--capture ID] [--agent AGENT]",
		Short: "List dumps, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			agentID := ""
			if agentRef != "" {
				var err error
				if agentID, err = a.resolveAgentArg(cmd, "--agent", agentRef); err != nil {
					return err
				}
			}
			resp := &livedumpv1.ListDumpsResponse{}
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				page, err := client.ListDumps(ctx, &livedumpv1.ListDumpsRequest{CaptureId: captureID, AgentId: agentID, After: after})
				resp.Dumps = append(resp.Dumps, page.GetDumps()...)
				return page.GetNext(), err
			})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			now := a.now()
			t := newTable(a.stdout, "ID", "HOSTNAME", "CAPTURE", "FILE", "SIZE", "STATE", "SHA256", "AGE")
			for _, d := range resp.GetDumps() {
				t.row(d.GetId(), d.GetHostname(), d.GetCaptureId(), d.GetFileName(), humanSize(d.GetSize()), dumpStateName(d.GetState()), d.GetSha256(), age(now, d.GetWritten()))
			}
			return t.flush()
		},
	}
	list.Flags().StringVar(&captureID, "capture", "", "only this capture's dumps")
	list.Flags().StringVar(&agentRef, "agent", "", "only this agent's dumps: its `ID or HOSTNAME`")

	get := a.dumpsGetCmd()

	pull := &cobra.Command{
		Use:   "pull ID",
		Short: "Ask the agent to upload a dump it kept hash-only",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, s, err := call(a, cmd, fleetClient.PullDump, &livedumpv1.PullDumpRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			fmt.Fprintf(a.stdout, "dump %s: upload requested from %s (now %s)\n", resp.GetDump().GetId(), resp.GetDump().GetAgentId(), dumpStateName(resp.GetDump().GetState()))
			return nil
		},
	}
	cmd.AddCommand(list, get, pull, a.dumpsDeleteCmd())
	return cmd
}
