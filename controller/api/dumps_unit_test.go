package api

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

const (
	dumpA = "d0d0d0d0d0d0d0d0"
	dumpB = "e1e1e1e1e1e1e1e1"
)

// TestAgentDumpCallsActForTheCaller checks that an agent's dump calls
// reach the receiver in the caller's own name, whatever the request says.
func TestAgentDumpCallsActForTheCaller(t *testing.T) {
	r := newRig(t, false)
	r.dumps.Add(store.Dump{ID: dumpA, AgentID: agentA}, []byte("12345"))
	resp, err := r.agent.DumpOffset(ctxAs(pki.AgentIdentity(agentA)), &livedumpv1.DumpOffsetRequest{DumpId: dumpA})
	if err != nil || resp.GetCommitted() != 5 {
		t.Fatalf("%v %v", resp, err)
	}
	// Another agent asking for the same dump is told it does not exist.
	_, err = r.agent.DumpOffset(ctxAs(pki.AgentIdentity(agentB)), &livedumpv1.DumpOffsetRequest{DumpId: dumpA})
	wantCode(t, err, codes.NotFound, "dump offset: not found")
	if got := r.dumps.Offsets(); got[1] != agentB+"/"+dumpA {
		t.Fatalf("receiver asked %v", got)
	}

	// An upload names its dump in the audit entry when the header's ID is valid.
	for _, tc := range []struct{ id, target string }{{dumpB, dumpB}, {"../../etc", ""}} {
		ctx, rec := as(pki.AgentIdentity(agentA))
		s := &recvStream[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]{serverStream: serverStream{ctx: ctx}, msgs: []*livedumpv1.UploadDumpRequest{
			{Msg: &livedumpv1.UploadDumpRequest_Header{Header: &livedumpv1.UploadDumpHeader{Dump: &livedumpv1.Dump{Id: tc.id, AgentId: agentB}}}},
			{Msg: &livedumpv1.UploadDumpRequest_Chunk{Chunk: []byte("data")}},
		}}
		if err := r.agent.UploadDump(s); err != nil {
			t.Fatal(err)
		}
		if rec.target != tc.target || s.resp == nil {
			t.Fatalf("header %q: audit target %q, response %v", tc.id, rec.target, s.resp)
		}
	}
	if ups := r.dumps.Uploads(); len(ups) != 2 || ups[0].AgentID != agentA || len(ups[0].Msg) != 2 {
		t.Fatalf("uploads %v", ups)
	}
}

func TestListDumps(t *testing.T) {
	r := newRig(t, false)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A"})
	for i, id := range []string{dumpA, dumpB} {
		if err := r.st.PutDump(context.Background(), store.Dump{ID: id, AgentID: agentA, CaptureID: capID, FileName: "x.dmp", Size: 10,
			State: dumps.StateHashOnly, Written: t0.Add(time.Duration(i) * time.Minute), Updated: t0}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := r.fleet.ListDumps(ctxAs(viewer), &livedumpv1.ListDumpsRequest{CaptureId: capID})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetDumps()) != 2 || resp.GetDumps()[0].GetId() != dumpB || resp.GetDumps()[0].GetHostname() != "WS-A" ||
		resp.GetDumps()[0].GetState() != livedumpv1.DumpState_DUMP_STATE_HASH_ONLY {
		t.Fatalf("dumps %v", resp.GetDumps())
	}
	_, err = r.fleet.ListDumps(ctxAs(viewer), &livedumpv1.ListDumpsRequest{CaptureId: "X"})
	wantCode(t, err, codes.InvalidArgument, "id: ")
	_, err = r.fleet.ListDumps(ctxAs(viewer), &livedumpv1.ListDumpsRequest{After: "garbage"})
	wantCode(t, err, codes.InvalidArgument, "after: not a page token of ListDumps")
}

func TestGetDump(t *testing.T) {
	r := newRig(t, false)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A"})
	content := bytes.Repeat([]byte("0123456789"), 200_000) // 2 MB: more than one chunk
	r.dumps.Add(store.Dump{ID: dumpA, AgentID: agentA, Size: int64(len(content)), State: dumps.StateUploaded}, content)
	for _, tc := range []struct {
		req   *livedumpv1.GetDumpRequest
		code  codes.Code
		field string
	}{
		{&livedumpv1.GetDumpRequest{Id: "XYZ"}, codes.InvalidArgument, "id: "},
		{&livedumpv1.GetDumpRequest{Id: dumpB}, codes.NotFound, "dump " + dumpB + " not found"},
		{&livedumpv1.GetDumpRequest{Id: dumpA, Offset: -1}, codes.InvalidArgument, "offset: "},
		{&livedumpv1.GetDumpRequest{Id: dumpA, Offset: int64(len(content)) + 1}, codes.InvalidArgument, "offset: "},
	} {
		err := r.fleet.GetDump(tc.req, &sendStream[livedumpv1.GetDumpResponse]{serverStream: serverStream{ctx: ctxAs(operator)}})
		wantCode(t, err, tc.code, tc.field)
	}
	s := &sendStream[livedumpv1.GetDumpResponse]{serverStream: serverStream{ctx: ctxAs(operator)}}
	if err := r.fleet.GetDump(&livedumpv1.GetDumpRequest{Id: dumpA, Offset: 7}, s); err != nil {
		t.Fatal(err)
	}
	msgs := s.msgs()
	if msgs[0].GetDump().GetId() != dumpA || msgs[0].GetDump().GetHostname() != "WS-A" {
		t.Fatalf("first message %v", msgs[0])
	}
	var got []byte
	for _, m := range msgs[1:] {
		got = append(got, m.GetChunk()...)
	}
	if len(msgs) < 3 || !bytes.Equal(got, content[7:]) {
		t.Fatalf("%d messages, %d bytes: want the content from offset 7", len(msgs), len(got))
	}
	r.dumps.Err = errors.New("bucket gone")
	err := r.fleet.GetDump(&livedumpv1.GetDumpRequest{Id: dumpA}, s)
	wantCode(t, err, codes.Internal, "dump "+dumpA+" failed")
}

// TestPullDump checks the pull directive goes to the agent's stream, here
// or through the cluster, and what an offline agent or a failed send means.
func TestPullDump(t *testing.T) {
	for _, replica := range []bool{false, true} {
		r := newRig(t, replica)
		for _, id := range []string{dumpA, dumpB} {
			if err := r.st.PutDump(context.Background(), store.Dump{ID: id, AgentID: agentA, State: dumps.StateHashOnly, Written: t0, Updated: t0}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.st.SetDumpProgress(context.Background(), dumpB, 10, 10, dumps.StateUploaded, "", t0); err != nil {
			t.Fatal(err)
		}

		_, err := r.fleet.PullDump(ctxAs(operator), &livedumpv1.PullDumpRequest{Id: "nope"})
		wantCode(t, err, codes.InvalidArgument, "id: ")
		_, err = r.fleet.PullDump(ctxAs(operator), &livedumpv1.PullDumpRequest{Id: "f2f2f2f2f2f2f2f2"})
		wantCode(t, err, codes.NotFound, "dump f2f2f2f2f2f2f2f2 not found")
		// Uploaded already: nothing to send.
		if resp, err := r.fleet.PullDump(ctxAs(operator), &livedumpv1.PullDumpRequest{Id: dumpB}); err != nil || resp.GetDump().GetId() != dumpB {
			t.Fatalf("uploaded: %v %v", resp, err)
		}
		_, err = r.fleet.PullDump(ctxAs(operator), &livedumpv1.PullDumpRequest{Id: dumpA})
		wantCode(t, err, codes.FailedPrecondition, "agent "+agentA+" is offline")

		ctx, rec := as(operator)
		if replica {
			r.peers.SetOnline(agentA, true)
		}
		sess := r.local.Connect(agentA, t0)
		if _, err := r.fleet.PullDump(ctx, &livedumpv1.PullDumpRequest{Id: dumpA}); err != nil {
			t.Fatal(err)
		}
		var dir *livedumpv1.Directive
		if replica {
			sent := r.peers.Delivered()
			if len(sent) != 1 || sent[0].AgentID != agentA {
				t.Fatalf("sent %v", sent)
			}
			dir = sent[0].Directive
		} else {
			dir = (<-sess.Outbox()).GetDirective()
		}
		if dir.GetId() != "pull-"+dumpA || dir.GetPullDump().GetDumpId() != dumpA || rec.target != dumpA {
			t.Fatalf("directive %v, target %q", dir, rec.target)
		}
		// Pulled: the capture's quota no longer applies to it.
		if d, _ := r.st.GetDump(context.Background(), dumpA); !d.Pulled {
			t.Fatal("the dump is not marked pulled")
		}
		if d, _ := r.st.GetDump(context.Background(), dumpB); d.Pulled {
			t.Fatal("an uploaded dump was marked pulled")
		}
		if replica {
			r.peers.SendErr = errors.New("no replica holds it")
			_, err = r.fleet.PullDump(ctxAs(operator), &livedumpv1.PullDumpRequest{Id: dumpA})
			wantCode(t, err, codes.Unavailable, "agent "+agentA+": no replica holds it")
		}
	}
}
