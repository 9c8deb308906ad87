package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestAgentsListPrometheusSD(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "agents", "list", "-l", "site=lab", "-o", "prometheus-sd", "--metrics-port", "9182")
	wantCall(t, tc, "ListAgents", &livedumpv1.ListAgentsRequest{Selector: "site=lab"})

	var got []sdGroup
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not a file_sd target list: %v\n%s", err, out)
	}
	want := []sdGroup{
		{Targets: []string{"WS-0001:9182"}, Labels: map[string]string{
			"agent_id": "ws-0001", "hostname": "WS-0001", "livedump_label_role": "vdi", "livedump_label_site": "lab",
		}},
		{Targets: []string{"WS-0002:9182"}, Labels: map[string]string{"agent_id": "ws-0002", "hostname": "WS-0002"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file_sd = %+v\nwant      %+v", got, want)
	}

	tc.fake.reset()
	out = runOK(t, "-o", "prometheus-sd", "agents", "list")
	if !bytes.Contains([]byte(out), []byte(`"WS-0001:9465"`)) {
		t.Errorf("default --metrics-port is not 9465:\n%s", out)
	}
}

func TestAgentsListPrometheusSDBadInput(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"port zero", []string{"agents", "list", "-o", "prometheus-sd", "--metrics-port", "0"}, []string{"--metrics-port", "0"}},
		{"port too big", []string{"agents", "list", "--metrics-port", "70000"}, []string{"--metrics-port", "70000"}},
		{"only agents list has it", []string{"-o", "prometheus-sd", "tokens", "list"}, []string{`output "prometheus-sd"`, "table or json"}},
		{"agents list names it", []string{"-o", "xml", "agents", "list"}, []string{`output "xml"`, "table or json (or prometheus-sd for agents list)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := startController(t)
			code, stdout, stderr := runCLI(t, tt.args...)
			wantOneLineError(t, code, stdout, stderr, tt.want...)
			if got := tc.fake.received(); len(got) != 0 {
				t.Errorf("bad input reached the controller: %v", got)
			}
		})
	}
}

func TestWritePrometheusSD(t *testing.T) {
	agents := []*livedumpv1.Agent{
		{Id: "b2", Hostname: "PC-B", State: livedumpv1.AgentState_AGENT_STATE_ONLINE, Labels: map[string]string{
			"hostname": "PC-B", "os.build": "22631", // built-ins: not repeated as user labels
			"example.com/team": "sre", "ring-2": "canary",
			"a.b": "first", "a_b": "second", // both sanitize to a_b: the first sorted key wins
		}},
		{Id: "a1", State: livedumpv1.AgentState_AGENT_STATE_OFFLINE, Inventory: &livedumpv1.Inventory{Hostname: "PC-A"}},
		{Id: "r1", Hostname: "PC-R", State: livedumpv1.AgentState_AGENT_STATE_REVOKED},
		{Id: "u1", Hostname: "PC-U"},                                // state unknown
		{Id: "n1", State: livedumpv1.AgentState_AGENT_STATE_ONLINE}, // no hostname yet
	}
	var buf bytes.Buffer
	if err := writePrometheusSD(&buf, agents, 9465); err != nil {
		t.Fatal(err)
	}
	var got []sdGroup
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := []sdGroup{
		{Targets: []string{"PC-A:9465"}, Labels: map[string]string{"agent_id": "a1", "hostname": "PC-A"}},
		{Targets: []string{"PC-B:9465"}, Labels: map[string]string{
			"agent_id": "b2", "hostname": "PC-B",
			"livedump_label_example_com_team": "sre", "livedump_label_ring_2": "canary", "livedump_label_a_b": "first",
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file_sd = %+v\nwant      %+v", got, want)
	}

	buf.Reset()
	if err := writePrometheusSD(&buf, nil, 9465); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "[]\n" {
		t.Errorf("no agents: %q, want an empty list (Prometheus reads it as no targets)", buf.String())
	}
}
