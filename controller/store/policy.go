package store

import (
	"crypto/subtle"
	"fmt"
	"time"
)

// This file holds the rules every Store implementation applies, written
// once. The SQL backends read what a rule needs inside the transaction that
// acts on it and let these pure functions decide, so the check and the act
// stay atomic while the rule itself has one home.

// CheckToken decides whether a caller presenting secretHash may take a use
// of t at now. It returns nil, or ErrNotFound (the secret does not match),
// ErrTokenRevoked, ErrTokenExpired or ErrTokenExhausted.
//
// The secret is checked before anything else, in constant time, so a
// caller who does not hold it learns nothing about whether the token is
// revoked, expired or used up: every such probe sees ErrNotFound, as for a
// token that does not exist.
func CheckToken(t Token, secretHash []byte, now time.Time) error {
	// ConstantTimeCompare treats two empty slices as equal; an empty
	// stored hash must never authenticate anyone.
	if len(t.SecretHash) == 0 || subtle.ConstantTimeCompare(t.SecretHash, secretHash) != 1 {
		return ErrNotFound
	}
	if t.Revoked {
		return ErrTokenRevoked
	}
	// Expiry is exclusive: a token expiring at T is no longer valid at T.
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return ErrTokenExpired
	}
	if t.UsesLeft <= 0 {
		return ErrTokenExhausted
	}
	return nil
}

// Listing bounds. A default keeps casual queries cheap; the audit cap stops
// one request from materialising the whole log in memory.
const (
	DefaultAuditLimit        = 100
	MaxAuditLimit            = 10000
	DefaultOperatorCertLimit = 1000
	DefaultEventLimit        = 1000
	DefaultDirectiveLimit    = 100
)

// AuditLimit applies the default and the cap to a requested audit limit.
func AuditLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultAuditLimit
	case n > MaxAuditLimit:
		return MaxAuditLimit
	default:
		return n
	}
}

// orDefault is n, or def when n is not positive.
func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// OperatorCertLimit is the ListOperatorCerts limit for a requested one.
func OperatorCertLimit(n int) int { return orDefault(n, DefaultOperatorCertLimit) }

// EventLimit is the ListEvents limit for a requested one.
func EventLimit(n int) int { return orDefault(n, DefaultEventLimit) }

// DirectiveLimit is the PendingDirectives limit for a requested one.
func DirectiveLimit(n int) int { return orDefault(n, DefaultDirectiveLimit) }

// AuditQuery is an AuditFilter resolved to what a query binds: times as
// Unix milliseconds, as the stores keep them.
type AuditQuery struct {
	SinceMS  int64 // entries at or after; before any entry when the filter has no Since
	BeforeMS int64 // with BeforeID: the paging position (BeforeID 0: none)
	BeforeID int64
	Limit    int // AuditLimit of the filter's
}

// noSinceMS is before any representable entry: an unset Since binds it
// rather than needing a second query shape.
const noSinceMS = -1 << 62

// ResolveAuditFilter applies the defaults and bounds of an audit listing.
func ResolveAuditFilter(f AuditFilter) AuditQuery {
	q := AuditQuery{SinceMS: noSinceMS, BeforeMS: f.BeforeTime.UnixMilli(), BeforeID: f.BeforeID, Limit: AuditLimit(f.Limit)}
	if !f.Since.IsZero() {
		q.SinceMS = f.Since.UnixMilli()
	}
	return q
}

// PrepareAudit is the entry AppendAudit writes: a zero Time becomes now,
// because an audit record without a time would be useless and would sort
// inconsistently across databases.
func PrepareAudit(e AuditEntry, now time.Time) AuditEntry {
	if e.Time.IsZero() {
		e.Time = now
	}
	return e
}

// PrepareHeartbeat is the row HeartbeatReplica writes: a zero Heartbeat
// becomes now.
func PrepareHeartbeat(r Replica, now time.Time) Replica {
	if r.Heartbeat.IsZero() {
		r.Heartbeat = now
	}
	return r
}

// PrepareDirective is the row EnqueueDirective writes: pending, with no
// result whatever d holds, created at d.Created (now when zero) and last
// updated then too; the store assigns Seq.
func PrepareDirective(d Directive, now time.Time) Directive {
	if d.Created.IsZero() {
		d.Created = now
	}
	d.Seq = 0
	d.State = DirectivePending
	d.Result = []byte{}
	d.Updated = d.Created
	return d
}

// CheckPutDump refuses what PutDump may not record: only a verified upload
// makes a dump uploaded.
func CheckPutDump(d Dump) error {
	if d.State == DumpUploaded {
		return fmt.Errorf("state %s is set only by a verified upload", d.State)
	}
	return nil
}

// AdmitCounts is what AdmitDump weighs for a dump not yet admitted, read
// under the lock that serialises admissions of its capture.
type AdmitCounts struct {
	Pulled        bool   // an operator asked for the dump
	Signature     string // the dump's stack signature, "" if none
	Admitted      int    // admitted dumps of the capture
	SameSignature int    // of those, with the dump's signature
}

// AdmitAllowed decides whether a dump may be admitted: always when pulled;
// otherwise while fewer than maxDumps dumps of its capture are admitted (0:
// no limit) and, for a dump with a signature, fewer than perSignature
// admitted dumps share it (0: no limit).
func AdmitAllowed(c AdmitCounts, maxDumps, perSignature int) bool {
	if c.Pulled {
		return true
	}
	if maxDumps > 0 && c.Admitted >= maxDumps {
		return false
	}
	if perSignature > 0 && c.Signature != "" && c.SameSignature >= perSignature {
		return false
	}
	return true
}

// RolloutRoom is how many more targets of a capture may leave pending under
// the rollout limit allowed when left already have: -1 for no limit
// (allowed < 0), else never below 0.
func RolloutRoom(allowed, left int) int {
	if allowed < 0 {
		return -1
	}
	return max(0, allowed-left)
}

// MaxEventPrune bounds the events one DeleteEvents call deletes, so that
// no statement holds the store's write lock for long.
const MaxEventPrune = 100_000

// DumpAgeLimit is the OldestDumps limit for a requested one: 100 by
// default, at most 1000.
func DumpAgeLimit(n int) int { return min(orDefault(n, 100), 1000) }

// CheckEventPrune refuses an EventPrune that does not select by exactly one
// criterion, or whose batch is out of bounds: a mistake must never delete
// every event.
func CheckEventPrune(p EventPrune) error {
	set := 0
	if p.CaptureID != "" {
		set++
	}
	if !p.Before.IsZero() {
		set++
	}
	if p.UpToSeq > 0 {
		set++
	}
	if set != 1 {
		return fmt.Errorf("event prune: want exactly one of capture, before and up-to seq, got %d", set)
	}
	if p.Limit < 1 || p.Limit > MaxEventPrune {
		return fmt.Errorf("event prune: limit %d is outside 1-%d", p.Limit, MaxEventPrune)
	}
	return nil
}
