package api

import "context"

// StreamEnder ends a client's stream as the client itself would (an
// HTTP/2 END_STREAM), so that a Recv blocked on it returns io.EOF and the
// handler goes on to return the status it chooses.
//
// That is how Connect serves an idle agent with one goroutine: the handler
// itself waits in Recv, and whatever ends the session (a revocation, a
// replacing session, a heartbeat timeout, an expired certificate, a slow
// agent, shutdown) cancels the session's context, whose end ends the
// stream. Cancelling the stream's gRPC context instead would end the Recv
// too, but gRPC then answers the agent "canceled" at once (a failed
// RecvMsg writes its own status), before the handler can say why.
type StreamEnder interface {
	EndStream()
}

type streamEnderKey struct{}

// WithStreamEnder returns ctx carrying the ender of its stream: the
// controller's InTapHandle adds it to every Connect stream.
func WithStreamEnder(ctx context.Context, e StreamEnder) context.Context {
	return context.WithValue(ctx, streamEnderKey{}, e)
}

func streamEnderFrom(ctx context.Context) (StreamEnder, bool) {
	e, ok := ctx.Value(streamEnderKey{}).(StreamEnder)
	return e, ok
}
