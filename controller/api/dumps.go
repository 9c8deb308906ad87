package api

import (
	"context"
	"errors"
	"io"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/ids"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// UploadDump implements AgentService.UploadDump. The audit entry (every
// upload, and every refusal) names the dump its header announced.
func (s *AgentServer) UploadDump(stream grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]) error {
	id, _ := IdentityFromContext(stream.Context())
	hs := &headerSeen{ClientStreamingServer: stream}
	err := s.cfg.Dumps.Upload(id.AgentID, hs)
	if d := hs.dumpID.Load(); d != nil {
		setAuditTarget(stream.Context(), *d)
	}
	return err
}

// headerSeen remembers the dump ID of an upload's header. Recv runs on the
// receiver's reading goroutine, which may outlive the handler; hence the
// atomic.
type headerSeen struct {
	grpc.ClientStreamingServer[livedumpv1.UploadDumpRequest, livedumpv1.UploadDumpResponse]
	dumpID atomic.Pointer[string]
}

func (h *headerSeen) Recv() (*livedumpv1.UploadDumpRequest, error) {
	m, err := h.ClientStreamingServer.Recv()
	if d := m.GetHeader().GetDump().GetId(); d != "" && validDumpID(d) == nil {
		h.dumpID.CompareAndSwap(nil, &d)
	}
	return m, err
}

// DumpOffset implements AgentService.DumpOffset.
func (s *AgentServer) DumpOffset(ctx context.Context, req *livedumpv1.DumpOffsetRequest) (*livedumpv1.DumpOffsetResponse, error) {
	id, _ := IdentityFromContext(ctx)
	resp, err := s.cfg.Dumps.Offset(ctx, id.AgentID, req.GetDumpId())
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "dump offset", err)
	}
	return resp, nil
}

// hostnames names the agents of ids (an unknown one has no name); a lookup
// failure leaves names out rather than failing the call.
func (s *FleetServer) hostnames(ctx context.Context, ids ...string) map[string]string {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	hosts, err := store.Hostnames(ctx, s.cfg.Store, want)
	if err != nil {
		s.cfg.Logger.Warn("hostnames", "err", err)
		return map[string]string{}
	}
	return hosts
}

// ListDumps implements FleetService.ListDumps. Dumps are bounded by the
// capture quotas; they are paged here, over the store's list, in its order.
func (s *FleetServer) ListDumps(ctx context.Context, req *livedumpv1.ListDumpsRequest) (*livedumpv1.ListDumpsResponse, error) {
	if req.GetCaptureId() != "" {
		if err := validCaptureID(req.GetCaptureId()); err != nil {
			return nil, err
		}
	}
	var after store.Dump
	if req.GetAfter() != "" {
		k, err := decodeCursor(req.GetAfter(), "ListDumps", 2)
		if err != nil {
			return nil, err
		}
		if after.Written, err = parseCursorTime(k[0], "ListDumps"); err != nil {
			return nil, err
		}
		after.ID = k[1]
	}
	if req.GetAgentId() != "" {
		if err := validAgentID(req.GetAgentId()); err != nil {
			return nil, err
		}
	}
	var (
		ds  []store.Dump
		err error
	)
	if req.GetAgentId() != "" && req.GetCaptureId() == "" {
		ds, err = s.cfg.Store.ListAgentDumps(ctx, req.GetAgentId(), 0)
	} else {
		ds, err = s.cfg.Store.ListDumps(ctx, req.GetCaptureId())
	}
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list dumps", err)
	}
	if req.GetAgentId() != "" && req.GetCaptureId() != "" {
		ds = slices.DeleteFunc(ds, func(d store.Dump) bool { return d.AgentID != req.GetAgentId() })
	}
	// Newest first, then by ID (the store's order, made exact).
	before := func(a, b store.Dump) bool {
		if !a.Written.Equal(b.Written) {
			return a.Written.After(b.Written)
		}
		return a.ID < b.ID
	}
	sort.SliceStable(ds, func(i, j int) bool { return before(ds[i], ds[j]) })
	if after.ID != "" {
		ds = ds[sort.Search(len(ds), func(i int) bool { return before(after, ds[i]) }):]
	}
	// The page is chosen with the longest hostname allowed, then named.
	resp := &livedumpv1.ListDumpsResponse{}
	pg := page{budget: s.pageBudget()}
	n := 0
	for _, d := range ds {
		p := dumps.Proto(d, strings.Repeat("h", maxInventoryField))
		if !pg.fits(p) {
			last := ds[n-1]
			resp.Next = encodeCursor("ListDumps", cursorTime(last.Written), last.ID)
			break
		}
		n++
	}
	ids := make([]string, 0, n)
	for _, d := range ds[:n] {
		ids = append(ids, d.AgentID)
	}
	hosts := s.hostnames(ctx, ids...)
	for _, d := range ds[:n] {
		resp.Dumps = append(resp.Dumps, dumps.Proto(d, hosts[d.AgentID]))
	}
	return resp, nil
}

func validDumpID(id string) error {
	if ids.DumpID(id) != nil {
		return invalid("id", "%q is not a dump ID", id)
	}
	return nil
}

// GetDump implements FleetService.GetDump: the dump's metadata, then its
// raw content from the requested offset.
func (s *FleetServer) GetDump(req *livedumpv1.GetDumpRequest, stream grpc.ServerStreamingServer[livedumpv1.GetDumpResponse]) error {
	ctx := stream.Context()
	if err := validDumpID(req.GetId()); err != nil {
		return err
	}
	d, f, err := s.cfg.Dumps.Open(ctx, req.GetId())
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.NotFound, "dump %s not found", req.GetId())
	}
	if err != nil {
		return toStatus(s.cfg.Logger, "dump "+req.GetId(), err)
	}
	defer f.Close()
	if req.GetOffset() < 0 || req.GetOffset() > d.Size {
		return invalid("offset", "must be between 0 and %d", d.Size)
	}
	if err := stream.Send(&livedumpv1.GetDumpResponse{Msg: &livedumpv1.GetDumpResponse_Dump{Dump: dumps.Proto(d, s.hostnames(ctx, d.AgentID)[d.AgentID])}}); err != nil {
		return err
	}
	if _, err := f.Seek(req.GetOffset(), io.SeekStart); err != nil {
		return toStatus(s.cfg.Logger, "seek dump", err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := stream.Send(&livedumpv1.GetDumpResponse{Msg: &livedumpv1.GetDumpResponse_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return toStatus(s.cfg.Logger, "read dump", err)
		}
	}
}

// PullDump implements FleetService.PullDump.
func (s *FleetServer) PullDump(ctx context.Context, req *livedumpv1.PullDumpRequest) (*livedumpv1.PullDumpResponse, error) {
	if err := validDumpID(req.GetId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetId())
	d, err := s.cfg.Store.GetDump(ctx, req.GetId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "dump %s not found", req.GetId())
	}
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "get dump", err)
	}
	if d.State == dumps.StateUploaded {
		return &livedumpv1.PullDumpResponse{Dump: dumps.Proto(d, "")}, nil
	}
	if err := s.cfg.Store.MarkDumpPulled(ctx, d.ID); err != nil {
		return nil, toStatus(s.cfg.Logger, "mark dump pulled", err)
	}
	online := s.cfg.Local.Online(d.AgentID) || s.cfg.Peers != nil && s.cfg.Peers.Online(ctx, d.AgentID)
	if !online {
		return nil, status.Errorf(codes.FailedPrecondition, "agent %s is offline; pull again when it is online", d.AgentID)
	}
	dir := &livedumpv1.Directive{Id: "pull-" + d.ID, Created: timestamppb.New(s.cfg.Clock.Now()),
		Kind: &livedumpv1.Directive_PullDump{PullDump: &livedumpv1.PullDump{DumpId: d.ID}}}
	if s.cfg.Peers != nil {
		err = s.cfg.Peers.Send(ctx, d.AgentID, dir)
	} else if sess := s.cfg.Local.Session(d.AgentID); sess != nil {
		err = sess.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: dir}})
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "agent %s: %v", d.AgentID, err)
	}
	return &livedumpv1.PullDumpResponse{Dump: dumps.Proto(d, "")}, nil
}
