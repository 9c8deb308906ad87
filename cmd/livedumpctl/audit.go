package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxAuditLimit is the most entries the controller returns in one call.
const maxAuditLimit = 10000

func (a *app) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit log: every mutating call and every refused call",
	}
	groupCommand(cmd)
	cmd.AddCommand(a.auditListCmd())
	return cmd
}

func (a *app) auditListCmd() *cobra.Command {
	var (
		limit int
		since string
	)
	cmd := &cobra.Command{
		Use:   "list [--limit N] [--since DURATION|RFC3339]",
		Short: "List audit entries, newest first",
		Long: `List audit entries, newest first: who did what, to what, when, and how it ended.

The table leaves out the request details; -o json includes them. SERIAL is
the caller's certificate serial (empty for callers without a certificate).`,
		Example: `  livedumpctl audit list --since 2h
  livedumpctl audit list --since 2026-03-01T00:00:00Z --limit 1000 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > maxAuditLimit {
				return usageErrorf(cmd, "--limit %d: must be between 1 and %d", limit, maxAuditLimit)
			}
			req := &livedumpv1.ListAuditRequest{Limit: int32(limit)}
			if since != "" {
				t, err := parseSince(since, a.now())
				if err != nil {
					return usageErrorf(cmd, "%v", err)
				}
				req.Since = timestamppb.New(t)
			}
			// Pages of at most about 1 MiB, up to --limit entries in all.
			resp := &livedumpv1.ListAuditResponse{}
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				req.Limit, req.After = int32(limit-len(resp.Entries)), after
				page, err := client.ListAudit(ctx, req)
				resp.Entries = append(resp.Entries, page.GetEntries()...)
				if len(resp.Entries) >= limit || len(page.GetEntries()) == 0 {
					return "", err
				}
				return page.GetNext(), err
			})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeAudit(a.stdout, resp.GetEntries())
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 100, fmt.Sprintf("maximum number of entries (1-%d)", maxAuditLimit))
	f.StringVar(&since, "since", "", "only entries newer than a `DURATION` ago (30m, 2h, 7d) or since an RFC 3339 time")
	return cmd
}

// parseSince accepts a duration back from now ("2h", "7d") or an absolute
// RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, strings.TrimSpace(s)); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %s: want a duration such as 30m, 2h or 7d, or an RFC 3339 time such as 2026-03-01T12:00:00Z", strconv.Quote(s))
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("--since %s: duration must be positive", strconv.Quote(s))
	}
	return now.Add(-d), nil
}

// writeAudit prints the audit table.
func writeAudit(w io.Writer, entries []*livedumpv1.AuditEntry) error {
	t := newTable(w, "ID", "TIME", "ACTOR", "ACTION", "TARGET", "SERIAL", "OUTCOME")
	for _, e := range entries {
		if e == nil {
			continue
		}
		t.row(strconv.FormatInt(e.GetId(), 10), formatTime(e.GetTime()), e.GetActor(),
			e.GetAction(), e.GetTarget(), e.GetCertSerial(), e.GetOutcome())
	}
	return t.flush()
}
