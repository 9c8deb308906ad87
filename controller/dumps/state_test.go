package dumps

import (
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestStateNames: every stored state is the short name of its wire state
// and back; UNSPECIFIED and unknown numbers have no stored name.
func TestStateNames(t *testing.T) {
	for name, want := range map[string]livedumpv1.DumpState{
		StateWriting: livedumpv1.DumpState_DUMP_STATE_WRITING, StateHashed: livedumpv1.DumpState_DUMP_STATE_HASHED,
		StateHashOnly: livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, StateUploading: livedumpv1.DumpState_DUMP_STATE_UPLOADING,
		StateUploaded: livedumpv1.DumpState_DUMP_STATE_UPLOADED, StateFailed: livedumpv1.DumpState_DUMP_STATE_FAILED,
		StateAborted: livedumpv1.DumpState_DUMP_STATE_ABORTED, StateTruncated: livedumpv1.DumpState_DUMP_STATE_TRUNCATED,
	} {
		if got := StateValue(name); got != want {
			t.Errorf("StateValue(%q) = %v, want %v", name, got, want)
		}
		if got := StateName(want); got != name {
			t.Errorf("StateName(%v) = %q, want %q", want, got, name)
		}
	}
	for _, s := range []livedumpv1.DumpState{livedumpv1.DumpState_DUMP_STATE_UNSPECIFIED, 99} {
		if got := StateName(s); got != "" {
			t.Errorf("StateName(%v) = %q, want none", s, got)
		}
	}
	for _, name := range []string{"", "unspecified", "hash-only", "Uploaded"} {
		if got := StateValue(name); got != livedumpv1.DumpState_DUMP_STATE_UNSPECIFIED {
			t.Errorf("StateValue(%q) = %v, want UNSPECIFIED", name, got)
		}
	}
}
