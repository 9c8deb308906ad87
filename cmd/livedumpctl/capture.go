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

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func (a *app) captureCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "capture",
		Short: "Create, follow and cancel captures: probes armed across a group of machines",
	}
	groupCommand(cmd)
	cmd.AddCommand(a.captureCreateCmd(), a.captureListCmd(), a.captureGetCmd(), a.captureWatchCmd(), a.captureCancelCmd(), a.captureDeleteCmd())
	return cmd
}

func (a *app) captureCreateCmd() *cobra.Command {
	var (
		sel, action, upload, script   string
		processes, syscalls, statuses []string
		ustack, perAgent, maxDumps    uint32
		dumpsPerSig, rollout          uint32
		lkdMode                       int32
		kstack, onDemand              bool
		dryRun, force                 bool
		expire                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create -l SELECTOR (--process NAME[,NAME] --status CODE[,CODE] | --on-demand) [flags]",
		Short: "Arm a probe on every machine matching the selector",
		Long: `Arm a probe on every machine matching the selector, and print the capture ID.

Before arming, the controller computes a preview: how many machines match and
their provisioning state, the status codes resolved, the processes as the
kernel records them and the D script. --dry-run prints it (on stdout) and arms
nothing; a real create prints it on stderr, so stdout stays the capture ID
(-o json: the capture with the preview under "preview").

A capture that can catch nothing is refused (exit status 2): a selector that
matches no machine, or only machines that are not provisioned. --force arms it
anyway, e.g. for machines that are provisioned or enrolled later.

The probe fires when one of the processes gets one of the status codes back
from a syscall (optionally only the named Nt* syscalls). Status codes may be
NTSTATUS names (STATUS_INVALID_PARAMETER), Win32 error names
(ERROR_INVALID_PARAMETER), HRESULT names (E_INVALIDARG) or hex; each resolves
to the NTSTATUS values a syscall actually returns, shown by -o json.

Process names are matched the way the kernel records them: the image file
name with its extension (ms-teams.exe, not ms-teams), at most 14 characters
(SearchIndexer.exe matches as "SearchIndexer."), in any case (the kernel keeps
the case a program was launched with, so names are compared case-insensitively).
You are warned when a name is truncated or has no extension. --syscall names
are checked against ntdll's Nt* syscalls: win32k syscalls (NtUser*, NtGdi*)
have no DTrace probes and are refused. --action dump also takes a live kernel dump per
trigger (lkd mode 0 = full kernel dump by default).`,
		Example: `  livedumpctl capture create -l role=vdi --process ms-teams.exe --status STATUS_INVALID_PARAMETER --dry-run
  livedumpctl capture create -l role=vdi --process ms-teams.exe --status STATUS_INVALID_PARAMETER --action stacks --expire 10m
  livedumpctl capture create -l role=vdi --process ms-teams.exe --syscall NtCreateFile --status E_INVALIDARG --action dump --max-dumps 3`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sel == "" {
				return usageErrorf(cmd, "-l/--selector: required")
			}
			if _, err := selector.Parse(sel); err != nil {
				return usageErrorf(cmd, "-l/--selector: %v", err)
			}
			// 0 would silently mean the default on the wire: given, it
			// is refused; not given, the flag's default is sent.
			if cmd.Flags().Changed("ustack") && ustack == 0 {
				return usageErrorf(cmd, "--ustack: 0 frames: must be between 1 and %d", probe.MaxUStack)
			}
			if cmd.Flags().Changed("per-agent") && perAgent == 0 {
				return usageErrorf(cmd, "--per-agent: 0: must be between 1 and %d (leave it out for the default: 1 for dump, 100 for stacks)", probe.MaxPerAgentCap)
			}
			spec := &livedumpv1.CaptureSpec{
				Selector: sel, Processes: processes, Syscalls: syscalls, Statuses: statuses,
				Ustack: ustack, Kstack: kstack, LkdMode: lkdMode, PerAgentCap: perAgent, MaxDumps: maxDumps,
				DumpsPerSignature: dumpsPerSig, RolloutRate: rollout, Expire: durationpb.New(expire),
			}
			spec.OnDemand = onDemand
			var ok bool
			if onDemand {
				spec.Action = livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP
			} else if spec.Action, ok = enumname.Parse[livedumpv1.CaptureAction](action, "-"); !ok {
				return usageErrorf(cmd, "--action: %q: want stacks or dump", action)
			}
			if spec.Upload, ok = enumname.Parse[livedumpv1.UploadMode](upload, "-"); !ok {
				return usageErrorf(cmd, "--upload: %q: want full or hash-only", upload)
			}
			if script != "" {
				b, err := os.ReadFile(script)
				if err != nil {
					return usageErrorf(cmd, "--script: %v", err)
				}
				spec.Script = string(b)
			}
			if err := checkSpecLocally(spec); err != nil {
				// A mistake in the flags, found before any network call.
				return &usageError{cmd: cmd, err: err}
			}
			resp, s, err := a.createCapture(cmd, &livedumpv1.CreateCaptureRequest{Spec: spec, DryRun: dryRun, Force: force})
			if err != nil {
				return err
			}
			preview := resp.GetPreview()
			if dryRun {
				if s.output == outputJSON {
					if err := writeJSON(a.stdout, preview); err != nil {
						return err
					}
				} else {
					writePreview(a.stdout, preview, true)
				}
			} else if s.output != outputJSON {
				writePreview(a.stderr, preview, false)
			}
			// The controller's warnings (names the kernel truncates, names
			// without an extension) go to stderr, whatever the output format.
			for _, w := range preview.GetWarnings() {
				fmt.Fprintf(a.stderr, "livedumpctl: warning: %s\n", oneLine(w))
			}
			if dryRun {
				// What a create would answer, as its exit status.
				if r := preview.GetRefused(); r != "" && !force {
					return usageErrorf(cmd, "%s", r)
				}
				return nil
			}
			if s.output == outputJSON {
				c, err := a.fullCapture(cmd, resp.GetCapture())
				if err != nil {
					return err
				}
				return writeCaptureJSON(a.stdout, c, preview)
			}
			fmt.Fprintln(a.stdout, resp.GetCapture().GetId())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&sel, "selector", "l", "", "label `SELECTOR` of the machines (required)")
	f.Var(newListValue(&processes), "process", "image `NAME`s, e.g. ms-teams.exe (repeatable or comma-separated)")
	f.Var(newListValue(&syscalls), "syscall", "only these Nt* `SYSCALL`s (default: every syscall)")
	f.Var(newListValue(&statuses), "status", "status `CODE`s: NTSTATUS, Win32 or HRESULT names, or hex")
	f.Uint32Var(&ustack, "ustack", 10, "user stack depth (1-100)")
	f.BoolVar(&kstack, "kstack", false, "also record the kernel stack")
	f.StringVar(&action, "action", "stacks", "stacks, or dump to take a live kernel dump on each trigger")
	f.Int32Var(&lkdMode, "lkd-mode", 0, "live dump mode for --action dump: 0 full kernel, 2 minidump, 4 hypervisor+kernel, 5 user+kernel+hypervisor")
	f.Uint32Var(&perAgent, "per-agent", 0, "triggers per machine before its probe stops (default 1 for dump, 100 for stacks)")
	f.Uint32Var(&maxDumps, "max-dumps", 0, "dumps fleet-wide before every probe is disarmed (0: per-agent cap only)")
	f.Uint32Var(&dumpsPerSig, "dumps-per-signature", 0, "dumps uploaded per stack signature; later ones stay hash-only (0: no limit)")
	f.Uint32Var(&rollout, "rollout-rate", 0, "machines armed per minute (0: all at once)")
	f.DurationVar(&expire, "expire", 24*time.Hour, "lifetime of the capture (max 168h)")
	f.StringVar(&upload, "upload", "full", "dump upload mode: full or hash-only")
	f.StringVar(&script, "script", "", "raw D script `FILE` instead of the rendered probe (admin only; runs only on agents whose local allow_raw_scripts is on, the others refuse it)")
	f.BoolVar(&onDemand, "on-demand", false, "take one live kernel dump now on each machine (no process or status)")
	f.BoolVar(&dryRun, "dry-run", false, "print what would be armed (machines, provisioning, statuses, processes, D script) and arm nothing")
	f.BoolVar(&force, "force", false, "arm even a capture that can catch nothing (no machine matches, or none is provisioned)")
	_ = cmd.MarkFlagFilename("script", "d")
	return cmd
}

// createCapture sends a create (or dry run). The controller's refusals of
// the request itself are usage errors (exit status 2): InvalidArgument (a
// spec it rejects) and FailedPrecondition (a capture that can catch
// nothing; --force overrides it).
func (a *app) createCapture(cmd *cobra.Command, req *livedumpv1.CreateCaptureRequest) (*livedumpv1.CreateCaptureResponse, settings, error) {
	client, s, closeConn, err := a.connect(cmd)
	if err != nil {
		return nil, s, err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout)
	defer cancel()
	resp, err := client.CreateCapture(ctx, req)
	if err != nil {
		switch status.Code(err) {
		case codes.InvalidArgument, codes.FailedPrecondition:
			return nil, s, &usageError{cmd: cmd, err: rpcError(err, s)}
		}
		return nil, s, rpcError(err, s)
	}
	return resp, s, nil
}

// checkSpecLocally fails fast, before any network call, on input the
// controller would refuse anyway.
func checkSpecLocally(spec *livedumpv1.CaptureSpec) error {
	if spec.GetScript() != "" {
		return nil
	}
	if spec.GetOnDemand() {
		if len(spec.GetProcesses())+len(spec.GetStatuses())+len(spec.GetSyscalls()) > 0 {
			return errors.New("--on-demand: takes a dump now; --process, --syscall and --status do not apply")
		}
		return nil
	}
	if len(spec.GetStatuses()) == 0 {
		return errors.New("--status: at least one status code is required")
	}
	var values []uint32
	for _, s := range spec.GetStatuses() {
		r, err := ntstatus.Resolve(s)
		if err != nil {
			return fmt.Errorf("--status: %w", err)
		}
		values = append(values, r.NTStatus...)
	}
	if len(values) > 64 {
		return nil // the controller explains the limit
	}
	if err := probe.FromCaptureSpec("local-check", spec, values).Validate(); err != nil {
		var fe *probe.FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("--%s: %s", flagOf(fe.Field), fe.Reason)
		}
		return err
	}
	if d := spec.GetExpire().AsDuration(); d < time.Minute || d > 7*24*time.Hour {
		return fmt.Errorf("--expire: must be between 1m and 168h, got %s", d)
	}
	return nil
}

// flagOf names the CLI flag for a spec field.
func flagOf(field string) string {
	f := strings.TrimPrefix(field, "capture.")
	switch f {
	case "per_agent_cap":
		return "per-agent"
	case "lkd_mode":
		return "lkd-mode"
	}
	return strings.ReplaceAll(f, "_", "-")
}

func captureStateName(s livedumpv1.CaptureState) string {
	return enumname.Name(s, "_")
}

func targetStateName(s livedumpv1.TargetState) string {
	return enumname.Name(s, "_")
}

func (a *app) captureListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List captures, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp := &livedumpv1.ListCapturesResponse{}
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				page, err := client.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{After: after})
				resp.Captures = append(resp.Captures, page.GetCaptures()...)
				return page.GetNext(), err
			})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			now := a.now()
			t := newTable(a.stdout, "ID", "STATE", "ACTION", "CREATED", "EXPIRES", "TARGETS", "ARMED", "TRIGGERED", "FAILED", "OFFLINE", "EVENTS", "SELECTOR", "PROCESSES", "STATUSES")
			for _, c := range resp.GetCaptures() {
				n := countTargets(c)
				t.row(c.GetId(), captureStateName(c.GetState()), captureAction(c), ago(now, c.GetCreated()), until(now, c.GetExpires()),
					strconv.FormatInt(n.total, 10), strconv.FormatInt(n.armed, 10), strconv.FormatInt(n.triggered, 10),
					strconv.FormatInt(n.failed, 10), strconv.FormatInt(n.offline, 10), strconv.FormatInt(c.GetEvents(), 10), c.GetSpec().GetSelector(),
					strings.Join(c.GetSpec().GetProcesses(), ","), strings.Join(c.GetSpec().GetStatuses(), ","))
			}
			return t.flush()
		},
	}
}

func (a *app) captureGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a capture, how its statuses resolved, and its progress on each machine",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			// A capture over many machines comes in pages of its targets.
			var c *livedumpv1.Capture
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				return captureTargetPages(ctx, client, args[0], after, &c)
			})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, c)
			}
			return writeCapture(a.stdout, a.now(), c)
		},
	}
}

func writeCapture(w io.Writer, now time.Time, c *livedumpv1.Capture) error {
	spec := c.GetSpec()
	fmt.Fprintf(w, "Capture:    %s (%s)\n", c.GetId(), captureStateName(c.GetState()))
	if c.GetDetail() != "" {
		fmt.Fprintf(w, "Detail:     %s\n", cell(c.GetDetail()))
	}
	fmt.Fprintf(w, "Selector:   %s\n", spec.GetSelector())
	fmt.Fprintf(w, "Processes:  %s\n", strings.Join(spec.GetProcesses(), ", "))
	if len(spec.GetSyscalls()) > 0 {
		fmt.Fprintf(w, "Syscalls:   %s\n", strings.Join(spec.GetSyscalls(), ", "))
	}
	for _, r := range c.GetStatuses() {
		var vals []string
		for _, v := range r.GetNtstatus() {
			vals = append(vals, fmt.Sprintf("0x%08X", v))
		}
		fmt.Fprintf(w, "Status:     %s -> %s\n", r.GetInput(), strings.Join(vals, " "))
	}
	fmt.Fprintf(w, "Action:     %s\n", captureAction(c))
	fmt.Fprintf(w, "Targets:    %s\n", countTargets(c))
	fmt.Fprintf(w, "Created:    %s by %s\n", formatTime(c.GetCreated()), c.GetCreatedBy())
	fmt.Fprintf(w, "Expires:    %s (%s)\n", formatTime(c.GetExpires()), until(now, c.GetExpires()))
	fmt.Fprintf(w, "Events:     %d\n", c.GetEvents())
	for _, warn := range c.GetWarnings() {
		fmt.Fprintf(w, "Warning:    %s\n", warn)
	}
	fmt.Fprintln(w)
	t := newTable(w, "AGENT", "HOSTNAME", "STATE", "EVENTS", "UPDATED", "DETAIL")
	for _, tg := range c.GetTargets() {
		t.row(tg.GetAgentId(), tg.GetHostname(), targetStateName(tg.GetState()), strconv.FormatInt(tg.GetEvents(), 10), ago(now, tg.GetUpdated()), tg.GetDetail())
	}
	return t.flush()
}

func (a *app) captureCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Disarm the capture on every machine",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, s, err := call(a, cmd, fleetClient.CancelCapture, &livedumpv1.CancelCaptureRequest{Id: args[0]})
			if err != nil {
				return err
			}
			c, err := a.fullCapture(cmd, resp.GetCapture())
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, c)
			}
			return writeCapture(a.stdout, a.now(), c)
		},
	}
}

func statusString(ev *livedumpv1.TriggerEvent) string { return ntstatus.Describe(ev.GetStatus()) }

func (a *app) eventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List, bucket and draw a capture's trigger events",
	}
	groupCommand(cmd)
	var captureID, agentRef string
	var limit int32
	list := &cobra.Command{
		Use:   "list --capture ID [--agent AGENT]",
		Short: "List a capture's events, oldest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if captureID == "" {
				return usageErrorf(cmd, "--capture: required")
			}
			if limit < 1 || limit > 10000 {
				return usageErrorf(cmd, "--limit: must be between 1 and 10000, got %d", limit)
			}
			// The controller sends pages of at most about 1 MiB and says
			// where the next one starts.
			client, s, closeConn, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			agentID := ""
			if agentRef != "" {
				if agentID, err = resolveAgent(cmd, client, s, "--agent", agentRef); err != nil {
					return err
				}
			}
			resp := &livedumpv1.ListEventsResponse{}
			for {
				want := limit - int32(len(resp.Events))
				if agentID != "" {
					want = 10000 // filtered here: read full pages
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout)
				page, err := client.ListEvents(ctx, &livedumpv1.ListEventsRequest{CaptureId: captureID, Limit: want, After: resp.GetNext()})
				cancel()
				if err != nil {
					return rpcError(err, s)
				}
				resp.Next = page.GetNext()
				for _, e := range page.GetEvents() {
					if agentID != "" && e.GetAgentId() != agentID {
						continue
					}
					if len(resp.Events) == int(limit) {
						// More follow: go on after the last one kept.
						resp.Next = resp.Events[len(resp.Events)-1].GetId()
						break
					}
					resp.Events = append(resp.Events, e)
				}
				if resp.Next == "" || len(resp.Events) >= int(limit) || len(page.GetEvents()) == 0 {
					break
				}
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			t := newTable(a.stdout, "TIME", "HOSTNAME", "PROCESS", "PID", "TID", "PROBE", "STATUS", "TOP FRAME")
			for _, e := range resp.GetEvents() {
				top := "-"
				if len(e.GetUserFrames()) > 0 {
					top = frameString(e.GetUserFrames()[0])
				}
				t.row(formatTime(e.GetTime()), e.GetHostname(), e.GetProcess(), strconv.Itoa(int(e.GetPid())), strconv.Itoa(int(e.GetTid())),
					e.GetProbe(), statusString(e), top)
			}
			return t.flush()
		},
	}
	list.Flags().StringVar(&captureID, "capture", "", "capture `ID` (required)")
	list.Flags().Int32Var(&limit, "limit", 1000, "maximum events (1-10000)")
	list.Flags().StringVar(&agentRef, "agent", "", "only this agent's events: its `ID or HOSTNAME`")

	var bucketCapture string
	var frames int32
	buckets := &cobra.Command{
		Use:   "buckets --capture ID",
		Short: "Group a capture's events by stack signature (top resolved frames without offsets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bucketCapture == "" {
				return usageErrorf(cmd, "--capture: required")
			}
			resp, s, err := call(a, cmd, fleetClient.BucketEvents, &livedumpv1.BucketEventsRequest{CaptureId: bucketCapture, Frames: frames})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			if err := writeBuckets(a.stdout, resp.GetBuckets()); err != nil {
				return err
			}
			if n := resp.GetOmittedBuckets(); n > 0 {
				fmt.Fprintf(a.stderr, "%d smaller buckets not shown (the response would be too large); use --frames to group more coarsely\n", n)
			}
			return nil
		},
	}
	buckets.Flags().StringVar(&bucketCapture, "capture", "", "capture `ID` (required)")
	buckets.Flags().Int32Var(&frames, "frames", 5, "top resolved user frames in a signature (1-50)")
	cmd.AddCommand(list, buckets, a.eventsFlamegraphCmd())
	return cmd
}
