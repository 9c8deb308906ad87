package sqlstore

import (
	"database/sql"
	"errors"

	"github.com/livedump/livedump/controller/store"
)

// The scan functions read one row of the matching column list (AgentColumns
// for ScanAgent, and so on) the same way on both drivers: nullable times
// into *int64 (TimeVal), booleans into bool (SQLite's 0/1 INTEGER converts,
// PostgreSQL's BOOLEAN is native), wide integers into int64 before
// narrowing. "No row" comes back as store.ErrNotFound.

// ScanAgent reads a row of AgentColumns.
func ScanAgent(sc Scanner) (store.Agent, error) {
	var (
		a                                   store.Agent
		labels                              string
		ubr                                 int64
		firstSeen, lastSeen, certExp, revAt *int64
		provUpdated, prevUntil              *int64
	)
	err := sc.Scan(&a.ID, &labels, &a.Hostname, &a.OSBuild, &ubr, &a.OSEdition,
		&a.OSProductName, &a.OSInstallationType, &a.Arch, &a.AgentVersion,
		&firstSeen, &lastSeen, &a.CertSerial, &certExp, &a.Revoked, &revAt,
		&a.ProvisionState, &a.ProvisionDetail, &provUpdated, &a.PrevSerial, &prevUntil)
	if err != nil {
		return store.Agent{}, NotFound(err)
	}
	if a.Labels, err = DecodeLabels(labels); err != nil {
		return store.Agent{}, err
	}
	a.OSUBR = uint32(ubr)
	a.FirstSeen, a.LastSeen = TimeVal(firstSeen), TimeVal(lastSeen)
	a.CertExpiry, a.RevokedAt = TimeVal(certExp), TimeVal(revAt)
	a.ProvisionUpdated, a.PrevUntil = TimeVal(provUpdated), TimeVal(prevUntil)
	return a, nil
}

// ScanAgentSelector reads a row of ListAgentSelectors.
func ScanAgentSelector(sc Scanner) (store.Agent, error) {
	var (
		a      store.Agent
		labels string
	)
	err := sc.Scan(&a.ID, &labels, &a.Hostname, &a.OSBuild, &a.ProvisionState, &a.ProvisionDetail)
	if err != nil {
		return store.Agent{}, NotFound(err)
	}
	if a.Labels, err = DecodeLabels(labels); err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// ScanToken reads a row of TokenColumns.
func ScanToken(sc Scanner) (store.Token, error) {
	var (
		t                store.Token
		labels           string
		uses, usesLeft   int64
		created, expires *int64
	)
	err := sc.Scan(&t.ID, &t.SecretHash, &uses, &usesLeft, &labels, &created, &expires, &t.CreatedBy, &t.Revoked)
	if err != nil {
		return store.Token{}, NotFound(err)
	}
	if t.Labels, err = DecodeLabels(labels); err != nil {
		return store.Token{}, err
	}
	t.Uses, t.UsesLeft = int(uses), int(usesLeft)
	t.Created, t.Expires = TimeVal(created), TimeVal(expires)
	return t, nil
}

// ScanCapture reads a row of CaptureColumns.
func ScanCapture(sc Scanner) (store.Capture, error) {
	var (
		c                store.Capture
		created, expires *int64
		warnings         string
	)
	err := sc.Scan(&c.ID, &c.Spec, &c.State, &c.Detail, &created, &expires, &c.CreatedBy, &c.Rendered, &c.Statuses, &warnings)
	if err != nil {
		return store.Capture{}, NotFound(err)
	}
	c.Created, c.Expires = TimeVal(created), TimeVal(expires)
	if c.Warnings, err = DecodeWarnings(c.ID, warnings); err != nil {
		return store.Capture{}, err
	}
	return c, nil
}

// ScanTarget reads a row of TargetColumns.
func ScanTarget(sc Scanner) (store.CaptureTarget, error) {
	var (
		t       store.CaptureTarget
		updated *int64
	)
	if err := sc.Scan(&t.CaptureID, &t.AgentID, &t.State, &t.Detail, &t.Events, &updated); err != nil {
		return store.CaptureTarget{}, NotFound(err)
	}
	t.Updated = TimeVal(updated)
	return t, nil
}

// ScanEvent reads a row of EventColumns.
func ScanEvent(sc Scanner) (store.Event, error) {
	var (
		e                store.Event
		t                *int64
		pid, tid, status int64
	)
	err := sc.Scan(&e.Seq, &e.ID, &e.CaptureID, &e.AgentID, &t, &pid, &tid, &e.Process, &e.Probe, &status, &e.User, &e.Kernel, &e.Signature)
	if err != nil {
		return store.Event{}, NotFound(err)
	}
	e.Time, e.PID, e.TID, e.Status = TimeVal(t), int(pid), int(tid), uint32(status)
	return e, nil
}

// ScanDump reads a row of DumpColumns.
func ScanDump(sc Scanner) (store.Dump, error) {
	var (
		d                store.Dump
		bugCheck, build  int64
		written, updated *int64
	)
	err := sc.Scan(&d.ID, &d.AgentID, &d.CaptureID, &d.EventID, &d.FileName, &d.Size, &d.SHA256, &d.State, &d.Detail,
		&written, &updated, &d.Committed, &d.Compressed, &d.Signature, &d.Pulled, &d.Admitted,
		&d.DumpType, &bugCheck, &build, &d.DeclaredSize)
	if err != nil {
		return store.Dump{}, NotFound(err)
	}
	d.Written, d.Updated = TimeVal(written), TimeVal(updated)
	d.BugCheckCode, d.OSBuild = uint32(bugCheck), uint32(build)
	return d, nil
}

// ScanArtifact reads a row of ArtifactColumns.
func ScanArtifact(sc Scanner) (store.Artifact, error) {
	var (
		a       store.Artifact
		created *int64
	)
	if err := sc.Scan(&a.SHA256, &a.Kind, &a.Name, &a.Size, &created); err != nil {
		return store.Artifact{}, NotFound(err)
	}
	a.Created = TimeVal(created)
	return a, nil
}

// ScanOperatorCert reads a row of OperatorCertColumns.
func ScanOperatorCert(sc Scanner) (store.OperatorCert, error) {
	var (
		c                                    store.OperatorCert
		issued, nb, na, first, last, revoked *int64
	)
	if err := sc.Scan(&c.Serial, &c.Role, &c.Name, &issued, &nb, &na, &first, &last, &revoked, &c.RevokedBy); err != nil {
		return store.OperatorCert{}, NotFound(err)
	}
	c.Issued, c.NotBefore, c.NotAfter = TimeVal(issued), TimeVal(nb), TimeVal(na)
	c.FirstSeen, c.LastSeen, c.RevokedAt = TimeVal(first), TimeVal(last), TimeVal(revoked)
	return c, nil
}

// ScanReplica reads a row of ReplicaColumns.
func ScanReplica(sc Scanner) (store.Replica, error) {
	var (
		r           store.Replica
		started, hb *int64
	)
	if err := sc.Scan(&r.ID, &r.Addr, &started, &hb); err != nil {
		return store.Replica{}, NotFound(err)
	}
	r.Started, r.Heartbeat = TimeVal(started), TimeVal(hb)
	return r, nil
}

// ScanDirective reads a row of DirectiveColumns.
func ScanDirective(sc Scanner) (store.Directive, error) {
	var (
		d                store.Directive
		created, updated *int64
	)
	if err := sc.Scan(&d.Seq, &d.AgentID, &d.ID, &d.Body, &d.State, &d.Result, &d.Origin, &created, &updated); err != nil {
		return store.Directive{}, NotFound(err)
	}
	d.Created, d.Updated = TimeVal(created), TimeVal(updated)
	return d, nil
}

// ScanAuditEntry reads a row of AuditColumns.
func ScanAuditEntry(sc Scanner) (store.AuditEntry, error) {
	var (
		e  store.AuditEntry
		ts *int64
	)
	if err := sc.Scan(&e.ID, &ts, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.Details, &e.CertSerial); err != nil {
		return store.AuditEntry{}, NotFound(err)
	}
	e.Time = TimeVal(ts)
	return e, nil
}

// PresenceRow is one row of Presence: the replica holding an agent's
// stream.
type PresenceRow struct {
	AgentID, ReplicaID string
}

// ScanPresence reads a row of Presence.
func ScanPresence(sc Scanner) (PresenceRow, error) {
	var p PresenceRow
	err := sc.Scan(&p.AgentID, &p.ReplicaID)
	return p, err
}

// PresenceMap maps each agent of rows to its replica; never nil.
func PresenceMap(rows []PresenceRow) map[string]string {
	out := make(map[string]string, len(rows))
	for _, p := range rows {
		out[p.AgentID] = p.ReplicaID
	}
	return out
}

// ScanOperatorRevocation reads the row OperatorCertRevocation found for
// the certificate (serial, name), if any: no row is no revocation.
func ScanOperatorRevocation(sc Scanner, serial, name string) (store.OperatorRevocation, bool, error) {
	var (
		bySerial bool
		at       *int64
		by       string
	)
	err := sc.Scan(&bySerial, &at, &by)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.OperatorRevocation{}, false, nil
	case err != nil:
		return store.OperatorRevocation{}, false, err
	}
	return Revocation(bySerial, serial, name, TimeVal(at), by), true, nil
}
