package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/livedump/livedump/internal/enumname"
	"github.com/livedump/livedump/internal/ntstatus"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// writePreview prints what a capture arms, as the controller computed it:
// the machines with their provisioning states, the processes as execname
// holds them, the resolved statuses and the D script.
func writePreview(w io.Writer, p *livedumpv1.CapturePreview, dryRun bool) {
	if dryRun {
		fmt.Fprintln(w, "Dry run: nothing was stored or armed.")
	}
	fmt.Fprintf(w, "Selector:   %s: %s\n", cell(p.GetSelector()), previewCounts(p))
	if len(p.GetTargets()) > 0 {
		t := newTable(w, "  HOSTNAME", "AGENT", "PROVISIONING", "DETAIL")
		for _, tg := range p.GetTargets() {
			t.row("  "+cell(tg.GetHostname()), tg.GetAgentId(), provisionName(tg.GetProvisionState()), tg.GetProvisionDetail())
		}
		_ = t.flush()
		if n := p.GetOmittedTargets(); n > 0 {
			fmt.Fprintf(w, "  ... and %d more (livedumpctl agents list -l %s)\n", n, cell(p.GetSelector()))
		}
	}
	for i, proc := range p.GetProcesses() {
		label := "Processes:  "
		if i > 0 {
			label = "            "
		}
		how := "in any case"
		if proc.GetTruncated() {
			how = "cut to the kernel's 14 characters, in any case"
		}
		fmt.Fprintf(w, "%s%s -> execname %q (%s)\n", label, cell(proc.GetInput()), proc.GetExecname(), how)
	}
	for _, r := range p.GetStatuses() {
		vals := make([]string, 0, len(r.GetNtstatus()))
		for _, v := range r.GetNtstatus() {
			s := fmt.Sprintf("0x%08X", v)
			if n := ntstatus.Name(v); n != "" {
				s += " " + n
			}
			vals = append(vals, s)
		}
		fmt.Fprintf(w, "Status:     %s -> %s\n", cell(r.GetInput()), strings.Join(vals, ", "))
	}
	fmt.Fprintln(w, "Script:")
	for _, line := range strings.Split(strings.TrimRight(p.GetRenderedScript(), "\n"), "\n") {
		fmt.Fprintln(w, "    "+strings.Map(func(r rune) rune {
			if r == '\t' {
				return r
			}
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, line))
	}
}

// previewCounts is "2 machines, 1 provisioned (1 ready, 1 not-provisioned)".
func previewCounts(p *livedumpv1.CapturePreview) string {
	n := p.GetMatched()
	if n == 0 {
		return "no machine matches"
	}
	machines := "machines"
	if n == 1 {
		machines = "machine"
	}
	states := p.GetProvisionStates()
	names := make([]string, 0, len(states))
	for s := range states {
		names = append(names, s)
	}
	slices.SortFunc(names, func(a, b string) int {
		if states[a] != states[b] {
			return int(states[b] - states[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, s := range names {
		parts[i] = fmt.Sprintf("%d %s", states[s], s)
	}
	return fmt.Sprintf("%d %s, %d provisioned (%s)", n, machines, p.GetReady(), strings.Join(parts, ", "))
}

func provisionName(s livedumpv1.ProvisionState) string {
	if s == livedumpv1.ProvisionState_PROVISION_STATE_UNSPECIFIED {
		return "unknown"
	}
	return enumname.Name(s, "-")
}

// writeCaptureJSON prints the capture as `capture get -o json` does, with
// the preview under the key "preview": scripts that read the capture keep
// working.
func writeCaptureJSON(w io.Writer, c *livedumpv1.Capture, p *livedumpv1.CapturePreview) error {
	cb, err := jsonOptions.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	pb, err := jsonOptions.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	cb = bytes.TrimRight(cb, " \n")
	obj := bytes.TrimSuffix(cb, []byte("}"))
	if len(bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(obj), []byte("{")))) > 0 {
		obj = append(obj, ',')
	}
	obj = append(obj, []byte(`"preview":`)...)
	obj = append(obj, pb...)
	obj = append(obj, '}')
	return writeIndented(w, obj)
}
