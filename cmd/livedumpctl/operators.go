package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (a *app) operatorsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operators",
		Short: "List and revoke operator certificates (admin)",
	}
	groupCommand(cmd)
	cmd.AddCommand(a.operatorsListCmd(), a.operatorsRevokeCmd())
	return cmd
}

func (a *app) operatorsListCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--limit N]",
		Short: "List the operator certificates the controller issued or saw in use",
		Long: `List the operator certificates the controller issued or saw in use, newest
issued first, with when each was first and last used and whether it is revoked.

Certificates issued by issue-operator on a host without access to the store
appear at their first use.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 10000 {
				return usageErrorf(cmd, "--limit %d: must be between 1 and 10000", limit)
			}
			resp, s, err := call(a, cmd, fleetClient.ListOperatorCertificates, &livedumpv1.ListOperatorCertificatesRequest{Limit: int32(limit)})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeOperatorCerts(a.stdout, a.now(), resp.GetCertificates())
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 1000, "maximum number of certificates (1-10000)")
	return cmd
}

func (a *app) operatorsRevokeCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL | --name NAME",
		Short: "Revoke an operator certificate, or every certificate of an operator",
		Long: `Revoke one operator certificate by its serial (as "operators list" or
"openssl x509 -noout -serial -in NAME.crt" shows it), or with --name every
certificate of that operator name, in any role, issued before now, including
copies never used.

The certificate's next call is refused and its open streams (capture watch,
dump downloads) end at once, on every controller replica.`,
		Example: `  livedumpctl operators revoke 3f2a9c0d51e4b7a86c1d2e3f4a5b6c7d
  livedumpctl operators revoke --name alice`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case name == "" && len(args) != 1:
				return usageErrorf(cmd, "give the SERIAL of one certificate or --name NAME")
			case name != "" && len(args) != 0:
				return usageErrorf(cmd, "give either a SERIAL or --name, not both")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &livedumpv1.RevokeOperatorCertificateRequest{}
			if name != "" {
				if err := pki.ValidateOperatorName(name); err != nil {
					return usageErrorf(cmd, "--name: %v", err)
				}
				req.Target = &livedumpv1.RevokeOperatorCertificateRequest_Name{Name: name}
			} else {
				serial, err := pki.ParseSerial(args[0])
				if err != nil {
					return usageErrorf(cmd, "%v", err)
				}
				req.Target = &livedumpv1.RevokeOperatorCertificateRequest_Serial{Serial: serial}
			}
			resp, s, err := call(a, cmd, fleetClient.RevokeOperatorCertificate, req)
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			if name != "" {
				fmt.Fprintf(a.stdout, "Every certificate of operator %s issued before %s is revoked; %d of them had been seen.\n",
					name, formatTime(resp.GetRevokedAt()), len(resp.GetCertificates()))
				if len(resp.GetCertificates()) == 0 {
					return nil
				}
			}
			return writeOperatorCerts(a.stdout, a.now(), resp.GetCertificates())
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "revoke every certificate of this operator `NAME` issued before now")
	return cmd
}

// writeOperatorCerts prints the operator certificates table.
func writeOperatorCerts(w io.Writer, now time.Time, certs []*livedumpv1.OperatorCertificate) error {
	t := newTable(w, "SERIAL", "OPERATOR", "STATE", "ISSUED", "EXPIRES", "LAST SEEN")
	for _, c := range certs {
		if c == nil {
			continue
		}
		who := "-"
		if c.GetName() != "" {
			who = "operator/" + c.GetRole() + "/" + c.GetName()
		}
		state := "active"
		switch {
		case c.GetRevokedAt() != nil:
			state = "revoked " + ago(now, c.GetRevokedAt())
		case c.GetNotAfter() != nil && !now.Before(c.GetNotAfter().AsTime()):
			state = "expired"
		case c.GetFirstSeen() == nil:
			state = "never used"
		}
		last := "-"
		if c.GetLastSeen() != nil {
			last = ago(now, c.GetLastSeen())
		}
		expires := "-"
		if c.GetNotAfter() != nil {
			expires = until(now, c.GetNotAfter())
		}
		issued := "-"
		if c.GetIssued() != nil {
			issued = ago(now, c.GetIssued())
		}
		t.row(c.GetSerial(), who, state, issued, expires, last)
	}
	return t.flush()
}
