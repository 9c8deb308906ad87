package api

import (
	"fmt"
	"sort"
	"strings"

	"github.com/livedump/livedump/internal/pki"
)

// matrixCallers are the columns of the permission matrix, from the least
// trusted caller to the most.
var matrixCallers = []string{"no certificate", "agent", "viewer", "operator", "admin"}

// PermissionMatrix renders the authorizer's policy table as a Markdown table:
// one row per RPC, one column per kind of caller. docs/security.md embeds it
// and a test keeps the two equal, so the document cannot drift from the code.
func PermissionMatrix() string {
	methods := make([]string, 0, len(policy))
	for m := range policy {
		methods = append(methods, m)
	}
	sort.Slice(methods, func(i, j int) bool {
		si, sj := serviceOf(methods[i]), serviceOf(methods[j])
		if si != sj {
			return serviceRank(si) < serviceRank(sj)
		}
		return methods[i] < methods[j]
	})
	var b strings.Builder
	fmt.Fprintf(&b, "| RPC | %s | audited |\n", strings.Join(matrixCallers, " | "))
	b.WriteString("|---|" + strings.Repeat("---|", len(matrixCallers)) + "---|\n")
	for _, m := range methods {
		r := policy[m]
		cells := make([]string, len(matrixCallers))
		for i, who := range matrixCallers {
			cells[i] = "—"
			if r.allows(who) {
				cells[i] = "yes"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", shortMethod(m), strings.Join(cells, " | "), auditedCell(r))
	}
	return b.String()
}

// allows reports whether a caller of the matrix column who may call the RPC
// the rule governs, before any per-object check.
func (r rule) allows(who string) bool {
	switch r.caller {
	case anyone:
		return true
	case certified:
		return who != "no certificate"
	case agents:
		return who == "agent"
	case operators:
		switch who {
		case "viewer", "operator", "admin":
			return pki.Role(who).Allows(r.minRole)
		}
	}
	return false
}

func auditedCell(r rule) string {
	if r.mutating || r.audit {
		return "every call"
	}
	return "refusals"
}

func serviceOf(full string) string {
	full = strings.TrimPrefix(full, "/")
	if i := strings.Index(full, "/"); i >= 0 {
		full = full[:i]
	}
	if i := strings.LastIndex(full, "."); i >= 0 {
		full = full[i+1:]
	}
	return full
}

func serviceRank(s string) int {
	switch s {
	case "AgentService":
		return 0
	case "FleetService":
		return 1
	}
	return 2
}
