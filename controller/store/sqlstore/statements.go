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
