package store

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

func TestCheckToken(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	secret := sha256.Sum256([]byte("secret"))
	other := sha256.Sum256([]byte("other"))
	good := Token{ID: "t", SecretHash: secret[:], Uses: 3, UsesLeft: 2, Expires: now.Add(time.Hour)}
	with := func(f func(*Token)) Token { t := good; f(&t); return t }

	for _, tc := range []struct {
		name  string
		token Token
		hash  []byte
		want  error
	}{
		{"valid", good, secret[:], nil},
		{"never expires", with(func(t *Token) { t.Expires = time.Time{} }), secret[:], nil},
		{"last use", with(func(t *Token) { t.UsesLeft = 1 }), secret[:], nil},
		{"expires a moment later", with(func(t *Token) { t.Expires = now.Add(time.Millisecond) }), secret[:], nil},
		{"expires now", with(func(t *Token) { t.Expires = now }), secret[:], ErrTokenExpired},
		{"expired", with(func(t *Token) { t.Expires = now.Add(-time.Hour) }), secret[:], ErrTokenExpired},
		{"revoked", with(func(t *Token) { t.Revoked = true }), secret[:], ErrTokenRevoked},
		{"used up", with(func(t *Token) { t.UsesLeft = 0 }), secret[:], ErrTokenExhausted},
		{"negative uses", with(func(t *Token) { t.UsesLeft = -1 }), secret[:], ErrTokenExhausted},
		{"wrong secret, same length", good, other[:], ErrNotFound},
		{"wrong secret, shorter", good, secret[:31], ErrNotFound},
		{"wrong secret, longer", good, append(secret[:], 0), ErrNotFound},
		{"no secret given", good, nil, ErrNotFound},
		{"empty stored hash, empty secret", with(func(t *Token) { t.SecretHash = []byte{} }), []byte{}, ErrNotFound},
		{"nil stored hash, nil secret", with(func(t *Token) { t.SecretHash = nil }), nil, ErrNotFound},
		// The secret is checked first: without it, a revoked, expired or
		// used up token looks like no token at all.
		{"wrong secret on a revoked token", with(func(t *Token) { t.Revoked = true }), other[:], ErrNotFound},
		{"wrong secret on an expired token", with(func(t *Token) { t.Expires = now.Add(-time.Hour) }), other[:], ErrNotFound},
		{"wrong secret on a used up token", with(func(t *Token) { t.UsesLeft = 0 }), other[:], ErrNotFound},
		// Revoked wins over expired, and expired over used up.
		{"revoked and expired", with(func(t *Token) { t.Revoked, t.Expires = true, now }), secret[:], ErrTokenRevoked},
		{"expired and used up", with(func(t *Token) { t.Expires, t.UsesLeft = now, 0 }), secret[:], ErrTokenExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckToken(tc.token, tc.hash, now); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("CheckToken = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAuditLimitClamp(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{-5, 100}, {0, 100}, {1, 1}, {9999, 9999}, {10000, 10000}, {10001, 10000}} {
		if got := AuditLimit(tc.in); got != tc.want {
			t.Errorf("AuditLimit(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestListLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit func(int) int
		in    int
		want  int
	}{
		{"operator certs default", OperatorCertLimit, 0, 1000},
		{"operator certs negative", OperatorCertLimit, -1, 1000},
		{"operator certs given", OperatorCertLimit, 1, 1},
		{"operator certs above default", OperatorCertLimit, 5000, 5000},
		{"events default", EventLimit, 0, 1000},
		{"events given", EventLimit, 7, 7},
		{"directives default", DirectiveLimit, 0, 100},
		{"directives negative", DirectiveLimit, -3, 100},
		{"directives given", DirectiveLimit, 101, 101},
	} {
		if got := tc.limit(tc.in); got != tc.want {
			t.Errorf("%s: limit(%d) = %d, want %d", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestResolveAuditFilter(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	before := since.Add(time.Minute)
	for _, tc := range []struct {
		name string
		f    AuditFilter
		want AuditQuery
	}{
		{"empty", AuditFilter{}, AuditQuery{SinceMS: noSinceMS, BeforeMS: time.Time{}.UnixMilli(), Limit: 100}},
		{"since", AuditFilter{Since: since, Limit: 5}, AuditQuery{SinceMS: since.UnixMilli(), BeforeMS: time.Time{}.UnixMilli(), Limit: 5}},
		{"page", AuditFilter{BeforeTime: before, BeforeID: 9, Limit: 20000},
			AuditQuery{SinceMS: noSinceMS, BeforeMS: before.UnixMilli(), BeforeID: 9, Limit: 10000}},
	} {
		if got := ResolveAuditFilter(tc.f); got != tc.want {
			t.Errorf("%s: ResolveAuditFilter = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if noSinceMS >= time.Unix(-1<<40, 0).UnixMilli() {
		t.Error("noSinceMS is not before every storable time")
	}
}

func TestPrepareDefaults(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	set := now.Add(-time.Hour)

	if got := PrepareAudit(AuditEntry{Action: "a"}, now); !got.Time.Equal(now) || got.Action != "a" {
		t.Errorf("PrepareAudit(zero time) = %+v", got)
	}
	if got := PrepareAudit(AuditEntry{Time: set}, now); !got.Time.Equal(set) {
		t.Errorf("PrepareAudit kept %v, want %v", got.Time, set)
	}
	if got := PrepareHeartbeat(Replica{ID: "r"}, now); !got.Heartbeat.Equal(now) {
		t.Errorf("PrepareHeartbeat(zero) = %v", got.Heartbeat)
	}
	if got := PrepareHeartbeat(Replica{Heartbeat: set}, now); !got.Heartbeat.Equal(set) {
		t.Errorf("PrepareHeartbeat kept %v, want %v", got.Heartbeat, set)
	}

	for _, tc := range []struct {
		name    string
		in      Directive
		created time.Time
	}{
		{"zero created", Directive{AgentID: "a", ID: "d", Body: []byte("b"), Origin: "o"}, now},
		{"given created, junk in the ignored fields", Directive{AgentID: "a", ID: "d", Seq: 5, State: DirectiveDone,
			Result: []byte("r"), Created: set, Updated: now.Add(time.Hour)}, set},
	} {
		got := PrepareDirective(tc.in, now)
		if got.Seq != 0 || got.State != DirectivePending || got.Result == nil || len(got.Result) != 0 ||
			!got.Created.Equal(tc.created) || !got.Updated.Equal(tc.created) ||
			got.AgentID != tc.in.AgentID || got.ID != tc.in.ID || string(got.Body) != string(tc.in.Body) || got.Origin != tc.in.Origin {
			t.Errorf("%s: PrepareDirective = %+v", tc.name, got)
		}
	}
}

func TestCheckPutDump(t *testing.T) {
	for _, state := range []string{"", "written", "hashed", "uploading", "failed"} {
		if err := CheckPutDump(Dump{ID: "d", State: state}); err != nil {
			t.Errorf("CheckPutDump(state %q) = %v", state, err)
		}
	}
	if err := CheckPutDump(Dump{ID: "d", State: DumpUploaded}); err == nil {
		t.Error("CheckPutDump accepted the uploaded state")
	}
}

func TestAdmitAllowed(t *testing.T) {
	for _, tc := range []struct {
		name       string
		c          AdmitCounts
		max, perSg int
		want       bool
	}{
		{"no limits", AdmitCounts{Admitted: 100, SameSignature: 100, Signature: "s"}, 0, 0, true},
		{"below max", AdmitCounts{Admitted: 2}, 3, 0, true},
		{"at max", AdmitCounts{Admitted: 3}, 3, 0, false},
		{"above max", AdmitCounts{Admitted: 4}, 3, 0, false},
		{"below per signature", AdmitCounts{Signature: "s", Admitted: 5, SameSignature: 1}, 0, 2, true},
		{"at per signature", AdmitCounts{Signature: "s", Admitted: 5, SameSignature: 2}, 0, 2, false},
		{"no signature: per-signature limit does not apply", AdmitCounts{Admitted: 5, SameSignature: 5}, 0, 2, true},
		{"room per signature, max reached", AdmitCounts{Signature: "s", Admitted: 3}, 3, 2, false},
		{"pulled ignores max", AdmitCounts{Pulled: true, Admitted: 3}, 3, 0, true},
		{"pulled ignores per signature", AdmitCounts{Pulled: true, Signature: "s", SameSignature: 9}, 0, 2, true},
	} {
		if got := AdmitAllowed(tc.c, tc.max, tc.perSg); got != tc.want {
			t.Errorf("%s: AdmitAllowed(%+v, %d, %d) = %v, want %v", tc.name, tc.c, tc.max, tc.perSg, got, tc.want)
		}
	}
}

func TestRolloutRoom(t *testing.T) {
	for _, tc := range []struct{ allowed, left, want int }{
		{-1, 0, -1}, {-1, 1000, -1}, {0, 0, 0}, {5, 0, 5}, {5, 4, 1}, {5, 5, 0}, {5, 7, 0},
	} {
		if got := RolloutRoom(tc.allowed, tc.left); got != tc.want {
			t.Errorf("RolloutRoom(%d, %d) = %d, want %d", tc.allowed, tc.left, got, tc.want)
		}
	}
}
