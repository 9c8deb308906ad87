package stack

import (
	"slices"
	"testing"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestToken(t *testing.T) {
	for _, c := range []struct {
		f       *livedumpv1.Frame
		tok     string
		counted bool
	}{
		{&livedumpv1.Frame{Module: "ntdll", Function: "NtCreateFile", Offset: 0x14}, "ntdll!NtCreateFile", true},
		{&livedumpv1.Frame{Module: "ms-teams", Address: 0x7ff6a1b21234}, "ms-teams!?+0x1234", true},
		{&livedumpv1.Frame{Address: 0x1f012345678}, Unresolved, false},
		{nil, Unresolved, false},
	} {
		if tok, counted := Token(c.f); tok != c.tok || counted != c.counted {
			t.Errorf("Token(%v) = %q, %v; want %q, %v", c.f, tok, counted, c.tok, c.counted)
		}
	}
}

func TestTokens(t *testing.T) {
	sym := func(fn string) *livedumpv1.Frame { return &livedumpv1.Frame{Module: "m", Function: fn} }
	addr := &livedumpv1.Frame{Address: 0x1234}
	fs := []*livedumpv1.Frame{sym("a"), addr, addr, sym("b"), sym("c"), addr}
	for _, c := range []struct {
		limit   int
		want    []string
		counted int
	}{
		{0, []string{"m!a", Unresolved, "m!b", "m!c"}, 3},
		{-1, []string{"m!a", Unresolved, "m!b", "m!c"}, 3},
		{1, []string{"m!a"}, 1},
		{2, []string{"m!a", Unresolved, "m!b"}, 2},
	} {
		got, counted := Tokens(fs, c.limit)
		if !slices.Equal(got, c.want) || counted != c.counted {
			t.Errorf("limit %d: %q, %d; want %q, %d", c.limit, got, counted, c.want, c.counted)
		}
	}
	// Only addresses: one token, kept.
	if got, counted := Tokens([]*livedumpv1.Frame{addr, addr}, 0); !slices.Equal(got, []string{Unresolved}) || counted != 0 {
		t.Errorf("only addresses: %q, %d", got, counted)
	}
	if got, counted := Tokens(nil, 5); got != nil || counted != 0 {
		t.Errorf("no frames: %q, %d", got, counted)
	}
}
