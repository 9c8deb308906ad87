package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/internal/editdist"
	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// How capture watch follows a dump capture's uploads once the capture has
// ended: it reads the capture's dumps every dumpPoll, and takes the dumps
// as all there when every one it knows is settled (uploaded, kept
// hash-only, failed) and either there is one per trigger event or none has
// changed for dumpSettle (a trigger whose live dump Windows dropped never
// gets one). Variables for the tests.
var (
	dumpPoll   = time.Second
	dumpSettle = 20 * time.Second
)

// defaultWaitDumps bounds how long watch follows uploads after a dump
// capture ended.
const defaultWaitDumps = 30 * time.Minute

const captureWatchLong = `Stream a capture's trigger events (with their stacks) and each machine's
progress until the capture ends, or Ctrl-C. Every line names the machine by
its hostname.

A dump capture is followed further, until the live dumps its triggers took
are uploaded (or kept hash-only, or failed), for at most --wait-dumps after
the capture ended: a capture that reaches --max-dumps ends at the trigger,
before Windows has written the dump.

--summary replaces the event lines with a table of stack buckets (the
grouping of "events buckets"): redrawn in place as events arrive on a
terminal, printed once at the end otherwise.

Exit status: 0 when the capture ended (done, expired or cancelled) and its
dumps were followed to the end; 1 when every target failed (the capture is
"failed": nothing was captured anywhere), when dumps are still not uploaded
after --wait-dumps, or when the watch broke off; 2 for a usage error, such
as a --host that is not one of the capture's machines.`

func (a *app) captureWatchCmd() *cobra.Command {
	var (
		hosts             []string
		noStacks, summary bool
		waitDumps         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "Stream a capture's events and progress until it ends (and its dumps are uploaded) or Ctrl-C",
		Long:  captureWatchLong,
		Example: `  livedumpctl capture watch c-0123456789ab
  livedumpctl capture watch c-0123456789ab --host WS-0001,WS-0002 --no-stacks
  livedumpctl capture watch c-0123456789ab --summary`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if waitDumps < 0 {
				return usageErrorf(cmd, "--wait-dumps: must not be negative, got %s", waitDumps)
			}
			for _, h := range hosts {
				if strings.TrimSpace(h) == "" {
					return usageErrorf(cmd, "--host: an empty hostname")
				}
			}
			s, err := a.settings(cmd)
			if err != nil {
				return err
			}
			if summary && s.output == outputJSON {
				return usageErrorf(cmd, "--summary: prints a table; it does not go with -o json")
			}
			w := &watcher{a: a, cmd: cmd, id: args[0], json: s.output == outputJSON, stacks: !noStacks, waitDumps: waitDumps}
			if len(hosts) > 0 {
				if err := w.resolveHosts(hosts); err != nil {
					return err
				}
			}
			if summary {
				w.sum = newBucketSummary(a.stdout, isTerminal(a.stdout))
			}
			return w.run()
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&hosts, "host", nil, "only these machines' events and progress: `HOSTNAME`s (repeatable or comma-separated)")
	f.BoolVar(&noStacks, "no-stacks", false, "one line per event, without its stack frames")
	f.BoolVar(&summary, "summary", false, "a table of stack buckets instead of event lines (redrawn live on a terminal)")
	f.DurationVar(&waitDumps, "wait-dumps", defaultWaitDumps, "how long to follow a dump capture's uploads after it ended (0: do not follow)")
	return cmd
}

// watcher is one run of capture watch.
type watcher struct {
	a         *app
	cmd       *cobra.Command
	id        string
	json      bool
	stacks    bool
	waitDumps time.Duration
	agents    map[string]bool // --host: the agent IDs to show; nil shows all
	sum       *bucketSummary  // --summary
	hostnames map[string]string
}

// resolveHosts turns --host values into the capture's agent IDs. A name
// that is none of the capture's machines is a usage error, with the
// closest hostname when one is close.
func (w *watcher) resolveHosts(hosts []string) error {
	var c *livedumpv1.Capture
	if _, err := followPages(w.a, w.cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
		return captureTargetPages(ctx, client, w.id, after, &c)
	}); err != nil {
		return err
	}
	w.agents = map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		found := false
		for _, t := range c.GetTargets() {
			if strings.EqualFold(t.GetHostname(), h) || t.GetAgentId() == h {
				w.agents[t.GetAgentId()] = true
				found = true
			}
		}
		if !found {
			return usageErrorf(w.cmd, "--host: %q is not one of the %d machines of capture %s%s", h, len(c.GetTargets()), w.id, closestHost(h, c.GetTargets()))
		}
	}
	return nil
}

// closestHost is a " (did you mean ...?)" hint, or "" when no hostname of
// the targets is close to h.
func closestHost(h string, targets []*livedumpv1.CaptureTarget) string {
	best, bestD := "", 3 // at most two edits away
	for _, t := range targets {
		name := t.GetHostname()
		if d := editdist.Distance(strings.ToLower(h), strings.ToLower(name), bestD); d < bestD {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func (w *watcher) wants(agentID string) bool { return w.agents == nil || w.agents[agentID] }

// host names a machine on a line: its hostname, else its agent ID.
func (w *watcher) host(agentID, hostname string) string {
	if hostname != "" {
		if w.hostnames == nil {
			w.hostnames = map[string]string{}
		}
		w.hostnames[agentID] = hostname
		return hostname
	}
	if h := w.hostnames[agentID]; h != "" {
		return h
	}
	return agentID
}

func (w *watcher) run() error {
	a, ctx := w.a, w.cmd.Context()
	client, s, closeConn, err := a.connect(w.cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	st, err := client.WatchCapture(ctx, &livedumpv1.WatchCaptureRequest{Id: w.id})
	if err != nil {
		return rpcError(err, s)
	}
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			w.sum.finish(nil)
			return nil
		}
		if err != nil {
			w.sum.finish(nil)
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return rpcError(err, s)
		}
		switch {
		case m.GetEvent() != nil:
			ev := m.GetEvent()
			if !w.wants(ev.GetAgentId()) {
				continue
			}
			ev.Hostname = w.host(ev.GetAgentId(), ev.GetHostname())
			switch {
			case w.sum != nil:
				w.sum.add(ev)
			case w.json:
				if !w.stacks {
					ev.UserFrames, ev.KernelFrames = nil, nil
				}
				if err := writeJSONLine(a.stdout, m); err != nil {
					return err
				}
			default:
				writeEvent(a.stdout, ev, w.stacks)
			}
		case m.GetTarget() != nil:
			tg := m.GetTarget()
			if !w.wants(tg.GetAgentId()) {
				continue
			}
			tg.Hostname = w.host(tg.GetAgentId(), tg.GetHostname())
			switch {
			case w.sum != nil:
				w.sum.target(tg)
			case w.json:
				if err := writeJSONLine(a.stdout, m); err != nil {
					return err
				}
			default:
				line := fmt.Sprintf("[%s] %s %s", tg.GetHostname(), targetStateName(tg.GetState()), tg.GetDetail())
				fmt.Fprintln(a.stdout, cell(strings.TrimSpace(line)))
			}
		case m.GetEnded() != nil:
			c := m.GetEnded()
			w.sum.finish(c)
			if w.json {
				if err := writeJSONLine(a.stdout, m); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "capture %s %s: %s, %d events; targets %s\n", c.GetId(), captureStateName(c.GetState()), cell(c.GetDetail()),
					c.GetEvents(), countTargets(c))
			}
			if c.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_FAILED {
				return fmt.Errorf("capture %s failed: %s", c.GetId(), oneLine(c.GetDetail()))
			}
			if takesDumps(c) && w.waitDumps > 0 {
				return w.followDumps(c)
			}
			return nil
		}
	}
}

// takesDumps reports whether a capture's triggers take live dumps.
func takesDumps(c *livedumpv1.Capture) bool {
	return c.GetSpec().GetAction() == livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP || c.GetSpec().GetOnDemand()
}

// dumpSettled reports whether a dump has reached a state it leaves only on
// an operator's request (dumps pull) or never.
func dumpSettled(s livedumpv1.DumpState) bool {
	switch s {
	case livedumpv1.DumpState_DUMP_STATE_UPLOADED, livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, livedumpv1.DumpState_DUMP_STATE_FAILED,
		livedumpv1.DumpState_DUMP_STATE_ABORTED, livedumpv1.DumpState_DUMP_STATE_TRUNCATED:
		return true
	}
	return false
}

// followDumps prints each change of the ended capture's dumps until they
// are all settled (see dumpPoll), for at most --wait-dumps.
func (w *watcher) followDumps(c *livedumpv1.Capture) error {
	ctx := w.cmd.Context()
	deadline := time.Now().Add(w.waitDumps)
	seen := map[string]livedumpv1.DumpState{}
	lastChange := time.Now()
	for {
		var dumps []*livedumpv1.Dump
		if _, err := followPages(w.a, w.cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
			page, err := client.ListDumps(ctx, &livedumpv1.ListDumpsRequest{CaptureId: c.GetId(), After: after})
			dumps = append(dumps, page.GetDumps()...)
			return page.GetNext(), err
		}); err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return err
		}
		settled := 0
		for _, d := range dumps {
			if dumpSettled(d.GetState()) {
				settled++
			}
			if seen[d.GetId()] == d.GetState() {
				continue
			}
			seen[d.GetId()] = d.GetState()
			lastChange = time.Now()
			if w.wants(d.GetAgentId()) {
				if err := w.writeDump(d); err != nil {
					return err
				}
			}
		}
		if settled == len(dumps) && (int64(settled) >= c.GetEvents() || time.Since(lastChange) >= dumpSettle) {
			if !w.json {
				fmt.Fprintf(w.a.stdout, "capture %s: %s\n", c.GetId(), dumpTally(dumps, c.GetEvents()))
			}
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("capture %s: %d of %d dumps still not uploaded after --wait-dumps %s; follow them with 'livedumpctl dumps list --capture %s'",
				c.GetId(), len(dumps)-settled, len(dumps), w.waitDumps, c.GetId())
		}
		select {
		case <-ctx.Done():
			return nil // Ctrl-C
		case <-time.After(dumpPoll):
		}
	}
}

func (w *watcher) writeDump(d *livedumpv1.Dump) error {
	d.Hostname = w.host(d.GetAgentId(), d.GetHostname())
	if w.json {
		// One line per change, as the stream's messages are, under a key
		// of its own.
		b, err := jsonOptions.Marshal(d)
		if err != nil {
			return err
		}
		fmt.Fprintf(w.a.stdout, "{\"dump\": %s}\n", oneLine(string(b)))
		return nil
	}
	line := fmt.Sprintf("[%s] dump %s %s %s %s", d.GetHostname(), d.GetId(), enumname.Name(d.GetState(), "-"), humanize.IBytes(uint64(max(d.GetSize(), 0))), d.GetDetail())
	fmt.Fprintln(w.a.stdout, cell(strings.TrimSpace(line)))
	return nil
}

// dumpTally says what became of a capture's dumps: "2 dumps: 2 uploaded".
func dumpTally(dumps []*livedumpv1.Dump, events int64) string {
	by := map[livedumpv1.DumpState]int{}
	for _, d := range dumps {
		by[d.GetState()]++
	}
	var parts []string
	for v := int32(1); v < int32(len(livedumpv1.DumpState_name)); v++ {
		st := livedumpv1.DumpState(v)
		if n := by[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, enumname.Name(st, "-")))
		}
	}
	s := fmt.Sprintf("%d dumps", len(dumps))
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	if missing := events - int64(len(dumps)); missing > 0 {
		s += fmt.Sprintf("; %d trigger(s) got no live dump (see capture get)", missing)
	}
	return s
}

// writeJSONLine prints one message of a stream as one line of JSON.
func writeJSONLine(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, oneLine(string(b)))
	return err
}

// isTerminal reports whether w is a terminal, where the summary redraws
// itself in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// targetCounts is how many of a capture's targets are in the states an
// operator follows.
type targetCounts struct {
	total, armed, triggered, failed, offline int64
	byState                                  map[string]int64
}

// countTargets counts a capture's targets from the counts the controller
// sends (every target, listed or not), or from the listed targets when an
// older controller sends none.
func countTargets(c *livedumpv1.Capture) targetCounts {
	by := c.GetTargetCounts()
	n := targetCounts{offline: c.GetOfflineTargets()}
	if by == nil {
		by = map[string]int64{}
		for _, t := range c.GetTargets() {
			by[targetStateName(t.GetState())]++
		}
		n.total = c.GetOmittedTargets()
	}
	for _, v := range by {
		n.total += v
	}
	n.byState = by
	n.armed = by["armed"]
	n.triggered = by["triggered"] + by["dumping"]
	n.failed = by["failed"]
	return n
}

// String renders the counts: "5: 2 armed, 1 triggered, 1 failed, 1
// pending (1 offline)", states in the order a target goes through them.
func (n targetCounts) String() string {
	var parts []string
	for v := int32(1); v < int32(len(livedumpv1.TargetState_name)); v++ {
		name := targetStateName(livedumpv1.TargetState(v))
		if c := n.byState[name]; c > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c, name))
		}
	}
	s := strconv.FormatInt(n.total, 10)
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	if n.offline > 0 {
		s += fmt.Sprintf(" (%d offline)", n.offline)
	}
	return s
}

// captureAction is what a capture's probe does: stacks or dump, or script
// for a raw D script (which does whatever it says).
func captureAction(c *livedumpv1.Capture) string {
	spec := c.GetSpec()
	switch {
	case spec.GetOnDemand():
		return "dump"
	case spec.GetScript() != "":
		return "script"
	case spec.GetAction() != livedumpv1.CaptureAction_CAPTURE_ACTION_UNSPECIFIED:
		return enumname.Name(spec.GetAction(), "-")
	}
	return "stacks" // the controller's default
}
