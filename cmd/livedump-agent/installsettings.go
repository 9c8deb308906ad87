package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/livedump/livedump/internal/ids"
	"github.com/livedump/livedump/internal/selector"
)

// installSettings are the agent settings an installer hands over (on
// Windows: the MSI properties, which the MSI writes to the registry and
// the service moves into agent.yaml when it starts; see
// docs/install-windows.md). An empty field leaves the config unchanged.
type installSettings struct {
	Controllers string // CONTROLLER: HOST:PORT[,HOST:PORT...]
	CAFile      string // where the CA certificate was copied to (from CA_CERT)
	Token       string // ENROLL_TOKEN
	Labels      string // LABELS: K=V,K=V
	// MetricsListen is METRICS_LISTEN: HOST:PORT for /metrics, or "-".
	MetricsListen string
	// InstallerSHA256 is INSTALLER_SHA256: HEX[,HEX...], the SHA-256 of
	// installers (the DTrace MSI) the agent runs whatever their signature.
	// It is set here, at install time, by whoever installs the agent:
	// never by the controller.
	InstallerSHA256 string
	// AllowRawScripts is ALLOW_RAW_SCRIPTS: "1" lets the controller arm
	// captures that carry their own D script, "0" turns that off again
	// (the default; see allow_raw_scripts). Like INSTALLER_SHA256 it is
	// decided by whoever installs the agent, never by the controller.
	AllowRawScripts string
}

func (s installSettings) empty() bool {
	return s.Controllers == "" && s.CAFile == "" && s.Token == "" && s.Labels == "" && s.MetricsListen == "" && s.InstallerSHA256 == "" && s.AllowRawScripts == ""
}

// validate checks the settings the way the agent will read them, so that a
// typo in an MSI property fails at the service's start with the property
// named, not later as a connection error.
func (s installSettings) validate() error {
	if s.Controllers != "" {
		for _, c := range splitList(s.Controllers) {
			host, port, err := net.SplitHostPort(c)
			if err != nil || host == "" {
				return fmt.Errorf("CONTROLLER %q: want HOST:PORT[,HOST:PORT...]", s.Controllers)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("CONTROLLER %q: port %q is not a number from 1 to 65535", s.Controllers, port)
			}
		}
	}
	if m := s.MetricsListen; m != "" && m != "-" {
		if _, port, err := net.SplitHostPort(m); err != nil {
			return fmt.Errorf("METRICS_LISTEN %q: want HOST:PORT, or - to disable", m)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("METRICS_LISTEN %q: port %q is not a number from 0 to 65535", m, port)
		}
	}
	if strings.ContainsAny(s.Token, " \t\r\n\"'") {
		return errors.New("ENROLL_TOKEN: must not contain blanks or quotes")
	}
	if s.Labels != "" {
		if _, err := selector.ParseSet(s.Labels); err != nil {
			return fmt.Errorf("LABELS %q: %w", s.Labels, err)
		}
	}
	if s.InstallerSHA256 != "" {
		sums := installerSums(s.InstallerSHA256)
		if len(sums) == 0 {
			return fmt.Errorf("INSTALLER_SHA256 %q: want HEX[,HEX...]", s.InstallerSHA256)
		}
		for _, sum := range sums {
			if err := ids.SHA256(sum); err != nil {
				return fmt.Errorf("INSTALLER_SHA256: %w", err)
			}
		}
	}
	if r := s.AllowRawScripts; r != "" && r != "0" && r != "1" {
		return fmt.Errorf("ALLOW_RAW_SCRIPTS %q: want 1 (allow captures with their own D script) or 0 (do not)", r)
	}
	return nil
}

// installerSums splits INSTALLER_SHA256 into lower-case hashes (commas,
// semicolons or blanks between them), as Get-FileHash prints them in upper
// case.
func installerSums(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' }) {
		out = append(out, strings.ToLower(f))
	}
	return out
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// configHeader starts an agent.yaml written from installer settings.
const configHeader = `livedump agent configuration (see docs/install-windows.md).
Written from the MSI properties CONTROLLER, CA_CERT, ENROLL_TOKEN, LABELS,
METRICS_LISTEN, INSTALLER_SHA256 and ALLOW_RAW_SCRIPTS when the service
starts after an install or upgrade. A
property given again later replaces the key it sets; other keys and
comments are kept.`

// mergeConfig returns the agent config document old (YAML; empty for none)
// with the non-empty settings set, keeping every other key and comment, and
// the names of the keys it set.
func mergeConfig(old []byte, s installSettings) ([]byte, []string, error) {
	if err := s.validate(); err != nil {
		return nil, nil, err
	}
	var doc yaml.Node
	if len(bytes.TrimSpace(old)) > 0 {
		if err := yaml.Unmarshal(old, &doc); err != nil {
			return nil, nil, fmt.Errorf("existing config: %w", err)
		}
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
		doc.HeadComment = configHeader
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("existing config: the document is not a mapping of keys to values")
	}
	root := doc.Content[0]
	var set []string
	str := func(key, val string) {
		if val == "" {
			return
		}
		setKey(root, key, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val, Style: yaml.DoubleQuotedStyle})
		set = append(set, key)
	}
	if s.Controllers != "" {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, c := range splitList(s.Controllers) {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c})
		}
		setKey(root, "controllers", seq)
		set = append(set, "controllers")
	}
	str("ca_file", s.CAFile)
	str("token", s.Token)
	str("labels", s.Labels)
	str("metrics_listen", s.MetricsListen)
	if s.InstallerSHA256 != "" {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, sum := range installerSums(s.InstallerSHA256) {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: sum, Style: yaml.DoubleQuotedStyle})
		}
		setKey(root, "installer_sha256", seq)
		set = append(set, "installer_sha256")
	}
	if s.AllowRawScripts != "" {
		setKey(root, "allow_raw_scripts", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(s.AllowRawScripts == "1")})
		set = append(set, "allow_raw_scripts")
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), set, nil
}

// setKey sets key in mapping m to val, in place when the key exists
// (keeping its comments), else appended.
func setKey(m *yaml.Node, key string, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1]
			val.LineComment, val.FootComment = old.LineComment, old.FootComment
			m.Content[i+1] = val
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, val)
}
