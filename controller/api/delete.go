package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/retention"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Deleter deletes dumps and captures as an admin asks, with the retention
// sweep's rules: never a dump being downloaded or uploaded, never an
// active capture (retention.Sweeper).
type Deleter interface {
	DeleteDump(ctx context.Context, id string) (store.Dump, error)
	DeleteCapture(ctx context.Context, id string) (retention.CaptureDeletion, error)
}

// deleteErr turns a refused delete into the status the admin reads.
func deleteErr(s *FleetServer, what, id string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s %s not found", what, id)
	case errors.Is(err, retention.ErrCaptureActive):
		return status.Errorf(codes.FailedPrecondition, "capture %s is active; cancel it first (livedumpctl capture cancel %s), then delete it", id, id)
	case errors.Is(err, retention.ErrDownloading):
		return status.Errorf(codes.FailedPrecondition, "%s %s%s; delete it once the download has ended (a download holds its dump until %s after it ends)",
			what, id, sep(what, err), dumps.ReadLease)
	case errors.Is(err, retention.ErrUploading):
		return status.Errorf(codes.FailedPrecondition, "%s %s%s; delete it once the upload has finished or failed", what, id, sep(what, err))
	case errors.Is(err, store.ErrInUse):
		return status.Errorf(codes.FailedPrecondition, "%s %s: %v", what, id, err)
	}
	return toStatus(s.cfg.Logger, fmt.Sprintf("delete %s %s", what, id), err)
}

// sep joins "dump ID" to what a refusal says: "dump ID is being
// downloaded", "capture ID: dump ID2 is being downloaded".
func sep(what string, err error) string {
	if what == "dump" {
		return " " + err.Error()
	}
	return ": " + err.Error()
}

// DeleteDump implements FleetService.DeleteDump.
func (s *FleetServer) DeleteDump(ctx context.Context, req *livedumpv1.DeleteDumpRequest) (*livedumpv1.DeleteDumpResponse, error) {
	if err := validDumpID(req.GetId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetId())
	if s.cfg.Deleter == nil {
		return nil, status.Error(codes.Unimplemented, "this controller does not delete dumps")
	}
	d, err := s.cfg.Deleter.DeleteDump(ctx, req.GetId())
	if err != nil {
		return nil, deleteErr(s, "dump", req.GetId(), err)
	}
	s.cfg.Logger.Info("dump deleted by an operator", "dump_id", d.ID, "agent_id", d.AgentID, "bytes", d.Size)
	return &livedumpv1.DeleteDumpResponse{Dump: dumps.Proto(d, s.hostnames(ctx, d.AgentID)[d.AgentID])}, nil
}

// DeleteCapture implements FleetService.DeleteCapture.
func (s *FleetServer) DeleteCapture(ctx context.Context, req *livedumpv1.DeleteCaptureRequest) (*livedumpv1.DeleteCaptureResponse, error) {
	if err := validCaptureID(req.GetId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetId())
	if s.cfg.Deleter == nil {
		return nil, status.Error(codes.Unimplemented, "this controller does not delete captures")
	}
	del, err := s.cfg.Deleter.DeleteCapture(ctx, req.GetId())
	if err != nil {
		return nil, deleteErr(s, "capture", req.GetId(), err)
	}
	s.cfg.Logger.Info("capture deleted by an operator", "capture_id", req.GetId(), "dumps", del.Dumps, "bytes", del.Bytes, "events", del.Events)
	return &livedumpv1.DeleteCaptureResponse{Id: req.GetId(), Dumps: int32(del.Dumps), Bytes: del.Bytes, Events: int64(del.Events)}, nil
}
