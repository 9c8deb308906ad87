package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/ntstatus"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Dynamic shell completion ("livedumpctl completion bash|zsh|fish|powershell"
// prints the script; the shell then runs "livedumpctl __complete ...").
// Completion must never hang a shell: each lookup is one page, bounded by
// completionTimeout, and any failure (no config, controller down, refused)
// completes nothing rather than print an error.
const (
	completionTimeout = 2 * time.Second
	maxCompletions    = 200
)

// registerCompletions adds completion to the commands and flags that take
// agents, captures, dumps, status names and enumerated values, wherever
// they are in the tree (commands other files define included): AGENT
// arguments and --agent flags, capture IDs and --capture, dump IDs,
// --status, --action, --upload and -o.
func (a *app) registerCompletions(root *cobra.Command) {
	_ = root.RegisterFlagCompletionFunc(keyOutput, completeOutput)
	walk(root, func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if c.ValidArgsFunction == nil {
			switch path {
			case "agents describe", "agents revoke", "agents label":
				c.ValidArgsFunction = a.completeFirstArg(a.completeAgents)
			case "capture get", "capture cancel", "capture watch", "capture delete":
				c.ValidArgsFunction = a.completeFirstArg(a.completeCaptures)
			case "dumps get", "dumps pull", "dumps delete":
				c.ValidArgsFunction = a.completeFirstArg(a.completeDumps)
			}
		}
		flag := func(name string, fn cobra.CompletionFunc) {
			if c.LocalFlags().Lookup(name) != nil {
				if _, ok := c.GetFlagCompletionFunc(name); !ok {
					_ = c.RegisterFlagCompletionFunc(name, fn)
				}
			}
		}
		flag("agent", a.completeAgents)
		flag("capture", a.completeCaptures)
		flag("status", completeStatuses)
		flag("action", cobra.FixedCompletions([]string{"stacks\tstack traces only", "dump\ta live kernel dump per trigger"}, cobra.ShellCompDirectiveNoFileComp))
		flag("upload", cobra.FixedCompletions([]string{"full\tupload every dump", "hash-only\tkeep dumps on the machine, send their hash"}, cobra.ShellCompDirectiveNoFileComp))
	})
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// completeFirstArg completes only the first positional argument with fn.
func (a *app) completeFirstArg(fn cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return fn(cmd, args, toComplete)
	}
}

// completionClient connects for one completion lookup; nil when the
// configuration does not allow a connection.
func (a *app) completionClient(cmd *cobra.Command) (fleetClient, func() error, context.Context, context.CancelFunc) {
	s, err := a.settings(cmd)
	if err != nil {
		return nil, nil, nil, nil
	}
	client, closeConn, err := a.dial(cmd.Context(), s)
	if err != nil {
		return nil, nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), min(s.timeout, completionTimeout))
	return client, closeConn, ctx, cancel
}

// completeAgents offers hostnames and agent IDs that start with what was
// typed (hostnames in any case), from the first page of the fleet.
func (a *app) completeAgents(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	client, closeConn, ctx, cancel := a.completionClient(cmd)
	if client == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer closeConn()
	defer cancel()
	resp, err := client.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	up := strings.ToUpper(toComplete)
	for _, ag := range resp.GetAgents() {
		host, state := cell(hostOf(ag)), agentState(ag.GetState())
		if host != "-" && strings.HasPrefix(strings.ToUpper(host), up) {
			out = append(out, cobra.CompletionWithDesc(host, "agent "+ag.GetId()+", "+state))
		}
		if strings.HasPrefix(ag.GetId(), toComplete) {
			out = append(out, cobra.CompletionWithDesc(ag.GetId(), host+", "+state))
		}
	}
	return bounded(out), cobra.ShellCompDirectiveNoFileComp
}

// completeCaptures offers the IDs of the newest captures.
func (a *app) completeCaptures(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	client, closeConn, ctx, cancel := a.completionClient(cmd)
	if client == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer closeConn()
	defer cancel()
	resp, err := client.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, c := range resp.GetCaptures() {
		if strings.HasPrefix(c.GetId(), toComplete) {
			out = append(out, cobra.CompletionWithDesc(c.GetId(), captureStateName(c.GetState())+", "+cell(c.GetSpec().GetSelector())))
		}
	}
	return bounded(out), cobra.ShellCompDirectiveNoFileComp
}

// completeDumps offers the IDs of the newest dumps.
func (a *app) completeDumps(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	client, closeConn, ctx, cancel := a.completionClient(cmd)
	if client == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer closeConn()
	defer cancel()
	resp, err := client.ListDumps(ctx, &livedumpv1.ListDumpsRequest{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, d := range resp.GetDumps() {
		if strings.HasPrefix(d.GetId(), toComplete) {
			out = append(out, cobra.CompletionWithDesc(d.GetId(), cell(d.GetHostname())+", "+dumpStateName(d.GetState())+", "+humanSize(d.GetSize())))
		}
	}
	return bounded(out), cobra.ShellCompDirectiveNoFileComp
}

// completeStatuses offers status-code names for the last of a
// comma-separated list (--status A,B): what was typed before the last
// comma is kept.
func completeStatuses(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	done, last := "", toComplete
	if i := strings.LastIndex(toComplete, ","); i >= 0 {
		done, last = toComplete[:i+1], toComplete[i+1:]
	}
	names, _ := ntstatus.Names(last, maxCompletions)
	out := make([]cobra.Completion, len(names))
	for i, n := range names {
		out[i] = done + n
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeOutput offers the output formats the command accepts.
func completeOutput(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	out := []string{outputTable, outputJSON}
	if extra := cmd.Annotations[annotationOutputs]; extra != "" {
		out = append(out, strings.Split(extra, ",")...)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func bounded(c []cobra.Completion) []cobra.Completion {
	slices.Sort(c)
	c = slices.Compact(c)
	return c[:min(len(c), maxCompletions)]
}
