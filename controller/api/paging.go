package api

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
)

// Every list the FleetService answers is paged by encoded size: a response
// stops before it would pass the page budget (at least one item always goes
// out, and every item is bounded far below gRPC's 4 MiB message limit), and
// its next field says where the following page starts. The client passes
// that back as after, without looking into it.

// defaultPageBytes is the page budget unless FleetConfig.PageBytes says
// otherwise: well under gRPC's default 4 MiB message limit.
const defaultPageBytes = 1 << 20

// maxCursor bounds the after field a client sends back.
const maxCursor = 2048

// itemOverhead is what a repeated field adds to an item: tag and length.
const itemOverhead = 8

// pageBudget is the page budget of this server.
func (s *FleetServer) pageBudget() int {
	if s.cfg.PageBytes > 0 {
		return s.cfg.PageBytes
	}
	return defaultPageBytes
}

// page tracks the encoded size of a response being filled.
type page struct {
	budget, size int
}

// fits reports whether m still goes into the page, and counts it if so. The
// first item always fits.
func (p *page) fits(m proto.Message) bool {
	n := proto.Size(m) + itemOverhead
	if p.size > 0 && p.size+n > p.budget {
		return false
	}
	p.size += n
	return true
}

// encodeCursor makes the opaque next token of a list: the list's name and
// the sort key of the position to read on from.
func encodeCursor(list string, key ...string) string {
	b, _ := json.Marshal(append([]string{list}, key...))
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor reads back a token encodeCursor made for list, with n key
// parts; an error names the after field.
func decodeCursor(tok, list string, n int) ([]string, error) {
	if len(tok) > maxCursor {
		return nil, invalid("after", "longer than %d bytes: pass the next field of the previous response unchanged", maxCursor)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	var parts []string
	if err == nil {
		err = json.Unmarshal(b, &parts)
	}
	if err != nil || len(parts) != n+1 || parts[0] != list {
		return nil, invalid("after", "not a page token of %s: pass the next field of the previous response unchanged", list)
	}
	return parts[1:], nil
}

// cursorTime and parseCursorTime carry a time exactly through a token.
// The zero time (a row without one) is the empty string.
func cursorTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func parseCursorTime(s, list string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, invalid("after", "not a page token of %s: pass the next field of the previous response unchanged", list)
	}
	return time.Unix(0, n).UTC(), nil
}
