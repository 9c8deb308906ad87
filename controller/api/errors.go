package api

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/store"
)

// invalid builds the InvalidArgument status every validation failure uses:
// the field first, then the reason.
func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, field+": "+format, args...)
}

// toStatus turns a domain error into a gRPC status at the API edge.
// Internal details of unexpected errors are logged, not returned.
func toStatus(log *slog.Logger, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ia *enroll.InvalidArgumentError
	switch {
	case errors.As(err, &ia):
		return status.Error(codes.InvalidArgument, ia.Error())
	case errors.Is(err, enroll.ErrDenied):
		return status.Error(codes.PermissionDenied, "enrollment denied: token unknown, expired, used up or revoked")
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: not found", op)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	log.Error("request failed", "op", op, "err", err)
	return status.Errorf(codes.Internal, "%s failed", op)
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
