package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Bounds of agents describe, as the controller enforces them.
const (
	maxDescribeLogLines = 200
	maxDescribeLimit    = 50
	maxDescribeLogWait  = 30 * time.Second
)

func (a *app) agentsDescribeCmd() *cobra.Command {
	var (
		logLines, limit int
		noLog           bool
		logWait         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "describe AGENT",
		Short: "Show one agent: inventory, certificate, provisioning, recent captures and dumps, and its own log",
		Long: `Show everything known about one agent, named by its ID or its hostname
(in any case): inventory, labels, the client certificate the controller
issued it (serial, expiry), its provisioning state with the last error, the
captures it took part in and its dumps (newest first, --limit each), and the
last --log-lines lines of the agent's own log file, fetched from the machine
over its stream.

Reading the log needs role operator (logs hold hostnames, paths and errors);
a viewer describes with --no-log. The agent sends only its own log file, at
most 200 lines and 64 KiB; an agent without one (a console or dev agent
logging to stderr) says "no log file". An offline agent shows everything
but the log.`,
		Example: `  livedumpctl agents describe LAB-VDI-01
  livedumpctl agents describe lab-vdi-01 --log-lines 200
  livedumpctl agents describe 3f2a9c0d1e2b4a5f --no-log -o json`,
		Args: exactArgs("AGENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkAgentRef("AGENT", args[0]); err != nil {
				return usageErrorf(cmd, "%v", err)
			}
			if logLines < 1 || logLines > maxDescribeLogLines {
				return usageErrorf(cmd, "--log-lines: must be between 1 and %d, got %d (--no-log for none)", maxDescribeLogLines, logLines)
			}
			if limit < 1 || limit > maxDescribeLimit {
				return usageErrorf(cmd, "--limit: must be between 1 and %d, got %d", maxDescribeLimit, limit)
			}
			if logWait < time.Second || logWait > maxDescribeLogWait {
				return usageErrorf(cmd, "--log-wait: must be between 1s and %s, got %s", maxDescribeLogWait, logWait)
			}
			client, s, closeConn, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			id, err := resolveAgent(cmd, client, s, "AGENT", args[0])
			if err != nil {
				return err
			}
			req := &livedumpv1.DescribeAgentRequest{AgentId: id, Limit: int32(limit), LogWait: durationpb.New(logWait)}
			if !noLog {
				req.LogLines = int32(logLines)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout+logWait)
			defer cancel()
			resp, err := client.DescribeAgent(ctx, req)
			if err != nil {
				if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied && strings.HasPrefix(st.Message(), "log_lines:") {
					return fmt.Errorf("%v (use --no-log)", rpcError(err, s))
				}
				return rpcError(err, s)
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			return writeDescription(a.stdout, a.now(), resp)
		},
	}
	f := cmd.Flags()
	f.IntVar(&logLines, "log-lines", 50, "lines of the agent's own log to show (1-200)")
	f.BoolVar(&noLog, "no-log", false, "do not fetch the agent's log (what a viewer may describe)")
	f.IntVar(&limit, "limit", 10, "recent captures and dumps to show, each (1-50)")
	f.DurationVar(&logWait, "log-wait", 10*time.Second, "how long to wait for the agent's log (1s-30s)")
	return cmd
}

// writeDescription prints an agent description as labelled lines, then
// its captures, dumps and log.
func writeDescription(w io.Writer, now time.Time, d *livedumpv1.DescribeAgentResponse) error {
	ag, inv := d.GetAgent(), d.GetAgent().GetInventory()
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-15s %s\n", k+":", cell(v))
		}
	}
	line("Agent", hostOf(ag)+" ("+ag.GetId()+")")
	state := agentState(ag.GetState()) + ", last seen " + ago(now, ag.GetLastSeen())
	if ag.GetFirstSeen() != nil {
		state += ", enrolled " + formatTime(ag.GetFirstSeen())
	}
	line("State", state)
	osLine := strings.TrimSpace(inv.GetOsProductName() + " build " + build(ag))
	var details []string
	for _, s := range []string{inv.GetOsEdition(), inv.GetOsInstallationType(), inv.GetArch()} {
		if s != "" {
			details = append(details, s)
		}
	}
	if len(details) > 0 {
		osLine += " (" + strings.Join(details, ", ") + ")"
	}
	line("Windows", osLine)
	if m := inv.GetMemoryBytes(); m > 0 {
		line("Memory", humanSize(int64(m)))
	}
	line("Agent version", inv.GetAgentVersion())
	line("Labels", strings.ReplaceAll(formatLabels(ag.GetLabels(), true), ",", ", "))
	c := d.GetCertificate()
	if c.GetSerial() != "" {
		cert := "serial " + c.GetSerial()
		if c.GetNotAfter() != nil {
			cert += ", expires " + formatTime(c.GetNotAfter()) + " (" + until(now, c.GetNotAfter()) + ")"
		}
		line("Certificate", cert)
		if c.GetPreviousSerial() != "" && c.GetPreviousUntil() != nil && c.GetPreviousUntil().AsTime().After(now) {
			line("", "previous serial "+c.GetPreviousSerial()+" accepted until "+formatTime(c.GetPreviousUntil()))
		}
	}
	if c.GetRevokedAt() != nil {
		line("Revoked", formatTime(c.GetRevokedAt()))
	}
	prov := provisioning(ag)
	if prov == "-" {
		prov = "not reported yet"
	}
	line("Provisioning", prov)
	line("Dumps held", humanSize(d.GetDumpBytes()))

	fmt.Fprintln(w)
	if len(d.GetCaptures()) == 0 {
		fmt.Fprintln(w, "Captures: none")
	} else {
		fmt.Fprintln(w, "Captures (newest first):")
		t := newTable(w, "ID", "STATE", "CREATED", "ACTION", "PROCESSES", "STATUSES", "TARGET", "EVENTS", "DETAIL")
		for _, c := range d.GetCaptures() {
			tg := c.GetTarget()
			t.row(c.GetCaptureId(), captureStateName(c.GetState()), ago(now, c.GetCreated()), actionName(c.GetAction()),
				strings.Join(c.GetProcesses(), ","), strings.Join(c.GetStatuses(), ","), targetStateName(tg.GetState()),
				strconv.FormatInt(tg.GetEvents(), 10), tg.GetDetail())
		}
		if err := t.flush(); err != nil {
			return err
		}
		if d.GetMoreCaptures() {
			fmt.Fprintln(w, "(older captures not shown: raise --limit, or see 'livedumpctl capture list')")
		}
	}

	fmt.Fprintln(w)
	if len(d.GetDumps()) == 0 {
		fmt.Fprintln(w, "Dumps: none")
	} else {
		fmt.Fprintln(w, "Dumps (newest first):")
		t := newTable(w, "ID", "CAPTURE", "FILE", "SIZE", "STATE", "WRITTEN")
		for _, dm := range d.GetDumps() {
			t.row(dm.GetId(), dm.GetCaptureId(), dm.GetFileName(), humanSize(dm.GetSize()), dumpStateName(dm.GetState()), formatTime(dm.GetWritten()))
		}
		if err := t.flush(); err != nil {
			return err
		}
		if d.GetMoreDumps() {
			fmt.Fprintf(w, "(older dumps not shown: see 'livedumpctl dumps list --agent %s')\n", ag.GetId())
		}
	}

	if d.GetLog() == nil {
		return nil
	}
	fmt.Fprintln(w)
	l, r := d.GetLog(), d.GetLog().GetReport()
	switch {
	case l.GetError() != "":
		fmt.Fprintf(w, "Log: %s\n", cell(l.GetError()))
	case r.GetError() != "":
		fmt.Fprintf(w, "Log: not available: %s\n", cell(r.GetError()))
	case r.GetNoLogFile():
		fmt.Fprintln(w, "Log: no log file (the agent logs to stderr or to its controller, not to a file)")
	default:
		head := fmt.Sprintf("Log (%s, %s, written %s", cell(r.GetFileName()), humanSize(r.GetFileSize()), ago(now, r.GetModified()))
		if r.GetTruncated() {
			head += fmt.Sprintf(", last %d lines", len(r.GetLines()))
		}
		fmt.Fprintln(w, head+"):")
		for _, ln := range r.GetLines() {
			fmt.Fprintln(w, "  "+logLine(ln))
		}
	}
	return nil
}

func actionName(a livedumpv1.CaptureAction) string {
	if !enumname.Valid(a) || a == livedumpv1.CaptureAction_CAPTURE_ACTION_UNSPECIFIED {
		return ""
	}
	return enumname.Name(a, "-")
}

// logLine makes a line of an agent's log safe to print: it came from the
// machine, and must not send control sequences to the terminal.
func logLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' {
			return r
		}
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
}
