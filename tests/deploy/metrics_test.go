package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/sim"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// Jobs of deploy/prometheus/prometheus.yml.
const (
	jobController = "livedump-controller"
	jobAgents     = "livedump-agents"
)

// builtins are series Prometheus itself makes: scrape health and the
// alert state series.
var builtins = []string{
	"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
	"scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
}

// families maps metric family names to their type.
type families map[string]dto.MetricType

// has reports whether name is a series of one of the families: the family
// itself, or a _bucket, _sum or _count series of a histogram (_sum and
// _count of a summary).
func (f families) has(name string) bool {
	if _, ok := f[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch f[base] {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}

func gather(t *testing.T, g prometheus.Gatherer) families {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	f := families{}
	for _, mf := range mfs {
		f[mf.GetName()] = mf.GetType()
	}
	return f
}

// registries runs the real controller and a real agent on a simulated
// Windows host, connected over mTLS on loopback, and returns their metric
// families. Running them, not only constructing them, makes the metrics
// that appear on first use (the agent's gRPC client metrics) exist too.
func registries(t *testing.T) (ctl, agt families) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	ctlReg, agentReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	c, err := controller.New(ctx, controller.Config{
		Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: log, Metrics: ctlReg,
	})
	if err != nil {
		cancel()
		t.Fatalf("controller.New: %v", err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := pki.WriteCerts(caFile, c.CA().Cert); err != nil {
		t.Fatal(err)
	}
	token, err := c.CreateToken(ctx, 1, time.Hour, map[string]string{"site": "test"})
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(stateDir, "host"), Hostname: "DEPLOY-TEST"})
	if err != nil {
		t.Fatalf("sim.New: %v", err)
	}
	a, err := agent.New(agent.Config{
		Controllers: []string{c.Addr()}, CAFile: caFile, Token: token, StateDir: stateDir,
		MetricsListen: "127.0.0.1:0", Host: h, Logger: log, Metrics: agentReg,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	})
	if err != nil {
		cancel()
		c.Close()
		t.Fatalf("agent.New: %v", err)
	}
	done := make(chan error, 2)
	go func() { done <- c.Run(ctx) }()
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Errorf("controller or agent did not stop within 20s")
				return
			}
		}
	}()

	connected := func() bool {
		mfs, _ := agentReg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "livedump_agent_connected" && len(mf.GetMetric()) == 1 {
				return mf.GetMetric()[0].GetGauge().GetValue() == 1
			}
		}
		return false
	}
	for deadline := time.Now().Add(30 * time.Second); !connected(); {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not connect to the controller within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return gather(t, ctlReg), gather(t, agentReg)
}

// usage is one metric used in a file of deploy/.
type usage struct {
	file, where string
	sel         selection
}

// deployUsages lists the metric selections of every dashboard, the alert
// rules and their tests.
func deployUsages(t *testing.T) []usage {
	t.Helper()
	var out []usage
	add := func(file, where, expr string) {
		sels, err := selections(expr)
		if err != nil {
			t.Errorf("%s: %s: %v", file, where, err)
			return
		}
		if len(sels) == 0 {
			t.Errorf("%s: %s: no metric in %q", file, where, expr)
		}
		for _, s := range sels {
			out = append(out, usage{file: file, where: where, sel: s})
		}
	}

	dashboards, err := filepath.Glob(filepath.Join(root, "deploy", "grafana", "*.json"))
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboard in deploy/grafana: %v", err)
	}
	for _, path := range dashboards {
		var d any
		if err := json.Unmarshal(readFile(t, path), &d); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		walkDashboard(d, "", func(where, expr string) { add(rel(path), where, expr) })
	}

	rulesPath := filepath.Join(root, "deploy", "prometheus", "rules.yml")
	var rules rulesFile
	if err := yaml.Unmarshal(readFile(t, rulesPath), &rules); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			add(rel(rulesPath), "rule "+r.Alert+r.Record, r.Expr)
		}
	}

	testPath := filepath.Join(root, "deploy", "prometheus", "rules_test.yml")
	var rt rulesTestFile
	if err := yaml.Unmarshal(readFile(t, testPath), &rt); err != nil {
		t.Fatalf("%s: %v", testPath, err)
	}
	for _, tc := range rt.Tests {
		for _, s := range tc.InputSeries {
			add(rel(testPath), "test "+tc.Name+": input series", s.Series)
		}
		for _, e := range tc.PromQLExprTest {
			add(rel(testPath), "test "+tc.Name+": promql_expr_test", e.Expr)
			for _, s := range e.ExpSamples {
				if s.Labels != "" {
					add(rel(testPath), "test "+tc.Name+": exp_samples", s.Labels)
				}
			}
		}
	}
	return out
}

// walkDashboard calls fn for every PromQL expression in a Grafana
// dashboard: the "expr" of every query, and the query of every query
// variable (label_values(EXPR, label) and query_result(EXPR) unwrapped).
func walkDashboard(v any, where string, fn func(where, expr string)) {
	switch v := v.(type) {
	case map[string]any:
		title, _ := v["title"].(string)
		if title != "" {
			where = "panel " + fmt.Sprintf("%q", title)
		}
		if expr, ok := v["expr"].(string); ok && expr != "" {
			fn(where, expr)
		}
		if name, _ := v["name"].(string); v["type"] == "query" && name != "" {
			q := v["query"]
			if m, ok := q.(map[string]any); ok {
				q = m["query"]
			}
			if s, ok := q.(string); ok {
				if expr := variableExpr(s); expr != "" {
					fn("variable $"+name, expr)
				}
			}
			return
		}
		for k, c := range v {
			if k != "query" {
				walkDashboard(c, where, fn)
			}
		}
	case []any:
		for _, c := range v {
			walkDashboard(c, where, fn)
		}
	}
}

// variableExpr returns the PromQL inside a Grafana Prometheus variable
// query, or "" when it has none (label_names(), label_values(label)).
func variableExpr(q string) string {
	q = strings.TrimSpace(q)
	inner := func(prefix string) (string, bool) {
		rest, ok := strings.CutPrefix(q, prefix+"(")
		if !ok || !strings.HasSuffix(rest, ")") {
			return "", false
		}
		return strings.TrimSuffix(rest, ")"), true
	}
	if args, ok := inner("label_values"); ok {
		i := strings.LastIndex(args, ",")
		if i < 0 {
			return ""
		}
		return args[:i]
	}
	if expr, ok := inner("query_result"); ok {
		return expr
	}
	if _, ok := inner("label_names"); ok {
		return ""
	}
	if _, ok := inner("metrics"); ok {
		return ""
	}
	return q
}

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type rulesTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTest []struct {
			Expr       string `yaml:"expr"`
			ExpSamples []struct {
				Labels string `yaml:"labels"`
			} `yaml:"exp_samples"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rel(path string) string {
	if r, err := filepath.Rel(root, path); err == nil {
		return filepath.ToSlash(r)
	}
	return path
}

// TestDeployedMetricsExist fails when a dashboard, an alert rule or a rule
// test uses a metric that neither the controller nor the agent exports,
// e.g. after a rename in the code. A selector that names the job of one
// side must use a metric of that side.
func TestDeployedMetricsExist(t *testing.T) {
	uses := deployUsages(t)
	ctl, agt := registries(t)
	if len(ctl) < 20 || len(agt) < 20 {
		t.Fatalf("suspiciously few metric families: controller %d, agent %d", len(ctl), len(agt))
	}
	checked := map[string]bool{}
	for _, u := range uses {
		name := u.sel.metric
		var ok bool
		var side string
		switch {
		case slices.Contains(builtins, name):
			ok = true
		case u.sel.job == jobController:
			ok, side = ctl.has(name), " of the controller (the selector names job=\""+jobController+"\")"
		case u.sel.job == jobAgents:
			ok, side = agt.has(name), " of the agent (the selector names job=\""+jobAgents+"\")"
		default:
			ok = ctl.has(name) || agt.has(name)
		}
		if !ok {
			t.Errorf("%s: %s: metric %s is not in the registry%s", u.file, u.where, name, side)
		}
		checked[name] = true
	}
	t.Logf("%d metric names used in deploy/ checked against %d controller and %d agent families", len(checked), len(ctl), len(agt))
}

// TestEveryAlertIsTested: each alert in rules.yml has, in rules_test.yml,
// an evaluation where it fires and one where it does not.
func TestEveryAlertIsTested(t *testing.T) {
	var rules rulesFile
	if err := yaml.Unmarshal(readFile(t, filepath.Join(root, "deploy", "prometheus", "rules.yml")), &rules); err != nil {
		t.Fatal(err)
	}
	var rt rulesTestFile
	if err := yaml.Unmarshal(readFile(t, filepath.Join(root, "deploy", "prometheus", "rules_test.yml")), &rt); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in rules_test.yml where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s: no test in rules_test.yml where it does not fire", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert in rules.yml")
	}
}
