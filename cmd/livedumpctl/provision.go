package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (a *app) provisionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Plan, apply and revert the live-kernel-dump setup on a group of machines",
		Long: `Plan, apply and revert the controller's provisioning profile (live kernel
dump registry values, the dtrace boot flag, DTrace itself, the symbol path) on
the online agents matching a selector.

Offline agents are listed as offline and left untouched: run the command again
when they are back. Every change is journaled on the machine first, so revert
restores exactly what was there before.`,
	}
	groupCommand(cmd)
	cmd.AddCommand(a.provisionActionCmd("plan"), a.provisionActionCmd("apply"), a.provisionActionCmd("revert"))
	return cmd
}

func (a *app) provisionActionCmd(action string) *cobra.Command {
	var (
		sel    string
		reboot string
		msi    string
		wait   time.Duration
	)
	short := map[string]string{
		"plan":   "Show, per machine, each step with its current and desired value, and what blocks it",
		"apply":  "Apply the profile; --reboot if-needed restarts machines whose boot change needs it",
		"revert": "Restore every value provisioning changed to what it was before",
	}[action]
	defWait := 5 * time.Minute
	if action == "plan" {
		defWait = 30 * time.Second
	}
	cmd := &cobra.Command{
		Use:   action + " -l SELECTOR",
		Short: short,
		Example: map[string]string{
			"plan":   "  livedumpctl provision plan -l role=vdi\n  livedumpctl provision plan -l role=vdi -o json",
			"apply":  "  livedumpctl provision apply -l role=vdi --dtrace-msi DTrace.amd64.msi --reboot if-needed",
			"revert": "  livedumpctl provision revert -l role=vdi --reboot if-needed",
		}[action],
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sel == "" {
				return usageErrorf(cmd, "-l/--selector: required; provisioning never targets the whole fleet by accident (use -l 'hostname' to mean every agent)")
			}
			if _, err := selector.Parse(sel); err != nil {
				return usageErrorf(cmd, "-l/--selector: %v", err)
			}
			policy, err := parseReboot(reboot)
			if err != nil {
				return usageErrorf(cmd, "%v", err)
			}
			if wait <= 0 || wait > 30*time.Minute {
				return usageErrorf(cmd, "--wait: must be between 1s and 30m, got %s", wait)
			}
			w := durationpb.New(wait)
			var results []*livedumpv1.AgentProvisionResult
			switch action {
			case "plan":
				resp, s, err := callLonger(a, cmd, wait, fleetClient.PlanProvision, &livedumpv1.PlanProvisionRequest{Selector: sel, Wait: w})
				if err != nil {
					return err
				}
				if s.output == outputJSON {
					return writeJSON(a.stdout, resp)
				}
				results = resp.GetResults()
			case "apply":
				var sum string
				if msi != "" {
					if sum, err = a.uploadArtifact(cmd, msi); err != nil {
						return err
					}
				}
				resp, s, err := callLonger(a, cmd, wait, fleetClient.ApplyProvision, &livedumpv1.ApplyProvisionRequest{Selector: sel, Reboot: policy, DtraceMsiSha256: sum, Wait: w})
				if err != nil {
					return err
				}
				if s.output == outputJSON {
					return writeJSON(a.stdout, resp)
				}
				results = resp.GetResults()
			case "revert":
				resp, s, err := callLonger(a, cmd, wait, fleetClient.RevertProvision, &livedumpv1.RevertProvisionRequest{Selector: sel, Reboot: policy, Wait: w})
				if err != nil {
					return err
				}
				if s.output == outputJSON {
					return writeJSON(a.stdout, resp)
				}
				results = resp.GetResults()
			}
			if err := writeProvisionResults(a.stdout, results); err != nil {
				return err
			}
			return provisionFailure(results)
		},
	}
	cmd.Flags().StringVarP(&sel, "selector", "l", "", "label `SELECTOR` of the machines (required)")
	cmd.Flags().DurationVar(&wait, "wait", defWait, "how long to wait for the agents' reports")
	if action != "plan" {
		cmd.Flags().StringVar(&reboot, "reboot", "never", "reboot `POLICY`: never (report reboot-required) or if-needed")
		_ = cmd.RegisterFlagCompletionFunc("reboot", cobra.FixedCompletions([]string{"never", "if-needed"}, cobra.ShellCompDirectiveNoFileComp))
	}
	if action == "apply" {
		cmd.Flags().StringVar(&msi, "dtrace-msi", "", "DTrace installer `FILE` to upload and install from now on (needs role admin; each agent still runs it only if it is signed by a publisher on its installer_publishers or its SHA-256 is on its installer_sha256)")
		_ = cmd.MarkFlagFilename("dtrace-msi", "msi")
	}
	return cmd
}

func parseReboot(s string) (livedumpv1.RebootPolicy, error) {
	if s == "" {
		return livedumpv1.RebootPolicy_REBOOT_POLICY_NEVER, nil
	}
	if p, ok := enumname.Parse[livedumpv1.RebootPolicy](s, "-"); ok {
		return p, nil
	}
	return 0, fmt.Errorf("--reboot: %q: want never or if-needed", s)
}

// provisionFailure makes the exit status non-zero when any agent failed or
// did not answer, naming how many, so scripts notice.
func provisionFailure(results []*livedumpv1.AgentProvisionResult) error {
	failed := 0
	for _, r := range results {
		if r.GetError() != "" || r.GetReport().GetState() == livedumpv1.ProvisionState_PROVISION_STATE_FAILED {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d agents failed or did not report (see the table above)", failed, len(results))
	}
	if len(results) == 0 {
		return errors.New("no agent matches the selector")
	}
	return nil
}

// provisionStateName is the state as SREs read it: "reboot-required".
func provisionStateName(s livedumpv1.ProvisionState) string {
	if s == livedumpv1.ProvisionState_PROVISION_STATE_UNSPECIFIED {
		return ""
	}
	return enumname.Name(s, "-")
}

// writeProvisionResults prints one block per agent: its state, then a row
// per step with current -> desired and the outcome.
func writeProvisionResults(w io.Writer, results []*livedumpv1.AgentProvisionResult) error {
	for i, r := range results {
		if i > 0 {
			fmt.Fprintln(w)
		}
		rep := r.GetReport()
		head := fmt.Sprintf("%s (%s): ", cell(r.GetHostname()), r.GetAgentId())
		switch {
		case r.GetError() != "":
			fmt.Fprintln(w, head+cell(r.GetError()))
			continue
		default:
			line := provisionStateName(rep.GetState())
			if d := rep.GetDetail(); d != "" {
				line += ": " + d
			}
			if rep.GetRebootAt() != nil {
				line += " (reboot at " + formatTime(rep.GetRebootAt()) + ")"
			}
			fmt.Fprintln(w, head+cell(line))
		}
		for _, b := range rep.GetBlockers() {
			fmt.Fprintln(w, "  blocker: "+cell(b))
		}
		for _, n := range rep.GetNotes() {
			fmt.Fprintln(w, "  note: "+cell(n))
		}
		if len(rep.GetSteps()) == 0 {
			continue
		}
		t := newTable(w, "  STEP", "CURRENT", "DESIRED", "REBOOT", "OUTCOME")
		for _, s := range rep.GetSteps() {
			reb := ""
			if s.GetNeedsReboot() {
				reb = "yes"
			}
			out := s.GetOutcome()
			if s.GetError() != "" {
				out += ": " + s.GetError()
			}
			t.row("  "+s.GetId(), s.GetCurrent(), s.GetDesired(), reb, out)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

// uploadArtifact sends a file to the controller's artifact store and returns
// its SHA-256, checked by the controller against what we computed.
func (a *app) uploadArtifact(cmd *cobra.Command, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", usageErrorf(cmd, "--dtrace-msi: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("--dtrace-msi: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("--dtrace-msi: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	client, s, closeConn, err := a.connect(cmd)
	if err != nil {
		return "", err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout+10*time.Minute)
	defer cancel()
	up, err := client.UploadArtifact(ctx)
	if err != nil {
		return "", rpcError(err, s)
	}
	hdr := &livedumpv1.Artifact{Name: filepath.Base(path), Size: st.Size(), Sha256: sum}
	if err := up.Send(&livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Header{Header: hdr}}); err != nil {
		return "", rpcError(err, s)
	}
	buf := make([]byte, 256<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := up.Send(&livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				break // the server's reason comes from CloseAndRecv
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("--dtrace-msi: %w", err)
		}
	}
	resp, err := up.CloseAndRecv()
	if err != nil {
		return "", rpcError(err, s)
	}
	if got := resp.GetArtifact().GetSha256(); !strings.EqualFold(got, sum) {
		return "", fmt.Errorf("--dtrace-msi: controller stored %s, we sent %s", got, sum)
	}
	return sum, nil
}
