package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxCheckWait is the controller's bound on CheckAgents' wait.
const maxCheckWait = 10 * time.Minute

func (a *app) agentsCheckCmd() *cobra.Command {
	var (
		sel  string
		wait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check -l SELECTOR",
		Short: "Run the self-test on the matching machines and show each one's checks",
		Long: `Run ` + "`livedump-agent selftest`" + ` on each online agent matching the selector
(at most 128 per call) and print, per machine, a summary line and one line
per check: PASS, FAIL or UNKNOWN with the evidence. The self-test changes
nothing on the machines; it runs dtrace to list probes, compile a sample
script without enabling it, and watch one syscall return fire. Needs role
operator. Exit status 1 when any check failed or any agent did not answer.
See docs/selftest.md.`,
		Example: "  livedumpctl agents check -l role=vdi\n  livedumpctl agents check -l hostname=VDI-0042 -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(sel) == "" {
				return usageErrorf(cmd, "-l/--selector: required; a self-test runs dtrace on every machine it selects (use -l 'hostname' to mean every agent)")
			}
			if _, err := selector.Parse(sel); err != nil {
				return usageErrorf(cmd, "-l/--selector: %v", err)
			}
			if wait < time.Second || wait > maxCheckWait {
				return usageErrorf(cmd, "--wait: must be between 1s and %s, got %s", maxCheckWait, wait)
			}
			resp, s, err := callLonger(a, cmd, wait, fleetClient.CheckAgents, &livedumpv1.CheckAgentsRequest{Selector: sel, Wait: durationpb.New(wait)})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				if err := writeJSON(a.stdout, resp); err != nil {
					return err
				}
			} else if err := writeCheckResults(a.stdout, resp.GetResults()); err != nil {
				return err
			}
			return checkFailure(resp.GetResults())
		},
	}
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label `SELECTOR` of the machines (required)")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for the agents' reports")
	return cmd
}

func checkStatusName(s livedumpv1.SelfTestStatus) string {
	if !enumname.Valid(s) {
		return "UNKNOWN"
	}
	return strings.ToUpper(enumname.Name(s, "_"))
}

// writeCheckResults prints a summary table (one row per machine), then
// each machine's checks in the self-test's own line format.
func writeCheckResults(w io.Writer, results []*livedumpv1.AgentSelfTestResult) error {
	t := newTable(w, "HOSTNAME", "AGENT", "PASS", "FAIL", "UNKNOWN", "RESULT")
	for _, r := range results {
		counts := map[string]int{}
		for _, c := range r.GetReport().GetChecks() {
			counts[checkStatusName(c.GetStatus())]++
		}
		result := "ok"
		switch {
		case r.GetError() != "":
			result = r.GetError()
		case r.GetReport().GetError() != "":
			result = "not run: " + r.GetReport().GetError()
		case counts["FAIL"] > 0:
			result = "FAIL"
		}
		t.row(r.GetHostname(), r.GetAgentId(), fmt.Sprint(counts["PASS"]), fmt.Sprint(counts["FAIL"]), fmt.Sprint(counts["UNKNOWN"]), result)
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, r := range results {
		if len(r.GetReport().GetChecks()) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s):\n", cell(r.GetHostname()), r.GetAgentId())
		for _, c := range r.GetReport().GetChecks() {
			fmt.Fprintf(w, "  %-7s  %-23s  %s\n", checkStatusName(c.GetStatus()), cell(c.GetName()), cell(c.GetEvidence()))
		}
	}
	return nil
}

// checkFailure makes the exit status 1 when a check failed or an agent did
// not answer, so scripts notice.
func checkFailure(results []*livedumpv1.AgentSelfTestResult) error {
	if len(results) == 0 {
		return fmt.Errorf("no agent matches the selector")
	}
	bad := 0
	for _, r := range results {
		failed := r.GetError() != "" || r.GetReport().GetError() != ""
		for _, c := range r.GetReport().GetChecks() {
			failed = failed || c.GetStatus() == livedumpv1.SelfTestStatus_SELF_TEST_STATUS_FAIL
		}
		if failed {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d machines failed a check or did not answer (see above)", bad, len(results))
	}
	return nil
}
