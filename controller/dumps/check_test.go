package dumps

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestCheckDumpIDAndHash: a report's dump ID and hash follow internal/ids,
// at the boundaries too, and a refusal names the field.
func TestCheckDumpIDAndHash(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name  string
		id    string
		sha   string
		field string // "" when accepted
	}{
		{"shortest id", "0123abcd", "", ""},
		{"longest id", strings.Repeat("f", 64), sha, ""},
		{"id too short", "0123abc", "", "dump.id"},
		{"id too long", strings.Repeat("f", 65), "", "dump.id"},
		{"id upper case", "0123ABCD", "", "dump.id"},
		{"id path", "../../evil", "", "dump.id"},
		{"no hash yet", "0123abcd", "", ""},
		{"hash upper case", "0123abcd", strings.ToUpper(sha), "dump.sha256"},
		{"hash short", "0123abcd", sha[:62], "dump.sha256"},
		{"hash long", "0123abcd", sha + "ab", "dump.sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDump(&livedumpv1.Dump{Id: tc.id, Sha256: tc.sha})
			if tc.field == "" {
				if err != nil {
					t.Errorf("checkDump refused: %v", err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
				t.Errorf("checkDump = %v, want InvalidArgument about %s", err, tc.field)
			}
		})
	}
}

func TestOffsetRefusesBadID(t *testing.T) {
	r := &Receiver{}
	for _, id := range []string{"", "0123abc", "0123ABCD", strings.Repeat("f", 65)} {
		if _, err := r.Offset(t.Context(), "a1", id); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Offset(%q) = %v, want InvalidArgument", id, err)
		}
	}
}
