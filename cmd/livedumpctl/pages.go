package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// followPages reads a list the controller answers in pages (each at most
// about 1 MiB): it calls page with an empty token, then with the next token
// each answer returns, until one returns none. Each call has its own
// timeout. page returns the answer's next token.
func followPages(a *app, cmd *cobra.Command, page func(ctx context.Context, client fleetClient, after string) (string, error)) (settings, error) {
	client, s, closeConn, err := a.connect(cmd)
	if err != nil {
		return s, err
	}
	defer closeConn()
	after := ""
	for {
		ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout)
		next, err := page(ctx, client, after)
		cancel()
		if err != nil {
			return s, rpcError(err, s)
		}
		if next == "" {
			return s, nil
		}
		if next == after {
			return s, fmt.Errorf("controller %s: the list does not advance past page token %q", s.controller, after)
		}
		after = next
	}
}

// captureTargetPages reads every target of capture id: GetCapture's pages
// merged into one capture, as the controller would send it unpaged.
func captureTargetPages(ctx context.Context, client fleetClient, id, after string, c **livedumpv1.Capture) (string, error) {
	resp, err := client.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: id, After: after})
	if err != nil {
		return "", err
	}
	if *c == nil {
		*c = resp.GetCapture()
	} else {
		(*c).Targets = append((*c).Targets, resp.GetCapture().GetTargets()...)
	}
	if resp.GetNext() == "" {
		(*c).OmittedTargets = 0
	}
	return resp.GetNext(), nil
}

// fullCapture returns c with all its targets: c itself unless the
// controller left targets out of it to keep the message small.
func (a *app) fullCapture(cmd *cobra.Command, c *livedumpv1.Capture) (*livedumpv1.Capture, error) {
	if c.GetOmittedTargets() == 0 {
		return c, nil
	}
	var full *livedumpv1.Capture
	_, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
		return captureTargetPages(ctx, client, c.GetId(), after, &full)
	})
	if err != nil {
		return nil, err
	}
	return full, nil
}
