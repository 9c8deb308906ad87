package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// pagingServer is a FleetServer on a fresh SQLite store with a small page
// budget, so a few rows make many pages.
func pagingServer(t *testing.T, budget int) (*FleetServer, store.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := fleet.NewRegistry(nil)
	clock := clockwork.NewRealClock()
	caps := capture.New(capture.Config{Store: st, Fleet: reg, Logger: log, Clock: clock, Metrics: prometheus.NewRegistry()})
	return NewFleetServer(FleetConfig{Store: st, Captures: caps, Events: caps, Local: reg, Logger: log, Clock: clock, PageBytes: budget}), st
}

// pageSlack is how far a page may pass its budget: the response's own
// fields and the first item, which always goes out.
const pageSlack = 1024

func checkBudget(t *testing.T, what string, m proto.Message, budget int) {
	t.Helper()
	if n := proto.Size(m); n > budget+pageSlack {
		t.Fatalf("%s: page of %d bytes, budget %d", what, n, budget)
	}
}

// pages calls one page after another until next is empty.
func pages(t *testing.T, what string, call func(after string) (string, error)) int {
	t.Helper()
	after := ""
	for n := 1; ; n++ {
		next, err := call(after)
		if err != nil {
			t.Fatalf("%s page %d: %v", what, n, err)
		}
		if next == "" {
			return n
		}
		if next == after || n > 10000 {
			t.Fatalf("%s: paging does not advance", what)
		}
		after = next
	}
}

func TestListAgentsPages(t *testing.T) {
	const budget = 1024
	s, st := pagingServer(t, budget)
	ctx := context.Background()
	now := time.Now().UTC()
	var want []string
	for i := range 120 {
		a := store.Agent{ID: fmt.Sprintf("%016x", i), Hostname: fmt.Sprintf("WS-%03d", i%40), OSBuild: "22631", FirstSeen: now, LastSeen: now,
			Labels: map[string]string{"role": []string{"vdi", "kiosk", "server"}[i%3], "pad": strings.Repeat("p", 60)}}
		if err := st.CreateAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
		if i%3 == 1 {
			want = append(want, a.Hostname+"/"+a.ID)
		}
	}
	slices.Sort(want) // hostname, then ID: the list's order
	var got []string
	n := pages(t, "ListAgents", func(after string) (string, error) {
		resp, err := s.ListAgents(ctx, &livedumpv1.ListAgentsRequest{Selector: "role=kiosk", After: after})
		if err != nil {
			return "", err
		}
		checkBudget(t, "ListAgents", resp, budget)
		for _, a := range resp.GetAgents() {
			got = append(got, a.GetHostname()+"/"+a.GetId())
		}
		return resp.GetNext(), nil
	})
	if n < 5 {
		t.Fatalf("%d pages: the budget did not cut them", n)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages listed %d agents:\n%v\nwant %d:\n%v", len(got), got, len(want), want)
	}

	// The last page says nothing follows; a selector matching none is one empty page.
	resp, err := s.ListAgents(ctx, &livedumpv1.ListAgentsRequest{Selector: "role=none"})
	if err != nil || len(resp.GetAgents()) != 0 || resp.GetNext() != "" {
		t.Fatalf("no match: %v, next %q, %v", resp.GetAgents(), resp.GetNext(), err)
	}
}

func TestPageTokensAreChecked(t *testing.T) {
	s, st := pagingServer(t, 1024)
	ctx := context.Background()
	for i := range 20 {
		if err := st.CreateAgent(ctx, store.Agent{ID: fmt.Sprintf("%016x", i), Hostname: "H", Labels: map[string]string{"pad": strings.Repeat("p", 60)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	if err != nil || resp.GetNext() == "" {
		t.Fatalf("first page: next %q, %v", resp.GetNext(), err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"garbage", func() error {
			_, err := s.ListAgents(ctx, &livedumpv1.ListAgentsRequest{After: "%%%"})
			return err
		}},
		{"too long", func() error {
			_, err := s.ListAgents(ctx, &livedumpv1.ListAgentsRequest{After: strings.Repeat("A", maxCursor+1)})
			return err
		}},
		{"another list's", func() error {
			_, err := s.ListTokens(ctx, &livedumpv1.ListTokensRequest{After: resp.GetNext()})
			return err
		}},
		{"audit id", func() error {
			_, err := s.ListAudit(ctx, &livedumpv1.ListAuditRequest{After: encodeCursor("ListAudit", "1", "x")})
			return err
		}},
		{"time", func() error {
			_, err := s.ListDumps(ctx, &livedumpv1.ListDumpsRequest{After: encodeCursor("ListDumps", "yesterday", "x")})
			return err
		}},
	} {
		err := tc.call()
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "after: ") {
			t.Errorf("%s: %v, want InvalidArgument naming after", tc.name, err)
		}
	}
}

func TestListAuditPages(t *testing.T) {
	const budget = 8192
	s, st := pagingServer(t, budget)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 60 {
		// Pairs share a millisecond: the ID breaks the tie.
		if _, err := st.AppendAudit(ctx, store.AuditEntry{Time: base.Add(time.Duration(i/2) * time.Millisecond), Actor: "a",
			Action: fmt.Sprint(i), Details: `{"pad":"` + strings.Repeat("x", 500) + `"}`}); err != nil {
			t.Fatal(err)
		}
	}
	// One entry larger than a page: listed, with its details left out.
	if _, err := st.AppendAudit(ctx, store.AuditEntry{Time: base.Add(-time.Second), Actor: "a", Action: "huge",
		Details: `{"pad":"` + strings.Repeat("x", 3*budget) + `"}`}); err != nil {
		t.Fatal(err)
	}
	var got []string
	n := pages(t, "ListAudit", func(after string) (string, error) {
		resp, err := s.ListAudit(ctx, &livedumpv1.ListAuditRequest{Limit: 10000, After: after})
		if err != nil {
			return "", err
		}
		checkBudget(t, "ListAudit", resp, budget)
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetAction())
			if e.GetAction() == "huge" && !strings.Contains(e.GetDetails(), "too large to list") {
				t.Errorf("huge entry details: %.80s", e.GetDetails())
			}
		}
		return resp.GetNext(), nil
	})
	if n < 4 {
		t.Fatalf("%d pages", n)
	}
	var want []string
	for i := 59; i >= 0; i-- {
		want = append(want, fmt.Sprint(i))
	}
	want = append(want, "huge")
	if !slices.Equal(got, want) {
		t.Fatalf("read %v\nwant %v", got, want)
	}

	// limit bounds a page; next says where to go on.
	resp, err := s.ListAudit(ctx, &livedumpv1.ListAuditRequest{Limit: 3})
	if err != nil || len(resp.GetEntries()) != 3 || resp.GetNext() == "" {
		t.Fatalf("limit 3: %d entries, next %q, %v", len(resp.GetEntries()), resp.GetNext(), err)
	}
	resp, err = s.ListAudit(ctx, &livedumpv1.ListAuditRequest{Limit: 3, After: resp.GetNext()})
	if err != nil || resp.GetEntries()[0].GetAction() != "56" {
		t.Fatalf("after limit 3: %v, %v", resp.GetEntries(), err)
	}
}

func TestListTokensAndDumpsPages(t *testing.T) {
	const budget = 2048
	s, st := pagingServer(t, budget)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 40 {
		if err := st.CreateToken(ctx, store.Token{ID: fmt.Sprintf("t%03d", i), SecretHash: make([]byte, 32), Uses: 1, UsesLeft: 1,
			Created: base.Add(time.Duration(i%4) * time.Second), Expires: base.Add(time.Hour), Labels: map[string]string{"pad": strings.Repeat("p", 60)}}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateAgent(ctx, store.Agent{ID: fmt.Sprintf("%016x", i), Hostname: fmt.Sprintf("WS-%02d", i)}); err != nil {
			t.Fatal(err)
		}
		d := store.Dump{ID: fmt.Sprintf("%016x", 0xd00+i), AgentID: fmt.Sprintf("%016x", i), FileName: "DTRACE-1.dmp", State: "hash-only",
			Detail: strings.Repeat("d", 100), Written: base.Add(time.Duration(i%5) * time.Second), Updated: base}
		if i%7 == 0 {
			d.Written = time.Time{} // not written yet: listed last
		}
		if err := st.PutDump(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	whole, _ := pagingServer(t, 0)
	whole.cfg.Store = st

	all, err := whole.ListTokens(ctx, &livedumpv1.ListTokensRequest{})
	if err != nil || all.GetNext() != "" {
		t.Fatal(err)
	}
	var got []string
	pages(t, "ListTokens", func(after string) (string, error) {
		resp, err := s.ListTokens(ctx, &livedumpv1.ListTokensRequest{After: after})
		if err != nil {
			return "", err
		}
		checkBudget(t, "ListTokens", resp, budget)
		for _, tk := range resp.GetTokens() {
			got = append(got, tk.GetId())
		}
		return resp.GetNext(), nil
	})
	var want []string
	for _, tk := range all.GetTokens() {
		want = append(want, tk.GetId())
	}
	if len(want) != 40 || !slices.Equal(got, want) {
		t.Fatalf("tokens paged %v\nwant %v", got, want)
	}

	allDumps, err := whole.ListDumps(ctx, &livedumpv1.ListDumpsRequest{})
	if err != nil || allDumps.GetNext() != "" {
		t.Fatal(err)
	}
	got, want = nil, nil
	pages(t, "ListDumps", func(after string) (string, error) {
		resp, err := s.ListDumps(ctx, &livedumpv1.ListDumpsRequest{After: after})
		if err != nil {
			return "", err
		}
		checkBudget(t, "ListDumps", resp, budget)
		for _, d := range resp.GetDumps() {
			got = append(got, d.GetId()+"@"+d.GetHostname())
		}
		return resp.GetNext(), nil
	})
	for _, d := range allDumps.GetDumps() {
		want = append(want, d.GetId()+"@"+d.GetHostname())
	}
	if len(want) != 40 || !slices.Equal(got, want) {
		t.Fatalf("dumps paged %v\nwant %v", got, want)
	}
}

func TestCapturePages(t *testing.T) {
	const budget = 4096
	s, st := pagingServer(t, budget)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	var targets []store.CaptureTarget
	for i := range 100 {
		id := fmt.Sprintf("%016x", i)
		if err := st.CreateAgent(ctx, store.Agent{ID: id, Hostname: fmt.Sprintf("WS-%03d", i)}); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, store.CaptureTarget{AgentID: id, State: "failed", Detail: strings.Repeat("f", 100), Updated: now})
	}
	for i, id := range []string{"c-big", "c-small-1", "c-small-2"} {
		tg := targets
		if id != "c-big" {
			tg = targets[:2]
		}
		if err := st.CreateCapture(ctx, store.Capture{ID: id, Spec: `{"selector":"site=lab"}`, State: "done",
			Created: now.Add(time.Duration(i) * time.Second), Expires: now.Add(time.Hour), Statuses: "[]"}, tg); err != nil {
			t.Fatal(err)
		}
	}
	// Events on targets of later pages still count in the capture's total.
	if _, err := st.InsertEvents(ctx, []store.Event{{ID: "e1", CaptureID: "c-big", AgentID: targets[99].AgentID, Time: now, User: "[]", Kernel: "[]"}}); err != nil {
		t.Fatal(err)
	}

	var got []string
	pages(t, "GetCapture", func(after string) (string, error) {
		resp, err := s.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: "c-big", After: after})
		if err != nil {
			return "", err
		}
		checkBudget(t, "GetCapture", resp, budget)
		c := resp.GetCapture()
		if c.GetEvents() != 1 {
			t.Fatalf("page counts %d events, want 1", c.GetEvents())
		}
		if int(c.GetOmittedTargets())+len(c.GetTargets()) != 100 {
			t.Fatalf("page: %d targets + %d omitted", len(c.GetTargets()), c.GetOmittedTargets())
		}
		for _, tg := range c.GetTargets() {
			if tg.GetHostname() == "" {
				t.Fatalf("target %s without hostname", tg.GetAgentId())
			}
			got = append(got, tg.GetAgentId())
		}
		return resp.GetNext(), nil
	})
	var want []string
	for _, tg := range targets {
		want = append(want, tg.AgentID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("targets paged %v", got)
	}

	// The list: newest first; the big capture trimmed to a page, its
	// omitted targets counted.
	var ids []string
	pages(t, "ListCaptures", func(after string) (string, error) {
		resp, err := s.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{After: after})
		if err != nil {
			return "", err
		}
		checkBudget(t, "ListCaptures", resp, budget)
		for _, c := range resp.GetCaptures() {
			ids = append(ids, c.GetId())
			if n := len(c.GetTargets()) + int(c.GetOmittedTargets()); n != len(targets) && c.GetId() == "c-big" {
				t.Fatalf("c-big lists %d targets", n)
			}
		}
		return resp.GetNext(), nil
	})
	if fmt.Sprint(ids) != "[c-small-2 c-small-1 c-big]" {
		t.Fatalf("captures %v", ids)
	}
}

func TestTrimCapture(t *testing.T) {
	c := &livedumpv1.Capture{Id: "c-1", Events: 5}
	for i := range 1000 {
		c.Targets = append(c.Targets, &livedumpv1.CaptureTarget{AgentId: fmt.Sprintf("%016x", i), Detail: strings.Repeat("x", 100)})
	}
	size := proto.Size(c)
	got := capture.Trim(c, 10000)
	if proto.Size(got) > 10000 || got.GetOmittedTargets() == 0 || len(got.GetTargets())+int(got.GetOmittedTargets()) != 1000 {
		t.Fatalf("trimmed to %d bytes, %d targets, %d omitted", proto.Size(got), len(got.GetTargets()), got.GetOmittedTargets())
	}
	if proto.Size(c) != size || len(c.GetTargets()) != 1000 {
		t.Fatal("Trim changed its argument")
	}
	if capture.Trim(c, size) != c {
		t.Fatal("a capture that fits was copied")
	}
}
