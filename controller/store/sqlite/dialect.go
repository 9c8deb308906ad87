package sqlite

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlstore"
)

// dialect is what SQLite does its own way (sqlstore.Dialect). Every write
// goes through the one writer connection w, and BEGIN IMMEDIATE takes the
// write lock up front against other processes, so a read-check-write
// transaction needs no row locks: nothing else writes while it runs.
type dialect struct {
	w *sql.DB
}

var _ sqlstore.Dialect = dialect{}

// ForUpdate is empty: SQLite has no row locks, and the write transaction
// already excludes every other writer.
func (dialect) ForUpdate() string { return "" }

// Conflict returns err as it is: inserts use ON CONFLICT DO NOTHING.
func (dialect) Conflict(err error) error { return err }

// LockCapture does nothing: the write transaction is the lock.
func (dialect) LockCapture(context.Context, sqlstore.DB, string) error { return nil }

// ListAgentsPage compares (hostname, id) spelled out, which the
// (hostname, id) index serves.
func (dialect) ListAgentsPage(afterHostname, afterID string, limit int) (string, []any) {
	return `SELECT ` + sqlstore.AgentColumns + ` FROM agents
		WHERE ? = '' OR hostname > ? OR (hostname = ? AND id > ?)
		ORDER BY hostname, id LIMIT ?`, []any{afterID, afterHostname, afterHostname, afterID, limit}
}

// ListAudit pages newest first by (time, id), spelled out.
func (dialect) ListAudit(q store.AuditQuery) (string, []any) {
	return `SELECT ` + sqlstore.AuditColumns + `
		FROM audit WHERE time >= ?
		AND (? = 0 OR time < ? OR (time = ? AND id < ?))
		ORDER BY time DESC, id DESC LIMIT ?`,
		[]any{q.SinceMS, q.BeforeID, q.BeforeMS, q.BeforeMS, q.BeforeID, q.Limit}
}

// targetsPerInsert is how many targets one multi-row INSERT carries: 5
// parameters a row, well within SQLite's 32,766 parameters a statement.
const targetsPerInsert = 500

// InsertTargets inserts the targets with multi-row INSERTs of up to
// targetsPerInsert rows: at 10,000 targets one Exec per row was half of
// CreateCapture's CPU.
func (dialect) InsertTargets(ctx context.Context, tx sqlstore.DB, captureID string, targets []store.CaptureTarget) error {
	args := make([]any, 0, 5*min(len(targets), targetsPerInsert))
	for chunk := range slices.Chunk(targets, targetsPerInsert) {
		args = args[:0]
		for _, t := range chunk {
			args = append(args, captureID, t.AgentID, t.State, t.Detail, sqlstore.TimeArg(t.Updated))
		}
		if _, err := tx.Exec(ctx, insertTargetsSQL(len(chunk)), args...); err != nil {
			return err
		}
	}
	return nil
}

// insertTargetsSQL inserts n targets.
func insertTargetsSQL(n int) string {
	if n == targetsPerInsert {
		if s := fullInsertTargetsSQL.Load(); s != nil {
			return *s
		}
	}
	var b strings.Builder
	b.Grow(100 + 18*n)
	b.WriteString(`INSERT INTO capture_targets (capture_id, agent_id, state, detail, events, updated) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,0,?)`)
	}
	s := b.String()
	if n == targetsPerInsert {
		fullInsertTargetsSQL.Store(&s)
	}
	return s
}

var fullInsertTargetsSQL atomic.Pointer[string]

// FinishCapture ends an active capture; the state condition in the UPDATE
// is what lets exactly one replica win when several notice the end at once.
func (d dialect) FinishCapture(ctx context.Context, id, state, detail string) (bool, error) {
	finished := false
	err := inTx(ctx, d.w, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE captures SET state = ?, detail = ? WHERE id = ? AND state = 'active'`, state, detail, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			finished = true
			return nil
		}
		var one int
		return sqlstore.NotFound(tx.QueryRowContext(ctx, `SELECT 1 FROM captures WHERE id = ?`, id).Scan(&one))
	})
	return finished, err
}

// SetTargetStates runs one prepared UPDATE per target in one transaction.
func (d dialect) SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error) {
	changed := 0
	err := inTx(ctx, d.w, func(tx *sql.Tx) error {
		changed = 0
		st, err := tx.PrepareContext(ctx, sqlstore.SetTargetState)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, u := range updates {
			res, err := st.ExecContext(ctx, u.State, u.Detail, sqlstore.TimeArg(u.Updated), u.CaptureID, u.AgentID)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			changed += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return changed, nil
}

// ClaimTargets reads the count of targets that left pending once, then
// moves each target by primary key with one prepared UPDATE.
func (d dialect) ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error) {
	var claimed []string
	err := inTx(ctx, d.w, func(tx *sql.Tx) error {
		claimed = claimed[:0]
		room := -1
		if allowed >= 0 {
			var left int
			if err := tx.QueryRowContext(ctx, sqlstore.CountClaimedTargets, captureID).Scan(&left); err != nil {
				return err
			}
			room = store.RolloutRoom(allowed, left)
		}
		if room < 0 || room >= len(agentIDs) {
			// Room for every one: one UPDATE per chunk of targets,
			// returning those it moved, instead of one per target.
			var err error
			claimed, err = claimAll(ctx, tx, captureID, agentIDs, at)
			return err
		}
		st, err := tx.PrepareContext(ctx, `UPDATE capture_targets SET state = 'delivered', updated = ? WHERE capture_id = ? AND agent_id = ? AND state = 'pending'`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, a := range agentIDs {
			if room == 0 {
				break
			}
			res, err := st.ExecContext(ctx, sqlstore.TimeArg(at), captureID, a)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				claimed = append(claimed, a)
				if room > 0 {
					room--
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return claimed, nil
}

// claimsPerUpdate is how many targets one claiming UPDATE names.
const claimsPerUpdate = 500

// claimAll moves every pending target of agentIDs to delivered in tx and
// returns them in agentIDs' order, each once.
func claimAll(ctx context.Context, tx *sql.Tx, captureID string, agentIDs []string, at time.Time) ([]string, error) {
	moved := make(map[string]bool, len(agentIDs))
	args := make([]any, 0, 2+min(len(agentIDs), claimsPerUpdate))
	for chunk := range slices.Chunk(agentIDs, claimsPerUpdate) {
		args = append(args[:0], sqlstore.TimeArg(at), captureID)
		for _, a := range chunk {
			args = append(args, a)
		}
		rows, err := tx.QueryContext(ctx, claimSQL(len(chunk)), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return nil, err
			}
			moved[a] = true
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	claimed := make([]string, 0, len(moved))
	for _, a := range agentIDs {
		if moved[a] {
			claimed = append(claimed, a)
			delete(moved, a)
		}
	}
	return claimed, nil
}

// claimSQL moves the pending targets among n agents to delivered and
// returns their agent IDs.
func claimSQL(n int) string {
	if n == claimsPerUpdate {
		if s := fullClaimSQL.Load(); s != nil {
			return *s
		}
	}
	var b strings.Builder
	b.Grow(160 + 2*n)
	b.WriteString(`UPDATE capture_targets SET state = 'delivered', updated = ? WHERE capture_id = ? AND state = 'pending' AND agent_id IN (`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('?')
	}
	b.WriteString(`) RETURNING agent_id`)
	s := b.String()
	if n == claimsPerUpdate {
		fullClaimSQL.Store(&s)
	}
	return s
}

var fullClaimSQL atomic.Pointer[string]

// eventsPerInsert is how many rows one multi-row INSERT carries: 12
// parameters a row, well within SQLite's 32,766 parameters a statement.
const eventsPerInsert = 128

// InsertEvents writes a batch in one transaction (one commit per batch),
// with multi-row INSERTs of up to eventsPerInsert rows that return the rows
// they inserted, then one UPDATE of the targets' counts per statement: a
// few statements per batch instead of two per event.
func (d dialect) InsertEvents(ctx context.Context, events []store.Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	inserted := 0
	err := inTx(ctx, d.w, func(tx *sql.Tx) error {
		inserted = 0
		type target struct{ capture, agent string }
		counts := map[target]int{}
		var order []target
		args := make([]any, 0, 12*min(len(events), eventsPerInsert))
		for chunk := range slices.Chunk(events, eventsPerInsert) {
			args = args[:0]
			for _, e := range chunk {
				args = append(args, e.ID, e.CaptureID, e.AgentID, sqlstore.TimeArg(e.Time), e.PID, e.TID, e.Process, e.Probe, int64(e.Status), e.User, e.Kernel, e.Signature)
			}
			rows, err := tx.QueryContext(ctx, insertEventsSQL(len(chunk)), args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var t target
				if err := rows.Scan(&t.capture, &t.agent); err != nil {
					rows.Close()
					return err
				}
				if counts[t] == 0 {
					order = append(order, t)
				}
				counts[t]++
				inserted++
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		// Re-sent events (already stored) returned no row and count nothing.
		for chunk := range slices.Chunk(order, eventsPerInsert) {
			args = args[:0]
			for _, t := range chunk {
				args = append(args, t.capture, t.agent, counts[t])
			}
			if _, err := tx.ExecContext(ctx, countEventsSQL(len(chunk)), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return inserted, nil
}

// insertEventsSQL inserts n events, skipping IDs already stored, and
// returns the rows it inserted.
func insertEventsSQL(n int) string {
	if n == eventsPerInsert {
		if s := fullInsertEventsSQL.Load(); s != nil {
			return *s
		}
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO events (id, capture_id, agent_id, time, pid, tid, process, probe, status, user_frames, kernel_frames, signature) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?,?,?,?,?,?)`)
	}
	b.WriteString(` ON CONFLICT (id) DO NOTHING RETURNING capture_id, agent_id`)
	s := b.String()
	if n == eventsPerInsert {
		fullInsertEventsSQL.Store(&s)
	}
	return s
}

var fullInsertEventsSQL atomic.Pointer[string]

// countEventsSQL adds n (capture, agent, count) triples to the targets'
// event counts.
func countEventsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`UPDATE capture_targets SET events = events + c.n FROM (SELECT column1 AS capture_id, column2 AS agent_id, column3 AS n FROM (VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?)`)
	}
	b.WriteString(`)) AS c WHERE capture_targets.capture_id = c.capture_id AND capture_targets.agent_id = c.agent_id`)
	return b.String()
}

// AdmitDump counts and marks in one write transaction; writes are
// serialised (one writer connection, BEGIN IMMEDIATE across processes), so
// no two admissions can both see room for the last slot.
func (d dialect) AdmitDump(ctx context.Context, id string, maxDumps, perSignature int) (bool, error) {
	admitted := false
	err := inTx(ctx, d.w, func(tx *sql.Tx) error {
		var captureID, signature string
		var pulled, already int64
		err := tx.QueryRowContext(ctx, `SELECT capture_id, signature, pulled, admitted FROM dumps WHERE id = ?`, id).
			Scan(&captureID, &signature, &pulled, &already)
		if err != nil {
			return sqlstore.NotFound(err)
		}
		if already != 0 {
			admitted = true
			return nil
		}
		c := store.AdmitCounts{Pulled: pulled != 0, Signature: signature}
		if !c.Pulled && (maxDumps > 0 || perSignature > 0) {
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(signature = ?), 0)
				FROM dumps WHERE capture_id = ? AND admitted = 1`, signature, captureID).Scan(&c.Admitted, &c.SameSignature); err != nil {
				return err
			}
		}
		if !store.AdmitAllowed(c, maxDumps, perSignature) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE dumps SET admitted = 1 WHERE id = ?`, id); err != nil {
			return err
		}
		admitted = true
		return nil
	})
	return admitted, err
}
