package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// outputPrometheusSD is `agents list -o prometheus-sd`: the agents' metrics
// endpoints as a Prometheus file_sd target list (see deploy/prometheus).
const outputPrometheusSD = "prometheus-sd"

// annotationOutputs on a command lists the -o formats it accepts besides
// table and json, comma-separated.
const annotationOutputs = "livedumpctl/outputs"

// promLabelPrefix prefixes an agent's user labels in the file_sd output.
const promLabelPrefix = "livedump_label_"

// defaultMetricsPort is where agents serve /metrics unless configured
// otherwise (agent.DefaultMetricsListen).
const defaultMetricsPort = 9465

// outputAllowed reports whether cmd accepts the -o format out, and the
// formats it accepts as words for the error message: "table or json", then
// the command's own extras, e.g. "table or json (or prometheus-sd for
// agents list)".
func outputAllowed(cmd *cobra.Command, out string) (bool, string) {
	ok := out == outputTable || out == outputJSON
	words := outputTable + " or " + outputJSON
	if extra := cmd.Annotations[annotationOutputs]; extra != "" {
		formats := strings.Split(extra, ",")
		ok = ok || slices.Contains(formats, out)
		words += fmt.Sprintf(" (or %s for %s)", strings.Join(formats, ", "), strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" "))
	}
	return ok, words
}

// sdGroup is one file_sd target group.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// writePrometheusSD prints the file_sd JSON for agents: one target group
// per online or offline agent (revoked ones are left out), the target
// <hostname>:<port>, and the labels agent_id, hostname and the user labels
// as livedump_label_<key>. Keys are sanitized into Prometheus label names;
// when two keys sanitize to the same name, the first key in sorted order
// wins. The output is sorted by hostname, then ID, so it is stable for
// diffs.
func writePrometheusSD(w io.Writer, agents []*livedumpv1.Agent, port int) error {
	groups := []sdGroup{}
	for _, ag := range agents {
		switch ag.GetState() {
		case livedumpv1.AgentState_AGENT_STATE_ONLINE, livedumpv1.AgentState_AGENT_STATE_OFFLINE:
		default:
			continue
		}
		host := ag.GetHostname()
		if host == "" {
			host = ag.GetInventory().GetHostname()
		}
		if host == "" {
			continue // nothing to scrape yet
		}
		labels := map[string]string{"agent_id": ag.GetId(), "hostname": host}
		for _, k := range mapKeys(ag.GetLabels()) {
			if selector.IsBuiltin(k) {
				continue
			}
			name := promLabelPrefix + promLabelName(k)
			if _, taken := labels[name]; !taken {
				labels[name] = ag.GetLabels()[k]
			}
		}
		groups = append(groups, sdGroup{
			Targets: []string{net.JoinHostPort(host, strconv.Itoa(port))},
			Labels:  labels,
		})
	}
	slices.SortStableFunc(groups, func(a, b sdGroup) int {
		if c := strings.Compare(a.Labels["hostname"], b.Labels["hostname"]); c != 0 {
			return c
		}
		return strings.Compare(a.Labels["agent_id"], b.Labels["agent_id"])
	})
	b, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return fmt.Errorf("encode prometheus-sd: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// promLabelName turns a livedump label key (letters, digits, '-', '_', '.',
// and an optional DNS prefix with '/') into the tail of a Prometheus label
// name: every other character becomes '_'.
func promLabelName(key string) string {
	b := []byte(key)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
