package api_test

import (
	"github.com/livedump/livedump/controller/api"
	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/dumps"
	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/retention"
)

// The controller's services keep fitting the interfaces the handlers
// declare: a change of a method in their packages fails here, at compile
// time, rather than in the controller's wiring.
var (
	_ api.Enroller    = (*enroll.Enroller)(nil)
	_ api.TokenIssuer = (*enroll.Enroller)(nil)

	_ api.CaptureReports = (*capture.Manager)(nil)
	_ api.Captures       = (*capture.Manager)(nil)
	_ api.CaptureEvents  = (*capture.Manager)(nil)

	_ api.DumpReceiver = (*dumps.Receiver)(nil)
	_ api.DumpReader   = (*dumps.Receiver)(nil)

	_ api.Sessions    = (*fleet.Registry)(nil)
	_ api.LocalAgents = (*fleet.Registry)(nil)

	_ api.Presence    = (*cluster.Cluster)(nil)
	_ api.Peers       = (*cluster.Cluster)(nil)
	_ api.Revocations = (*cluster.Cluster)(nil)

	_ api.Deleter = (*retention.Sweeper)(nil)
)
