package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestProvisionArguments(t *testing.T) {
	r := newRig(t, false)
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"plan without selector", func() error {
			_, err := r.fleet.PlanProvision(ctxAs(operator), &livedumpv1.PlanProvisionRequest{Selector: " "})
			return err
		}, "selector: "},
		{"plan wait too long", func() error {
			_, err := r.fleet.PlanProvision(ctxAs(operator), &livedumpv1.PlanProvisionRequest{Selector: "a=b", Wait: durationpb.New(time.Hour)})
			return err
		}, "wait: must be between 1s and 30m0s"},
		{"apply wait negative", func() error {
			_, err := r.fleet.ApplyProvision(ctxAs(operator), &livedumpv1.ApplyProvisionRequest{Selector: "a=b", Wait: durationpb.New(-time.Second)})
			return err
		}, "wait: "},
		{"apply unknown reboot policy", func() error {
			_, err := r.fleet.ApplyProvision(ctxAs(operator), &livedumpv1.ApplyProvisionRequest{Selector: "a=b", Reboot: 99})
			return err
		}, "reboot: unknown policy 99"},
		{"revert without selector", func() error {
			_, err := r.fleet.RevertProvision(ctxAs(operator), &livedumpv1.RevertProvisionRequest{})
			return err
		}, "selector: "},
		{"revert unknown reboot policy", func() error {
			_, err := r.fleet.RevertProvision(ctxAs(operator), &livedumpv1.RevertProvisionRequest{Selector: "a=b", Reboot: -1})
			return err
		}, "reboot: "},
		{"admin's msi, malformed", func() error {
			_, err := r.fleet.ApplyProvision(ctxAs(admin), &livedumpv1.ApplyProvisionRequest{Selector: "a=b", DtraceMsiSha256: "xyz"})
			return err
		}, "dtrace_msi_sha256: "},
		{"admin's msi, never uploaded", func() error {
			_, err := r.fleet.ApplyProvision(ctxAs(admin), &livedumpv1.ApplyProvisionRequest{Selector: "a=b", DtraceMsiSha256: strings.Repeat("ab", 32)})
			return err
		}, "dtrace_msi_sha256: " + strings.Repeat("ab", 32) + " was not uploaded"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), codes.InvalidArgument, tc.field) })
	}
	// Choosing the installer is an admin's decision.
	_, err := r.fleet.ApplyProvision(ctxAs(operator), &livedumpv1.ApplyProvisionRequest{Selector: "a=b", DtraceMsiSha256: strings.Repeat("ab", 32)})
	wantCode(t, err, codes.PermissionDenied, "dtrace_msi_sha256: choosing the DTrace installer needs role admin, not operator")
	if len(r.local.Sent()) != 0 {
		t.Fatal("a refused call sent directives")
	}
}

// TestProvisionFanOut checks who a provisioning call reaches and how each
// agent's outcome reads: matching, not revoked; answered, offline, silent.
func TestProvisionFanOut(t *testing.T) {
	r := newRig(t, false)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A", Labels: map[string]string{"site": "ber"}})
	r.addAgent(t, store.Agent{ID: agentB, Hostname: "WS-B", Labels: map[string]string{"site": "ber"}})
	r.addAgent(t, store.Agent{ID: agentC, Hostname: "WS-C", Labels: map[string]string{"site": "ber"}, Revoked: true})
	r.addAgent(t, store.Agent{ID: "d4d4d4d4d4d4d4d4", Hostname: "WS-D", Labels: map[string]string{"site": "muc"}})
	r.local.Answer(agentA, &livedumpv1.ProvisionReport{State: livedumpv1.ProvisionState_PROVISION_STATE_READY}, nil)
	r.local.Answer(agentB, nil, context.DeadlineExceeded)

	ctx, rec := as(operator)
	resp, err := r.fleet.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "site=ber", Wait: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if rec.target != "site=ber" || resp.GetProfile() == nil {
		t.Fatalf("target %q, profile %v", rec.target, resp.GetProfile())
	}
	res := map[string]*livedumpv1.AgentProvisionResult{}
	for _, x := range resp.GetResults() {
		res[x.GetHostname()] = x
	}
	if len(res) != 2 {
		t.Fatalf("results for %v: want WS-A and WS-B only", res)
	}
	if a := res["WS-A"]; a.GetReport().GetState() != livedumpv1.ProvisionState_PROVISION_STATE_READY || a.GetError() != "" {
		t.Fatalf("WS-A: %v", a)
	}
	if b := res["WS-B"]; !strings.HasPrefix(b.GetError(), "no report within 1s") {
		t.Fatalf("WS-B: %v", b)
	}
	sent := r.local.Sent()
	if len(sent) != 2 || sent[0].Directive.GetProvision().GetAction() != livedumpv1.ProvisionAction_PROVISION_ACTION_PLAN ||
		sent[0].Directive.GetProvision().GetDtraceMsi() != nil {
		t.Fatalf("sent %v", sent)
	}

	// Apply to an agent that is not connected.
	r.local.Answer(agentA, nil, nil)
	resp2, err := r.fleet.RevertProvision(ctxAs(operator), &livedumpv1.RevertProvisionRequest{Selector: "hostname=WS-D"})
	if err != nil || len(resp2.GetResults()) != 1 || !strings.HasPrefix(resp2.GetResults()[0].GetError(), "offline: nothing was changed") {
		t.Fatalf("%v %v", resp2, err)
	}
}

// TestApplyProvisionChoosesMSI checks that an admin's choice of an
// uploaded MSI becomes the fleet's and goes out in the directive.
func TestApplyProvisionChoosesMSI(t *testing.T) {
	r := newRig(t, true)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A"})
	r.peers.Answer(agentA, &livedumpv1.ProvisionReport{State: livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED}, nil)
	sum := strings.Repeat("cd", 32)
	if err := r.st.PutArtifact(context.Background(), store.Artifact{SHA256: sum, Kind: "upload", Name: "dtrace.msi", Size: 42, Created: t0}); err != nil {
		t.Fatal(err)
	}
	resp, err := r.fleet.ApplyProvision(ctxAs(admin), &livedumpv1.ApplyProvisionRequest{Selector: "hostname=WS-A", DtraceMsiSha256: sum,
		Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetResults()[0].GetReport().GetState(); got != livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED {
		t.Fatalf("report %v", got)
	}
	d := r.peers.Sent()[0].Directive.GetProvision()
	if d.GetAction() != livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY || d.GetReboot() != livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED ||
		d.GetDtraceMsi().GetSha256() != sum || d.GetDtraceMsi().GetName() != "dtrace.msi" {
		t.Fatalf("directive %v", d)
	}
	if a, err := r.st.LatestArtifact(context.Background(), store.ArtifactDTraceMSI); err != nil || a.SHA256 != sum {
		t.Fatalf("fleet MSI %v %v", a, err)
	}
	if len(r.local.Sent()) != 0 {
		t.Fatal("a replica called its local registry instead of the cluster")
	}
}

func TestUploadAndFetchArtifact(t *testing.T) {
	r := newRig(t, false)
	content := bytes.Repeat([]byte("msi!"), 100_000)
	h := sha256.Sum256(content)
	sum := hex.EncodeToString(h[:])
	upload := func(msgs ...*livedumpv1.UploadArtifactRequest) (*livedumpv1.UploadArtifactResponse, string, error) {
		ctx, rec := as(admin)
		s := &recvStream[livedumpv1.UploadArtifactRequest, livedumpv1.UploadArtifactResponse]{serverStream: serverStream{ctx: ctx}, msgs: msgs}
		err := r.fleet.UploadArtifact(s)
		return s.resp, rec.target, err
	}
	header := func(name string, size int64, sum string) *livedumpv1.UploadArtifactRequest {
		return &livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Header{Header: &livedumpv1.Artifact{Name: name, Size: size, Sha256: sum}}}
	}
	chunk := func(b []byte) *livedumpv1.UploadArtifactRequest {
		return &livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Chunk{Chunk: b}}
	}
	for _, tc := range []struct {
		name  string
		msgs  []*livedumpv1.UploadArtifactRequest
		field string
	}{
		{"no header", []*livedumpv1.UploadArtifactRequest{chunk(content)}, "header: the first message must be the header"},
		{"bad name", []*livedumpv1.UploadArtifactRequest{header("", 4, "")}, "header.name: "},
		{"zero size", []*livedumpv1.UploadArtifactRequest{header("a.msi", 0, "")}, "header.size: "},
		{"too large", []*livedumpv1.UploadArtifactRequest{header("a.msi", MaxArtifactSize+1, "")}, "header.size: "},
		{"bad sum", []*livedumpv1.UploadArtifactRequest{header("a.msi", 4, "zz")}, "header.sha256: "},
		{"wrong sum", []*livedumpv1.UploadArtifactRequest{header("a.msi", 4, strings.Repeat("00", 32)), chunk([]byte("abcd"))}, "header.sha256: "},
		{"short", []*livedumpv1.UploadArtifactRequest{header("a.msi", 5, ""), chunk([]byte("abcd"))}, "header.size: announced 5 bytes, received 4"},
		{"header twice", []*livedumpv1.UploadArtifactRequest{header("a.msi", 4, ""), header("a.msi", 4, "")}, "header: sent twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := upload(tc.msgs...)
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	resp, target, err := upload(header("/tmp/dtrace.msi", int64(len(content)), sum), chunk(content[:1000]), chunk(content[1000:]))
	if err != nil {
		t.Fatal(err)
	}
	if a := resp.GetArtifact(); a.GetSha256() != sum || a.GetName() != "dtrace.msi" || a.GetSize() != int64(len(content)) || target != sum {
		t.Fatalf("artifact %v, target %q", a, target)
	}

	// Agents fetch it, from an offset.
	s := &sendStream[livedumpv1.FetchArtifactResponse]{serverStream: serverStream{ctx: ctxAs(pki.AgentIdentity(agentA))}}
	if err := r.agent.FetchArtifact(&livedumpv1.FetchArtifactRequest{Sha256: sum, Offset: 10}, s); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, m := range s.msgs() {
		got = append(got, m.GetChunk()...)
	}
	if !bytes.Equal(got, content[10:]) {
		t.Fatalf("fetched %d bytes", len(got))
	}
	for _, tc := range []struct {
		req   *livedumpv1.FetchArtifactRequest
		code  codes.Code
		field string
	}{
		{&livedumpv1.FetchArtifactRequest{Sha256: "../x"}, codes.InvalidArgument, "sha256: "},
		{&livedumpv1.FetchArtifactRequest{Sha256: strings.Repeat("ee", 32)}, codes.NotFound, fmt.Sprintf("artifact %s not found", strings.Repeat("ee", 32))},
		{&livedumpv1.FetchArtifactRequest{Sha256: sum, Offset: -1}, codes.InvalidArgument, "offset: "},
	} {
		err := r.agent.FetchArtifact(tc.req, &sendStream[livedumpv1.FetchArtifactResponse]{serverStream: serverStream{ctx: ctxAs(pki.AgentIdentity(agentA))}})
		wantCode(t, err, tc.code, tc.field)
	}
}
