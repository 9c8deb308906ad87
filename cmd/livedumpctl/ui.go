package main

import (
	"fmt"
	"log/slog"

	"github.com/pkg/browser"
	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/console"
	"github.com/livedump/livedump/internal/pki"
)

func (a *app) uiCmd() *cobra.Command {
	var listen string
	var noBrowser bool
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Open the web console: fleet, captures, flame graphs, dumps, audit log",
		Long: `Start the web console on this machine and open it in the browser.

The console is a local web server on a loopback address (a free port unless
--listen names one). It talks to the controller exactly as livedumpctl does,
with your certificate and your role: nothing new listens on the controller,
and every action is authorised and audited as you. The URL it prints carries
a random token; anyone on this machine without it is refused, so do not
share the URL. Stop it with Ctrl-C.`,
		Example: `  livedumpctl ui
  livedumpctl ui --no-browser --listen 127.0.0.1:8450`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := console.Listen(listen)
			if err != nil {
				return usageErrorf(cmd, "--listen: %v", err)
			}
			defer ln.Close()
			client, s, closeConn, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			chain, err := pki.ReadCerts(s.cert)
			if err != nil {
				return fmt.Errorf("cert: %w", err)
			}
			id, err := pki.IdentityFromCert(chain[0])
			if err != nil || id.Kind != pki.KindOperator {
				return fmt.Errorf("cert %s: not an operator certificate", s.cert)
			}
			srv, err := console.New(console.Config{
				Client: client, Operator: id, Controller: s.controller, Timeout: s.timeout,
				Log: slog.New(slog.NewTextHandler(a.stderr, nil)),
			})
			if err != nil {
				return err
			}
			u := srv.URL(ln.Addr())
			fmt.Fprintf(a.stdout, "livedump console: %s\n", u)
			if !noBrowser {
				browser.Stdout, browser.Stderr = a.stderr, a.stderr
				if err := browser.OpenURL(u); err != nil {
					fmt.Fprintf(a.stderr, "livedumpctl: could not open a browser (%v): open the URL above\n", err)
				}
			}
			return srv.Serve(cmd.Context(), ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback `ADDRESS` to serve on (127.0.0.1 or [::1], port 0 for a free one)")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the URL only; do not open a browser")
	return cmd
}
