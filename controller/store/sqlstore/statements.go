package sqlstore

import "github.com/livedump/livedump/controller/store"

// Operator certificates.
const (
	// OperatorCertColumns is the column list ScanOperatorCert-style readers
	// of both stores expect, in order.
	OperatorCertColumns = `serial, role, name, issued, not_before, not_after,
	first_seen, last_seen, revoked_at, revoked_by`

	// RecordOperatorCert inserts a certificate or updates when it was seen:
	// identity fields left empty (a serial revoked before it was seen) are
	// filled, FirstSeen is kept once set, LastSeen only moves forward, and
	// the revocation is never touched. Arguments: serial, role, name,
	// issued, not_before, not_after, first_seen, last_seen.
	RecordOperatorCert = `INSERT INTO operator_certs
		(serial, role, name, issued, not_before, not_after, first_seen, last_seen)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (serial) DO UPDATE SET
			role = CASE WHEN operator_certs.role = '' THEN excluded.role ELSE operator_certs.role END,
			name = CASE WHEN operator_certs.name = '' THEN excluded.name ELSE operator_certs.name END,
			issued = COALESCE(operator_certs.issued, excluded.issued),
			not_before = COALESCE(operator_certs.not_before, excluded.not_before),
			not_after = COALESCE(operator_certs.not_after, excluded.not_after),
			first_seen = COALESCE(operator_certs.first_seen, excluded.first_seen),
			last_seen = CASE WHEN excluded.last_seen IS NOT NULL
				AND (operator_certs.last_seen IS NULL OR excluded.last_seen > operator_certs.last_seen)
				THEN excluded.last_seen ELSE operator_certs.last_seen END`

	// ListOperatorCerts lists certificates newest issued first, serials
	// never seen last. Argument: the limit (store.OperatorCertLimit).
	ListOperatorCerts = `SELECT ` + OperatorCertColumns + ` FROM operator_certs
		ORDER BY issued DESC NULLS LAST, serial LIMIT ?`

	// RevokeOperatorCert revokes one serial, seen or not, and returns the
	// row; the first revocation keeps its time and author. Arguments:
	// serial, revoked_at, revoked_by.
	RevokeOperatorCert = `INSERT INTO operator_certs (serial, revoked_at, revoked_by)
		VALUES (?, ?, ?)
		ON CONFLICT (serial) DO UPDATE SET
			revoked_by = CASE WHEN operator_certs.revoked_at IS NULL THEN excluded.revoked_by ELSE operator_certs.revoked_by END,
			revoked_at = COALESCE(operator_certs.revoked_at, excluded.revoked_at)
		RETURNING ` + OperatorCertColumns

	// RevokeOperatorName records that every certificate of a name issued
	// before a time is refused; a later revocation moves the cut-off
	// forward, never back. Arguments: name, revoked_before, revoked_by.
	RevokeOperatorName = `INSERT INTO operator_name_revocations (name, revoked_before, revoked_by)
		VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET
			revoked_by = CASE WHEN excluded.revoked_before > operator_name_revocations.revoked_before
				THEN excluded.revoked_by ELSE operator_name_revocations.revoked_by END,
			revoked_before = CASE WHEN excluded.revoked_before > operator_name_revocations.revoked_before
				THEN excluded.revoked_before ELSE operator_name_revocations.revoked_before END`

	// MarkOperatorNameRevoked marks the recorded, not yet revoked
	// certificates of a name issued before the cut-off; run with
	// RevokeOperatorName in one transaction. Arguments: revoked_at,
	// revoked_by, name, the cut-off.
	MarkOperatorNameRevoked = `UPDATE operator_certs SET revoked_at = ?, revoked_by = ?
		WHERE name = ? AND revoked_at IS NULL AND issued IS NOT NULL AND issued < ?`

	// OperatorCertRevocation finds what refuses a certificate: a revocation
	// of its serial first, else one of its name with a cut-off after its
	// issue time. Each row is (by serial, revoked at, revoked by).
	// Arguments: serial, name, issued.
	OperatorCertRevocation = `SELECT TRUE AS by_serial, revoked_at, revoked_by FROM operator_certs
		WHERE serial = ? AND revoked_at IS NOT NULL
		UNION ALL
		SELECT FALSE, revoked_before, revoked_by FROM operator_name_revocations
		WHERE name = ? AND revoked_before > ?
		ORDER BY by_serial DESC LIMIT 1`
)

// Dumps.
const (
	// DumpColumns is the column list the dump readers of both stores expect,
	// in order.
	DumpColumns = `id, agent_id, capture_id, event_id, file_name, size, sha256, state, detail, written, updated, committed, compressed, signature, pulled, admitted, dump_type, bug_check_code, os_build, declared_size`

	// PutDump inserts a dump or updates what its agent reports. Progress
	// (committed, compressed), the operator's pull and the admission take
	// the columns' defaults on insert and are never the agent's to report;
	// the hash and size are fixed once known; an uploaded dump keeps its
	// state and detail; and the header facts change only with a report that
	// carries them (a dump type). Arguments: id, agent_id, capture_id,
	// event_id, file_name, size, sha256, state, detail, written, updated,
	// signature, dump_type, bug_check_code, os_build, declared_size.
	PutDump = `INSERT INTO dumps (id, agent_id, capture_id, event_id, file_name, size, sha256, state, detail,
			written, updated, signature, dump_type, bug_check_code, os_build, declared_size)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET capture_id = excluded.capture_id, event_id = excluded.event_id, file_name = excluded.file_name,
			size = CASE WHEN dumps.sha256 = '' THEN excluded.size ELSE dumps.size END,
			sha256 = CASE WHEN dumps.sha256 = '' THEN excluded.sha256 ELSE dumps.sha256 END,
			state = CASE WHEN dumps.state = '` + store.DumpUploaded + `' THEN dumps.state ELSE excluded.state END,
			detail = CASE WHEN dumps.state = '` + store.DumpUploaded + `' THEN dumps.detail ELSE excluded.detail END,
			written = excluded.written, updated = excluded.updated, signature = excluded.signature,
			dump_type = CASE WHEN excluded.dump_type = '' THEN dumps.dump_type ELSE excluded.dump_type END,
			bug_check_code = CASE WHEN excluded.dump_type = '' THEN dumps.bug_check_code ELSE excluded.bug_check_code END,
			os_build = CASE WHEN excluded.dump_type = '' THEN dumps.os_build ELSE excluded.os_build END,
			declared_size = CASE WHEN excluded.dump_type = '' THEN dumps.declared_size ELSE excluded.declared_size END`

	// DumpBytes sums what dumps hold: an uploaded dump its whole size,
	// another what was committed of it. AgentDumpBytes sums one agent's
	// (argument: agent_id).
	DumpBytes      = `SELECT CAST(COALESCE(SUM(CASE WHEN state = '` + store.DumpUploaded + `' THEN size ELSE committed END), 0) AS BIGINT) FROM dumps`
	AgentDumpBytes = DumpBytes + ` WHERE agent_id = ?`

	// StaleDumpUploads lists up to a limit of partial uploads (not
	// uploaded, some bytes committed) last updated before a cut-off, oldest
	// first. Arguments: the cut-off, the limit.
	StaleDumpUploads = `SELECT ` + DumpColumns + ` FROM dumps
		WHERE state <> '` + store.DumpUploaded + `' AND committed > 0 AND updated < ? ORDER BY updated, id LIMIT ?`

	// ExpireDumpUpload forgets a partial upload if the dump is still not
	// uploaded and still stale. Arguments: detail, updated, id, the stale
	// cut-off.
	ExpireDumpUpload = `UPDATE dumps SET committed = 0, compressed = 0, state = 'failed', detail = ?, updated = ?
		WHERE id = ? AND state <> '` + store.DumpUploaded + `' AND updated < ?`
)

// Agents.
const (
	// AgentColumns is the column list ScanAgent reads, in order; CreateAgent
	// inserts the same list.
	AgentColumns = `id, labels, hostname, os_build, os_ubr, os_edition, os_product_name,
	os_installation_type, arch, agent_version, first_seen, last_seen,
	cert_serial, cert_expiry, revoked, revoked_at,
	provision_state, provision_detail, provision_updated, prev_serial, prev_until`

	// CreateAgent inserts an agent unless its ID is taken (no row
	// affected). Arguments: AgentColumns in order.
	CreateAgent = `INSERT INTO agents (` + AgentColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`

	// ListAgentSelectors lists the agents not revoked by hostname, then
	// ID, with the columns ScanAgentSelector reads.
	ListAgentSelectors = `SELECT id, labels, hostname, os_build, provision_state, provision_detail
		FROM agents WHERE NOT revoked ORDER BY hostname, id`

	// GetAgent reads one agent. Argument: id.
	GetAgent = `SELECT ` + AgentColumns + ` FROM agents WHERE id = ?`

	// ListAgents lists every agent by hostname, then ID.
	ListAgents = `SELECT ` + AgentColumns + ` FROM agents ORDER BY hostname, id`

	// UpdateInventory overwrites what the agent reports and when it was
	// last seen. Arguments: hostname, os_build, os_ubr, os_edition,
	// os_product_name, os_installation_type, arch, agent_version,
	// last_seen, id.
	UpdateInventory = `UPDATE agents SET
		hostname = ?, os_build = ?, os_ubr = ?, os_edition = ?, os_product_name = ?,
		os_installation_type = ?, arch = ?, agent_version = ?, last_seen = ?
		WHERE id = ?`

	// TouchAgent sets when an agent was last seen. Arguments: last_seen, id.
	TouchAgent = `UPDATE agents SET last_seen = ? WHERE id = ?`

	// SetLabels replaces an agent's labels. Arguments: labels, id.
	SetLabels = `UPDATE agents SET labels = ? WHERE id = ?`

	// SetCertificate moves the current certificate to previous and records
	// the new one; the right-hand sides read the row as it was. Arguments:
	// prev_until, cert_serial, cert_expiry, id.
	SetCertificate = `UPDATE agents SET prev_serial = cert_serial, prev_until = ?,
		cert_serial = ?, cert_expiry = ? WHERE id = ?`

	// SetProvisionState records an agent's provisioning state. Arguments:
	// provision_state, provision_detail, provision_updated, id.
	SetProvisionState = `UPDATE agents SET provision_state = ?, provision_detail = ?, provision_updated = ? WHERE id = ?`

	// SetAgentMemory records an agent's physical memory. Arguments:
	// memory_bytes, id.
	SetAgentMemory = `UPDATE agents SET memory_bytes = ? WHERE id = ?`

	// AgentMemory reads an agent's physical memory. Argument: id.
	AgentMemory = `SELECT memory_bytes FROM agents WHERE id = ?`
)

// Enrollment tokens.
const (
	// TokenColumns is the column list ScanToken reads, in order;
	// CreateToken inserts the same list.
	TokenColumns = `id, secret_hash, uses, uses_left, labels, created, expires, created_by, revoked`

	// CreateToken inserts a token unless its ID is taken (no row affected).
	// Arguments: TokenColumns in order.
	CreateToken = `INSERT INTO tokens (` + TokenColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`

	// GetToken reads one token. Argument: id.
	GetToken = `SELECT ` + TokenColumns + ` FROM tokens WHERE id = ?`

	// ListTokens lists tokens newest first, ties broken by ID.
	ListTokens = `SELECT ` + TokenColumns + ` FROM tokens ORDER BY created DESC NULLS LAST, id DESC`
)

// Captures, their targets and events.
const (
	// CaptureColumns is the column list ScanCapture reads, in order;
	// CreateCapture inserts the same list.
	CaptureColumns = `id, spec, state, detail, created, expires, created_by, rendered, statuses, warnings`

	// CreateCapture inserts a capture unless its ID is taken (no row
	// affected). Arguments: CaptureColumns in order.
	CreateCapture = `INSERT INTO captures (` + CaptureColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`

	// GetCapture reads one capture. Argument: id.
	GetCapture = `SELECT ` + CaptureColumns + ` FROM captures WHERE id = ?`

	// ListCaptures lists captures newest first; ListCapturesInState only
	// those in a state (argument: state).
	ListCaptures        = `SELECT ` + CaptureColumns + ` FROM captures ORDER BY created DESC, id`
	ListCapturesInState = `SELECT ` + CaptureColumns + ` FROM captures WHERE state = ? ORDER BY created DESC, id`

	// SetCaptureState records a capture's state. Arguments: state, detail,
	// id.
	SetCaptureState = `UPDATE captures SET state = ?, detail = ? WHERE id = ?`

	// TargetColumns is the column list ScanTarget reads, in order.
	TargetColumns = `capture_id, agent_id, state, detail, events, updated`

	// ListTargets lists a capture's targets by agent. Argument: capture_id.
	ListTargets = `SELECT ` + TargetColumns + ` FROM capture_targets
		WHERE capture_id = ? ORDER BY agent_id`

	// GetTarget reads one target. Arguments: capture_id, agent_id.
	GetTarget = `SELECT ` + TargetColumns + ` FROM capture_targets
		WHERE capture_id = ? AND agent_id = ?`

	// TargetExists returns a row if the target exists. Arguments:
	// capture_id, agent_id.
	TargetExists = `SELECT 1 FROM capture_targets WHERE capture_id = ? AND agent_id = ?`

	// SetTargetState records one target's state. Arguments: state, detail,
	// updated, capture_id, agent_id.
	SetTargetState = `UPDATE capture_targets SET state = ?, detail = ?, updated = ? WHERE capture_id = ? AND agent_id = ?`

	// CountClaimedTargets counts a capture's targets that left pending,
	// which is what its rollout limit bounds. Argument: capture_id.
	CountClaimedTargets = `SELECT COUNT(*) FROM capture_targets WHERE capture_id = ? AND state <> 'pending'`

	// EventColumns is the column list ScanEvent reads, in order.
	EventColumns = `seq, id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature`

	// ListEvents lists up to a limit of a capture's events after a
	// sequence number, in order. Arguments: capture_id, the sequence
	// number, the limit (store.EventLimit).
	ListEvents = `SELECT ` + EventColumns + `
		FROM events WHERE capture_id = ? AND seq > ? ORDER BY seq LIMIT ?`

	// EventSeq and EventSignature read one column of an event. Argument:
	// id.
	EventSeq       = `SELECT seq FROM events WHERE id = ?`
	EventSignature = `SELECT signature FROM events WHERE id = ?`
)

// More about dumps.
const (
	// GetDump reads one dump. Argument: id.
	GetDump = `SELECT ` + DumpColumns + ` FROM dumps WHERE id = ?`

	// ListDumps lists dumps newest written first, unwritten last;
	// ListCaptureDumps only a capture's (argument: capture_id). NULLS LAST
	// is what SQLite does for DESC anyway; PostgreSQL needs it said.
	ListDumps        = `SELECT ` + DumpColumns + ` FROM dumps ORDER BY written DESC NULLS LAST, id`
	ListCaptureDumps = `SELECT ` + DumpColumns + ` FROM dumps WHERE capture_id = ? ORDER BY written DESC NULLS LAST, id`

	// SetDumpProgress records upload progress. Arguments: committed,
	// compressed, state, detail, updated, id.
	SetDumpProgress = `UPDATE dumps SET committed = ?, compressed = ?, state = ?, detail = ?, updated = ? WHERE id = ?`

	// CountDumps counts a capture's dumps of a signature in a state.
	// Arguments: capture_id, signature, state.
	CountDumps = `SELECT COUNT(*) FROM dumps WHERE capture_id = ? AND signature = ? AND state = ?`
)

// Artifacts.
const (
	// ArtifactColumns is the column list ScanArtifact reads, in order;
	// PutArtifact inserts the same list.
	ArtifactColumns = `sha256, kind, name, size, created`

	// PutArtifact records an artifact or refreshes the one with the same
	// content. Arguments: ArtifactColumns in order.
	PutArtifact = `INSERT INTO artifacts (` + ArtifactColumns + `) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (sha256) DO UPDATE SET kind = excluded.kind, name = excluded.name, created = excluded.created`

	// GetArtifact reads one artifact. Argument: sha256.
	GetArtifact = `SELECT ` + ArtifactColumns + ` FROM artifacts WHERE sha256 = ?`

	// LatestArtifact reads the newest artifact of a kind. Argument: kind.
	LatestArtifact = `SELECT ` + ArtifactColumns + ` FROM artifacts
		WHERE kind = ? ORDER BY created DESC, sha256 LIMIT 1`
)

// Audit.
const (
	// AuditColumns is the column list ScanAuditEntry reads, in order.
	AuditColumns = `id, time, actor, action, target, outcome, details, cert_serial`

	// AppendAudit inserts an entry and returns its ID. Arguments: time,
	// actor, action, target, outcome, details, cert_serial.
	AppendAudit = `INSERT INTO audit (time, actor, action, target, outcome, details, cert_serial)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`
)

// Replicas, presence and directives.
const (
	// ReplicaColumns is the column list ScanReplica reads, in order;
	// HeartbeatReplica inserts the same list.
	ReplicaColumns = `id, addr, started, heartbeat`

	// HeartbeatReplica records a replica and renews its lease. Arguments:
	// ReplicaColumns in order.
	HeartbeatReplica = `INSERT INTO replicas (` + ReplicaColumns + `) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, started = excluded.started, heartbeat = excluded.heartbeat`

	// ListReplicas lists every replica by ID.
	ListReplicas = `SELECT ` + ReplicaColumns + ` FROM replicas ORDER BY id`

	// SetPresence records which replica holds an agent's stream.
	// Arguments: agent_id, replica_id, session, since.
	SetPresence = `INSERT INTO presence (agent_id, replica_id, session, since) VALUES (?, ?, ?, ?)
		ON CONFLICT (agent_id) DO UPDATE SET replica_id = excluded.replica_id, session = excluded.session, since = excluded.since`

	// ClearPresence removes an agent's presence if it is still that
	// stream's. Arguments: agent_id, replica_id, session.
	ClearPresence = `DELETE FROM presence WHERE agent_id = ? AND replica_id = ? AND session = ?`

	// ClearReplicaPresence removes every presence naming a replica.
	ClearReplicaPresence = `DELETE FROM presence WHERE replica_id = ?`

	// Presence lists (agent_id, replica_id) for replicas whose lease is
	// live. Argument: the oldest live heartbeat.
	Presence = `SELECT p.agent_id, p.replica_id FROM presence p
		JOIN replicas r ON r.id = p.replica_id WHERE r.heartbeat >= ?`

	// DirectiveColumns is the column list ScanDirective reads, in order.
	DirectiveColumns = `seq, agent_id, id, body, state, result, origin, created, updated`

	// EnqueueDirective inserts a directive and returns its seq. Arguments:
	// agent_id, id, body, state, result, origin, created, updated.
	EnqueueDirective = `INSERT INTO directives (agent_id, id, body, state, result, origin, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`

	// PendingDirectives lists up to a limit of directives in a state for
	// the agents whose stream a replica holds, in order. Arguments:
	// replica_id, state, the limit (store.DirectiveLimit).
	PendingDirectives = `SELECT d.seq, d.agent_id, d.id, d.body, d.state, d.result, d.origin, d.created, d.updated
		FROM directives d JOIN presence p ON p.agent_id = d.agent_id
		WHERE p.replica_id = ? AND d.state = ? ORDER BY d.seq LIMIT ?`

	// SetDirectiveState records a directive's progress. Arguments: state,
	// result, updated, seq.
	SetDirectiveState = `UPDATE directives SET state = ?, result = ?, updated = ? WHERE seq = ?`

	// GetDirective reads one directive. Argument: seq.
	GetDirective = `SELECT ` + DirectiveColumns + ` FROM directives WHERE seq = ?`

	// DeleteDirectivesBefore deletes finished directives last updated, and
	// any created, before a cut-off. Arguments: the two finished states,
	// the cut-off twice.
	DeleteDirectivesBefore = `DELETE FROM directives WHERE (state IN (?, ?) AND updated < ?) OR created < ?`
)
