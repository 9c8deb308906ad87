package api

import (
	"fmt"
	"maps"
	"unicode"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxInventoryField bounds every inventory string: they come from the agent
// and end up in tables, labels and logs.
const maxInventoryField = 256

func validateInventory(inv *livedumpv1.Inventory) error {
	if inv == nil {
		return invalid("inventory", "missing")
	}
	fields := map[string]string{
		"inventory.hostname":             inv.GetHostname(),
		"inventory.os_build":             inv.GetOsBuild(),
		"inventory.os_edition":           inv.GetOsEdition(),
		"inventory.os_product_name":      inv.GetOsProductName(),
		"inventory.os_installation_type": inv.GetOsInstallationType(),
		"inventory.arch":                 inv.GetArch(),
		"inventory.agent_version":        inv.GetAgentVersion(),
	}
	for name, v := range fields {
		if len(v) > maxInventoryField {
			return invalid(name, "longer than %d bytes", maxInventoryField)
		}
		for _, r := range v {
			if !unicode.IsPrint(r) {
				return invalid(name, "contains a non-printable character %U", r)
			}
		}
	}
	if inv.GetHostname() == "" {
		return invalid("inventory.hostname", "missing")
	}
	return nil
}

func inventoryToStore(id string, inv *livedumpv1.Inventory) store.Agent {
	return store.Agent{
		ID:                 id,
		Hostname:           inv.GetHostname(),
		OSBuild:            inv.GetOsBuild(),
		OSUBR:              inv.GetOsUbr(),
		OSEdition:          inv.GetOsEdition(),
		OSProductName:      inv.GetOsProductName(),
		OSInstallationType: inv.GetOsInstallationType(),
		Arch:               inv.GetArch(),
		AgentVersion:       inv.GetAgentVersion(),
	}
}

// allLabels returns the agent's user labels plus the built-in ones, which
// always reflect the latest inventory.
func allLabels(a store.Agent) map[string]string {
	l := maps.Clone(a.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[selector.LabelHostname] = a.Hostname
	l[selector.LabelOSBuild] = a.OSBuild
	return l
}

func agentToProto(a store.Agent, state livedumpv1.AgentState) *livedumpv1.Agent {
	p := &livedumpv1.Agent{
		Id:       a.ID,
		Hostname: a.Hostname,
		Labels:   allLabels(a),
		Inventory: &livedumpv1.Inventory{
			Hostname:           a.Hostname,
			OsBuild:            a.OSBuild,
			OsUbr:              a.OSUBR,
			OsEdition:          a.OSEdition,
			OsProductName:      a.OSProductName,
			OsInstallationType: a.OSInstallationType,
			Arch:               a.Arch,
			AgentVersion:       a.AgentVersion,
		},
		State:           state,
		ProvisionState:  provisionStateValue(a.ProvisionState),
		ProvisionDetail: a.ProvisionDetail,
	}
	if !a.FirstSeen.IsZero() {
		p.FirstSeen = timestamppb.New(a.FirstSeen)
	}
	if !a.LastSeen.IsZero() {
		p.LastSeen = timestamppb.New(a.LastSeen)
	}
	if !a.CertExpiry.IsZero() {
		p.CertificateExpires = timestamppb.New(a.CertExpiry)
	}
	return p
}

func tokenToProto(t store.Token) *livedumpv1.Token {
	return &livedumpv1.Token{
		Id:        t.ID,
		Uses:      int32(t.Uses),
		UsesLeft:  int32(t.UsesLeft),
		Created:   timestamppb.New(t.Created),
		Expires:   timestamppb.New(t.Expires),
		Labels:    t.Labels,
		Revoked:   t.Revoked,
		CreatedBy: t.CreatedBy,
	}
}

func auditToProto(e store.AuditEntry) *livedumpv1.AuditEntry {
	return &livedumpv1.AuditEntry{
		Id:      e.ID,
		Time:    timestamppb.New(e.Time),
		Actor:   e.Actor,
		Action:  e.Action,
		Target:  e.Target,
		Outcome: e.Outcome,
		Details: e.Details,

		CertSerial: e.CertSerial,
	}
}

func labelErr(field string, err error) error { return invalid(field, "%s", fmt.Sprint(err)) }
