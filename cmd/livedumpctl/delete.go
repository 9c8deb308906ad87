package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/ids"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxDeleteArgs bounds the dumps one `dumps delete` names.
const maxDeleteArgs = 100

// dumpsDeleteCmd is `livedumpctl dumps delete ID...` (admin).
func (a *app) dumpsDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete dumps, content included (admin; audited; refused while a dump is downloaded or uploaded)",
		Long: `delete removes dumps from the controller: the record and the content.
It needs an admin certificate and is written to the audit log. A dump being
downloaded (on any replica, and for up to 2 minutes after its download ends)
or still uploading is refused; the others named are deleted. The retention
sweep deletes old dumps by itself (docs/retention.md).

Exit status 1 if any dump was not deleted.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd, "want at least one dump ID")
			}
			if len(args) > maxDeleteArgs {
				return usageErrorf(cmd, "%d dump IDs: at most %d at once", len(args), maxDeleteArgs)
			}
			seen := map[string]bool{}
			for _, id := range args {
				if err := ids.DumpID(id); err != nil {
					return usageErrorf(cmd, "%v", err)
				}
				if seen[id] {
					return usageErrorf(cmd, "dump %s is named twice", id)
				}
				seen[id] = true
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			client, s, closeConn, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			deleted := &livedumpv1.ListDumpsResponse{}
			failed := 0
			for _, id := range args {
				ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout)
				resp, err := client.DeleteDump(ctx, &livedumpv1.DeleteDumpRequest{Id: id})
				cancel()
				if err != nil {
					failed++
					fmt.Fprintf(a.stderr, "livedumpctl: dump %s not deleted: %v\n", id, rpcError(err, s))
					continue
				}
				deleted.Dumps = append(deleted.Dumps, resp.GetDump())
				if s.output != outputJSON {
					d := resp.GetDump()
					fmt.Fprintf(a.stdout, "deleted dump %s (%s, %s)\n", d.GetId(), cell(d.GetHostname()), humanSize(d.GetSize()))
				}
			}
			if s.output == outputJSON {
				if err := writeJSON(a.stdout, deleted); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d dumps not deleted", failed, len(args))
			}
			return nil
		},
	}
}

// captureDeleteCmd is `livedumpctl capture delete ID` (admin).
func (a *app) captureDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an ended capture with its events and dumps (admin; audited)",
		Long: `delete removes a capture that has ended: its targets, its trigger events and
its dumps, content included. It needs an admin certificate and is written to
the audit log. An active capture is refused: cancel it first. A dump of the
capture being downloaded stops the delete (the dumps before it are gone; run
it again once the download has ended).`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, s, err := call(a, cmd, fleetClient.DeleteCapture, &livedumpv1.DeleteCaptureRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			_, err = fmt.Fprintf(a.stdout, "deleted capture %s: %d dumps (%s), %d events\n",
				resp.GetId(), resp.GetDumps(), humanSize(resp.GetBytes()), resp.GetEvents())
			return err
		},
	}
}
