package sqlstore

import (
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, ``},
		{`SELECT 1`, `SELECT 1`},
		{`a = ?`, `a = $1`},
		{`a = ? AND b IN (?, ?)`, `a = $1 AND b IN ($2, $3)`},
		{`a = '?' AND b = ?`, `a = '?' AND b = $1`},
		{`a = 'it''s ?' AND b = ?`, `a = 'it''s ?' AND b = $1`},
		{`"odd?name" = ?`, `"odd?name" = $1`},
		{`?,?,?,?,?,?,?,?,?,?,?`, `$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11`},
	} {
		if got := Rebind(tc.in); got != tc.want {
			t.Errorf("Rebind(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestStatementPlaceholders pins how many arguments each shared statement
// takes, as its comment lists them.
func TestStatementPlaceholders(t *testing.T) {
	for _, tc := range []struct {
		name string
		q    string
		n    int
	}{
		{"RecordOperatorCert", RecordOperatorCert, 8},
		{"ListOperatorCerts", ListOperatorCerts, 1},
		{"RevokeOperatorCert", RevokeOperatorCert, 3},
		{"RevokeOperatorName", RevokeOperatorName, 3},
		{"MarkOperatorNameRevoked", MarkOperatorNameRevoked, 4},
		{"OperatorCertRevocation", OperatorCertRevocation, 3},
		{"PutDump", PutDump, 16},
		{"DumpBytes", DumpBytes, 0},
		{"AgentDumpBytes", AgentDumpBytes, 1},
		{"StaleDumpUploads", StaleDumpUploads, 2},
		{"ExpireDumpUpload", ExpireDumpUpload, 4},
		{"CreateAgent", CreateAgent, 21},
		{"GetAgent", GetAgent, 1},
		{"ListAgents", ListAgents, 0},
		{"ListAgentSelectors", ListAgentSelectors, 0},
		{"UpdateInventory", UpdateInventory, 10},
		{"TouchAgent", TouchAgent, 2},
		{"SetLabels", SetLabels, 2},
		{"SetCertificate", SetCertificate, 4},
		{"SetProvisionState", SetProvisionState, 4},
		{"SetAgentMemory", SetAgentMemory, 2},
		{"AgentMemory", AgentMemory, 1},
		{"CreateToken", CreateToken, 9},
		{"GetToken", GetToken, 1},
		{"ListTokens", ListTokens, 0},
		{"CreateCapture", CreateCapture, 10},
		{"GetCapture", GetCapture, 1},
		{"ListCaptures", ListCaptures, 0},
		{"ListCapturesInState", ListCapturesInState, 1},
		{"SetCaptureState", SetCaptureState, 3},
		{"ListTargets", ListTargets, 1},
		{"GetTarget", GetTarget, 2},
		{"TargetExists", TargetExists, 2},
		{"SetTargetState", SetTargetState, 5},
		{"CountClaimedTargets", CountClaimedTargets, 1},
		{"ListEvents", ListEvents, 3},
		{"EventSeq", EventSeq, 1},
		{"EventSignature", EventSignature, 1},
		{"GetDump", GetDump, 1},
		{"ListDumps", ListDumps, 0},
		{"ListCaptureDumps", ListCaptureDumps, 1},
		{"SetDumpProgress", SetDumpProgress, 6},
		{"CountDumps", CountDumps, 3},
		{"PutArtifact", PutArtifact, 5},
		{"GetArtifact", GetArtifact, 1},
		{"LatestArtifact", LatestArtifact, 1},
		{"AppendAudit", AppendAudit, 7},
		{"HeartbeatReplica", HeartbeatReplica, 4},
		{"ListReplicas", ListReplicas, 0},
		{"SetPresence", SetPresence, 4},
		{"ClearPresence", ClearPresence, 3},
		{"Presence", Presence, 1},
		{"EnqueueDirective", EnqueueDirective, 8},
		{"PendingDirectives", PendingDirectives, 3},
		{"SetDirectiveState", SetDirectiveState, 4},
		{"GetDirective", GetDirective, 1},
		{"DeleteDirectivesBefore", DeleteDirectivesBefore, 4},
	} {
		if got := strings.Count(tc.q, "?"); got != tc.n {
			t.Errorf("%s has %d placeholders, want %d", tc.name, got, tc.n)
		}
		if r := Rebind(tc.q); strings.Contains(r, "?") {
			t.Errorf("Rebind(%s) left a ?", tc.name)
		}
	}
}

func TestLabelsEncoding(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{nil, `{}`},
		{map[string]string{}, `{}`},
		{map[string]string{"b": "2", "a": "1"}, `{"a":"1","b":"2"}`},
	} {
		got, err := EncodeLabels(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("EncodeLabels(%v) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
	}{{``, 0}, {`null`, 0}, {`{}`, 0}, {`{"a":"1"}`, 1}} {
		got, err := DecodeLabels(tc.in)
		if err != nil || got == nil || len(got) != tc.want {
			t.Errorf("DecodeLabels(%q) = %v, %v; want a map of %d", tc.in, got, err, tc.want)
		}
	}
	if _, err := DecodeLabels(`[1]`); err == nil {
		t.Error("DecodeLabels accepted an array")
	}
}

func TestWarningsEncoding(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{{nil, `[]`}, {[]string{}, `[]`}, {[]string{"w1", "w2"}, `["w1","w2"]`}} {
		got, err := EncodeWarnings(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("EncodeWarnings(%v) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		back, err := DecodeWarnings("c", got)
		if err != nil || len(back) != len(tc.in) {
			t.Errorf("DecodeWarnings(%q) = %v, %v", got, back, err)
		}
	}
	if _, err := DecodeWarnings("c1", `{`); err == nil || !strings.Contains(err.Error(), "capture c1 warnings") {
		t.Errorf("DecodeWarnings of bad JSON = %v", err)
	}
}

func TestRevocation(t *testing.T) {
	at := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	if got := Revocation(true, "0a", "alice", at, "root"); got != (store.OperatorRevocation{Serial: "0a", At: at, By: "root"}) {
		t.Errorf("by serial: %+v", got)
	}
	if got := Revocation(false, "0a", "alice", at, "root"); got != (store.OperatorRevocation{Name: "alice", At: at, By: "root"}) {
		t.Errorf("by name: %+v", got)
	}
}

func TestBlobArg(t *testing.T) {
	if b := BlobArg(nil); b == nil || len(b) != 0 {
		t.Errorf("BlobArg(nil) = %#v", b)
	}
	if b := BlobArg([]byte("x")); string(b) != "x" {
		t.Errorf("BlobArg(x) = %q", b)
	}
}

func TestTimeEncoding(t *testing.T) {
	if TimeArg(time.Time{}) != nil {
		t.Error("zero time must encode as NULL")
	}
	if got := TimeVal(nil); !got.IsZero() {
		t.Errorf("NULL decodes to %v", got)
	}
	ts := time.Date(2025, 1, 2, 3, 4, 5, 6_789_000, time.UTC)
	ms := TimeArg(ts).(int64)
	if got := TimeVal(&ms); !got.Equal(ts.Truncate(time.Millisecond)) {
		t.Errorf("round trip = %v", got)
	}
}
