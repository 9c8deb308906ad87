package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (a *app) tokensCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Create, list and revoke enrollment tokens",
	}
	groupCommand(cmd)
	cmd.AddCommand(a.tokensCreateCmd(), a.tokensListCmd(), a.tokensRevokeCmd())
	return cmd
}

func (a *app) tokensCreateCmd() *cobra.Command {
	var (
		uses   int
		ttl    = dayDuration(24 * time.Hour)
		labels string
	)
	cmd := &cobra.Command{
		Use:   "create [--uses N] [--ttl DURATION] [--labels K=V,..]",
		Short: "Create an enrollment token for the agent installer",
		Long: `Create an enrollment token for the agent installer.

The secret is printed only once: the controller stores only a hash of it.
Agents enrolled with the token get its labels.`,
		Example: `  livedumpctl tokens create --uses 50 --ttl 7d --labels site=ams,role=vdi`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uses < 1 {
				return usageErrorf(cmd, "--uses %d: must be at least 1", uses)
			}
			if uses > 100000 {
				return usageErrorf(cmd, "--uses %d: must be at most 100000", uses)
			}
			if ttl <= 0 {
				return usageErrorf(cmd, "--ttl %s: must be positive", ttl.String())
			}
			set, err := selector.ParseSet(labels)
			if err != nil {
				return usageErrorf(cmd, "--labels: %v", err)
			}
			if err := selector.ValidateUserLabels(set); err != nil {
				return usageErrorf(cmd, "--labels: %v", err)
			}
			req := &livedumpv1.CreateTokenRequest{
				Uses:   int32(uses),
				Ttl:    durationpb.New(time.Duration(ttl)),
				Labels: set,
			}
			resp, s, err := call(a, cmd, fleetClient.CreateToken, req)
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeNewToken(a.stdout, a.now(), resp)
		},
	}
	f := cmd.Flags()
	f.IntVar(&uses, "uses", 1, "number of agents that may enroll with the token (1-100000)")
	f.Var(&ttl, "ttl", "lifetime of the token, e.g. 30m, 24h or 7d")
	f.StringVar(&labels, "labels", "", "labels for every agent enrolled with the token, `K=V,..`")
	return cmd
}

func (a *app) tokensListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List enrollment tokens (never their secrets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp := &livedumpv1.ListTokensResponse{}
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				page, err := client.ListTokens(ctx, &livedumpv1.ListTokensRequest{After: after})
				resp.Tokens = append(resp.Tokens, page.GetTokens()...)
				return page.GetNext(), err
			})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeTokens(a.stdout, a.now(), resp.GetTokens())
		},
	}
}

func (a *app) tokensRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an enrollment token so that it cannot enroll more agents",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, s, err := call(a, cmd, fleetClient.RevokeToken, &livedumpv1.RevokeTokenRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeTokens(a.stdout, a.now(), []*livedumpv1.Token{resp.GetToken()})
		},
	}
}

// writeNewToken prints a created token and its secret, with the warning
// that the secret cannot be shown again.
func writeNewToken(w io.Writer, now time.Time, resp *livedumpv1.CreateTokenResponse) error {
	tok := resp.GetToken()
	expires := formatTime(tok.GetExpires())
	if expires != "" {
		expires += " (" + until(now, tok.GetExpires()) + ")"
	}
	t := newTable(w, "Token:", tok.GetId())
	t.row("Uses:", strconv.Itoa(int(tok.GetUses())))
	t.row("Expires:", expires)
	t.row("Labels:", formatLabels(tok.GetLabels(), false))
	t.row("Secret:", resp.GetSecret())
	if err := t.flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "\nThe secret is shown only once: store it now (e.g. as the installer's enrollment token); it cannot be retrieved later.")
	return err
}

// writeTokens prints the tokens table.
func writeTokens(w io.Writer, now time.Time, tokens []*livedumpv1.Token) error {
	t := newTable(w, "ID", "STATE", "USES LEFT", "CREATED", "EXPIRES", "CREATED BY", "LABELS")
	for _, tok := range tokens {
		if tok == nil {
			continue
		}
		t.row(tok.GetId(), tokenState(now, tok),
			fmt.Sprintf("%d/%d", tok.GetUsesLeft(), tok.GetUses()),
			ago(now, tok.GetCreated()), until(now, tok.GetExpires()),
			tok.GetCreatedBy(), formatLabels(tok.GetLabels(), false))
	}
	return t.flush()
}

func tokenState(now time.Time, tok *livedumpv1.Token) string {
	switch {
	case tok.GetRevoked():
		return "revoked"
	case tok.GetUses() > 0 && tok.GetUsesLeft() <= 0:
		return "used up"
	case tok.GetExpires() != nil && !now.Before(tok.GetExpires().AsTime()):
		return "expired"
	default:
		return "active"
	}
}

// dayDuration is a duration flag that also accepts whole days ("7d"),
// since token lifetimes are naturally written in days.
type dayDuration time.Duration

func (d *dayDuration) String() string {
	td := time.Duration(*d)
	if td > 0 && td%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(td/(24*time.Hour)), 10) + "d"
	}
	return td.String()
}

func (d *dayDuration) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = dayDuration(v)
	return nil
}

func (d *dayDuration) Type() string { return "duration" }

// parseDuration parses a Go duration ("90m", "1h30m") or a whole number of
// days ("7d").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 16) // 16 bits: no overflow
		if err == nil {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration: want e.g. 30m, 24h or 7d")
	}
	return d, nil
}
