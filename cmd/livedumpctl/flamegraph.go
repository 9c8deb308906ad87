package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/livedump/livedump/internal/flamegraph"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

const flamegraphLong = `Draw a capture's trigger stacks as a flame graph (an icicle: the outermost
frame on top), an SVG on stdout, the same one the console shows:

  livedumpctl events flamegraph --capture c-0123456789ab > stacks.svg

Frames are named as in "events buckets" (module!function without offset,
module!?+0xNNNN, <unresolved>); hovering a frame shows its events and their
share. --stack both continues each user stack into its kernel stack (kernel
stacks are there when the capture was created with --kstack). The SVG is
the same bytes for the same events; it has no script and no external
reference. The first --max-events events are read; when the capture has
more, the graph's header and a line on stderr say so.`

// flamegraphMaxEvents bounds --max-events.
const flamegraphMaxEvents = 1_000_000

// pageTimeout gives each ListEvents page its own timeout, as the other
// paged commands do.
type pageTimeout struct {
	fleetClient
	d time.Duration
}

func (c pageTimeout) ListEvents(ctx context.Context, req *livedumpv1.ListEventsRequest, opts ...grpc.CallOption) (*livedumpv1.ListEventsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.fleetClient.ListEvents(ctx, req, opts...)
}

func (a *app) eventsFlamegraphCmd() *cobra.Command {
	var captureID, agentRef, stackName string
	var width, maxEvents int
	cmd := &cobra.Command{
		Use:   "flamegraph --capture ID [--agent AGENT] [--stack user|kernel|both] [--width N] [--max-events N]",
		Short: "Draw a capture's stacks as a flame graph (SVG on stdout)",
		Long:  flamegraphLong,
		Example: `  livedumpctl events flamegraph --capture c-0123456789ab > stacks.svg
  livedumpctl events flamegraph --capture c-0123456789ab --agent WS-0001 --stack both > ws-0001.svg`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if captureID == "" {
				return usageErrorf(cmd, "--capture: required")
			}
			stack, err := flamegraph.ParseStack(stackName)
			if err != nil {
				return usageErrorf(cmd, "--stack: %v", err)
			}
			if width < flamegraph.MinSVGWidth || width > flamegraph.MaxSVGWidth {
				return usageErrorf(cmd, "--width: must be between %d and %d pixels, got %d", flamegraph.MinSVGWidth, flamegraph.MaxSVGWidth, width)
			}
			if maxEvents < 1 || maxEvents > flamegraphMaxEvents {
				return usageErrorf(cmd, "--max-events: must be between 1 and %d, got %d", flamegraphMaxEvents, maxEvents)
			}
			if f := cmd.Flags().Lookup(keyOutput); f != nil && f.Changed && f.Value.String() != outputTable {
				return usageErrorf(cmd, "-o %s: events flamegraph writes SVG, in no other format", f.Value.String())
			}
			client, s, closeConn, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			opts := flamegraph.Options{Stack: stack, Width: width, Title: "capture " + captureID}
			if agentRef != "" {
				if opts.Agent, err = resolveAgent(cmd, client, s, "--agent", agentRef); err != nil {
					return err
				}
			}
			events, truncated, err := flamegraph.Collect(cmd.Context(), pageTimeout{client, s.timeout}, captureID, maxEvents)
			if err != nil {
				return rpcError(err, s)
			}
			opts.Truncated = truncated
			var buf bytes.Buffer
			if err := flamegraph.Build(events, opts).WriteSVG(&buf, opts); err != nil {
				return err
			}
			if _, err := a.stdout.Write(buf.Bytes()); err != nil {
				return err
			}
			if truncated {
				fmt.Fprintf(a.stderr, "the graph has the first %d events of capture %s, which has more (--max-events)\n", maxEvents, captureID)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&captureID, "capture", "", "capture `ID` (required)")
	f.StringVar(&agentRef, "agent", "", "only this agent's events: its `ID or HOSTNAME`")
	f.StringVar(&stackName, "stack", "user", "the `STACK`s drawn: user, kernel or both")
	f.IntVar(&width, "width", flamegraph.DefaultWidth, fmt.Sprintf("width of the SVG in `PIXELS` (%d-%d)", flamegraph.MinSVGWidth, flamegraph.MaxSVGWidth))
	f.IntVar(&maxEvents, "max-events", flamegraph.DefaultMaxEvents, fmt.Sprintf("read at most `N` events, oldest first (1-%d)", flamegraphMaxEvents))
	_ = cmd.RegisterFlagCompletionFunc("stack", cobra.FixedCompletions([]string{"user\tuser stacks", "kernel\tkernel stacks", "both\tuser stacks continued by kernel stacks"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
