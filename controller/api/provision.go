package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Limits of provisioning calls.
const (
	defaultPlanWait  = 30 * time.Second
	defaultApplyWait = 5 * time.Minute
	maxProvisionWait = 30 * time.Minute
	// provisionFanout bounds how many agents one call waits on at once.
	provisionFanout = 256
	// MaxArtifactSize bounds uploads; the DTrace MSI is about 20 MB.
	MaxArtifactSize = 512 << 20
	artifactChunk   = 256 << 10
)

func newDirectiveID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func waitFor(d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("wait", "%v", err)
	}
	w := d.AsDuration()
	if w <= 0 || w > maxProvisionWait {
		return 0, invalid("wait", "must be between 1s and %s, got %s", maxProvisionWait, w)
	}
	return w, nil
}

func rebootPolicy(p livedumpv1.RebootPolicy) (livedumpv1.RebootPolicy, error) {
	switch p {
	case livedumpv1.RebootPolicy_REBOOT_POLICY_UNSPECIFIED:
		return livedumpv1.RebootPolicy_REBOOT_POLICY_NEVER, nil
	case livedumpv1.RebootPolicy_REBOOT_POLICY_NEVER, livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED:
		return p, nil
	}
	return 0, invalid("reboot", "unknown policy %d: want never or if-needed", p)
}

// dtraceMSI returns the artifact agents install DTrace from, or nil.
func (s *FleetServer) dtraceMSI(ctx context.Context) (*livedumpv1.Artifact, error) {
	a, err := s.cfg.Store.LatestArtifact(ctx, store.ArtifactDTraceMSI)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &livedumpv1.Artifact{Sha256: a.SHA256, Size: a.Size, Name: a.Name}, nil
}

// fanOut sends a provisioning directive to every matching agent that is
// online and collects the reports that arrive within wait. Offline agents
// are reported, not queued: provisioning changes a machine and an operator
// should see it happen, so it is re-run when the agent is back.
func (s *FleetServer) fanOut(ctx context.Context, sel string, wait time.Duration, d *livedumpv1.ProvisionDirective) ([]*livedumpv1.AgentProvisionResult, error) {
	parsed, err := machineSelector(sel)
	if err != nil {
		return nil, err
	}
	all, err := s.cfg.Store.ListAgents(ctx)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list agents", err)
	}
	var targets []store.Agent
	for _, a := range all {
		if !a.Revoked && parsed.Matches(allLabels(a)) {
			targets = append(targets, a)
		}
	}
	results := make([]*livedumpv1.AgentProvisionResult, len(targets))
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	sem := make(chan struct{}, provisionFanout)
	var wg sync.WaitGroup
	for i, a := range targets {
		results[i] = &livedumpv1.AgentProvisionResult{AgentId: a.ID, Hostname: a.Hostname}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			dir := &livedumpv1.Directive{Id: newDirectiveID(), Created: timestamppb.New(s.cfg.Clock.Now()), Kind: &livedumpv1.Directive_Provision{Provision: d}}
			rep, err := s.call(wctx, a.ID, dir)
			switch {
			case err == nil:
				results[i].Report = rep
			case errors.Is(err, fleet.ErrOffline):
				results[i].Error = "offline: nothing was changed; run again when the agent is online"
			case errors.Is(err, context.DeadlineExceeded):
				results[i].Error = "no report within " + wait.String() + ": the agent may still be working; see `agents list`"
			default:
				results[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	return results, nil
}

// machineSelector parses the selector of a call that acts on machines
// (provisioning, self-tests). An empty or blank one would mean the whole
// fleet: refused, as for captures.
func machineSelector(sel string) (selector.Selector, error) {
	parsed, err := selector.ParseRequired(sel)
	if err != nil {
		return selector.Selector{}, invalid("selector", "%v", err)
	}
	return parsed, nil
}

// PlanProvision implements FleetService.PlanProvision.
func (s *FleetServer) PlanProvision(ctx context.Context, req *livedumpv1.PlanProvisionRequest) (*livedumpv1.PlanProvisionResponse, error) {
	setAuditTarget(ctx, req.GetSelector())
	wait, err := waitFor(req.GetWait(), defaultPlanWait)
	if err != nil {
		return nil, err
	}
	if _, err := machineSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	msi, err := s.dtraceMSI(ctx)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "dtrace msi", err)
	}
	prof := s.cfg.Profile.ToProto()
	res, err := s.fanOut(ctx, req.GetSelector(), wait, &livedumpv1.ProvisionDirective{
		Action: livedumpv1.ProvisionAction_PROVISION_ACTION_PLAN, Profile: prof, DtraceMsi: msi,
	})
	if err != nil {
		return nil, err
	}
	return &livedumpv1.PlanProvisionResponse{Profile: prof, Results: res}, nil
}

// ApplyProvision implements FleetService.ApplyProvision.
func (s *FleetServer) ApplyProvision(ctx context.Context, req *livedumpv1.ApplyProvisionRequest) (*livedumpv1.ApplyProvisionResponse, error) {
	setAuditTarget(ctx, req.GetSelector())
	wait, err := waitFor(req.GetWait(), defaultApplyWait)
	if err != nil {
		return nil, err
	}
	reboot, err := rebootPolicy(req.GetReboot())
	if err != nil {
		return nil, err
	}
	if _, err := machineSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	if sum := req.GetDtraceMsiSha256(); sum != "" {
		// Choosing the installer every agent runs as SYSTEM is an admin's
		// decision (agents verify it again themselves). The interceptor
		// audits this refusal like any other outcome.
		if id, ok := IdentityFromContext(ctx); !ok || !id.Role.Allows(pki.RoleAdmin) {
			return nil, status.Errorf(codes.PermissionDenied, "dtrace_msi_sha256: choosing the DTrace installer needs role admin, not %s", id.Role)
		}
		if err := blobstore.ValidSHA256(sum); err != nil {
			return nil, invalid("dtrace_msi_sha256", "%v", err)
		}
		a, err := s.cfg.Store.GetArtifact(ctx, sum)
		if errors.Is(err, store.ErrNotFound) {
			return nil, invalid("dtrace_msi_sha256", "%s was not uploaded", sum)
		}
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "get artifact", err)
		}
		// Choosing an uploaded MSI makes it the fleet's DTrace MSI.
		a.Kind, a.Created = store.ArtifactDTraceMSI, s.cfg.Clock.Now().UTC()
		if err := s.cfg.Store.PutArtifact(ctx, a); err != nil {
			return nil, toStatus(s.cfg.Logger, "put artifact", err)
		}
	}
	msi, err := s.dtraceMSI(ctx)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "dtrace msi", err)
	}
	prof := s.cfg.Profile.ToProto()
	res, err := s.fanOut(ctx, req.GetSelector(), wait, &livedumpv1.ProvisionDirective{
		Action: livedumpv1.ProvisionAction_PROVISION_ACTION_APPLY, Profile: prof, Reboot: reboot, DtraceMsi: msi,
	})
	if err != nil {
		return nil, err
	}
	return &livedumpv1.ApplyProvisionResponse{Profile: prof, Results: res}, nil
}

// RevertProvision implements FleetService.RevertProvision.
func (s *FleetServer) RevertProvision(ctx context.Context, req *livedumpv1.RevertProvisionRequest) (*livedumpv1.RevertProvisionResponse, error) {
	setAuditTarget(ctx, req.GetSelector())
	wait, err := waitFor(req.GetWait(), defaultApplyWait)
	if err != nil {
		return nil, err
	}
	reboot, err := rebootPolicy(req.GetReboot())
	if err != nil {
		return nil, err
	}
	res, err := s.fanOut(ctx, req.GetSelector(), wait, &livedumpv1.ProvisionDirective{
		Action: livedumpv1.ProvisionAction_PROVISION_ACTION_REVERT, Profile: s.cfg.Profile.ToProto(), Reboot: reboot,
	})
	if err != nil {
		return nil, err
	}
	return &livedumpv1.RevertProvisionResponse{Results: res}, nil
}

var artifactNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,127}$`)

// UploadArtifact implements FleetService.UploadArtifact.
func (s *FleetServer) UploadArtifact(stream grpc.ClientStreamingServer[livedumpv1.UploadArtifactRequest, livedumpv1.UploadArtifactResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be the header")
	}
	name := filepath.Base(h.GetName())
	if !artifactNameRe.MatchString(name) {
		return invalid("header.name", "%q: 1-128 characters of letters, digits, space and . _ ( ) -", h.GetName())
	}
	if h.GetSize() <= 0 || h.GetSize() > MaxArtifactSize {
		return invalid("header.size", "must be between 1 and %d bytes, got %d", MaxArtifactSize, h.GetSize())
	}
	if h.GetSha256() != "" {
		if err := blobstore.ValidSHA256(h.GetSha256()); err != nil {
			return invalid("header.sha256", "%v", err)
		}
	}
	r := &chunkReader{recv: stream.Recv}
	sum, size, err := s.cfg.Blobs.Put(ctx, r, h.GetSha256(), h.GetSize())
	switch {
	case errors.Is(err, blobstore.ErrHashMismatch):
		return invalid("header.sha256", "%v", err)
	case err != nil && r.err != nil:
		return r.err
	case err != nil:
		return toStatus(s.cfg.Logger, "store artifact", err)
	case size != h.GetSize():
		return invalid("header.size", "announced %d bytes, received %d", h.GetSize(), size)
	}
	setAuditTarget(ctx, sum)
	if err := s.cfg.Store.PutArtifact(ctx, store.Artifact{SHA256: sum, Kind: "upload", Name: name, Size: size, Created: s.cfg.Clock.Now().UTC()}); err != nil {
		return toStatus(s.cfg.Logger, "put artifact", err)
	}
	s.cfg.Logger.Info("artifact uploaded", "sha256", sum, "name", name, "size", size)
	return stream.SendAndClose(&livedumpv1.UploadArtifactResponse{Artifact: &livedumpv1.Artifact{Sha256: sum, Size: size, Name: name}})
}

// chunkReader turns upload messages into a byte stream.
type chunkReader struct {
	recv func() (*livedumpv1.UploadArtifactRequest, error)
	buf  []byte
	err  error // a transport or protocol error, as opposed to EOF
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		m, err := c.recv()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			c.err = err
			return 0, err
		}
		if m.GetHeader() != nil {
			c.err = invalid("header", "sent twice")
			return 0, c.err
		}
		c.buf = m.GetChunk()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// FetchArtifact implements AgentService.FetchArtifact.
func (s *AgentServer) FetchArtifact(req *livedumpv1.FetchArtifactRequest, stream grpc.ServerStreamingServer[livedumpv1.FetchArtifactResponse]) error {
	if err := blobstore.ValidSHA256(req.GetSha256()); err != nil {
		return invalid("sha256", "%v", err)
	}
	if _, err := s.cfg.Store.GetArtifact(stream.Context(), req.GetSha256()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return status.Errorf(codes.NotFound, "artifact %s not found", req.GetSha256())
		}
		return toStatus(s.cfg.Logger, "get artifact", err)
	}
	f, err := s.cfg.Blobs.Open(stream.Context(), req.GetSha256())
	if err != nil {
		return toStatus(s.cfg.Logger, "open artifact", err)
	}
	defer f.Close()
	if req.GetOffset() < 0 {
		return invalid("offset", "must not be negative")
	}
	if _, err := f.Seek(req.GetOffset(), io.SeekStart); err != nil {
		return invalid("offset", "%v", err)
	}
	buf := make([]byte, artifactChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := stream.Send(&livedumpv1.FetchArtifactResponse{Chunk: buf[:n]}); serr != nil {
				return serr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return toStatus(s.cfg.Logger, "read artifact", err)
		}
	}
}

// call sends a directive to the agent wherever its stream is and waits for
// the report.
func (s *FleetServer) call(ctx context.Context, agentID string, d *livedumpv1.Directive) (*livedumpv1.ProvisionReport, error) {
	if s.cfg.Peers != nil {
		return fleet.Call(ctx, s.cfg.Peers, agentID, d)
	}
	return fleet.Call(ctx, s.cfg.Local, agentID, d)
}
