package api

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// maxOperatorCertList bounds ListOperatorCertificates.
const maxOperatorCertList = 10000

// timeOrNil leaves a zero time unset rather than the year 1.
func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func operatorCertToProto(c store.OperatorCert) *livedumpv1.OperatorCertificate {
	return &livedumpv1.OperatorCertificate{
		Serial:    c.Serial,
		Role:      c.Role,
		Name:      c.Name,
		Issued:    timeOrNil(c.Issued),
		NotAfter:  timeOrNil(c.NotAfter),
		FirstSeen: timeOrNil(c.FirstSeen),
		LastSeen:  timeOrNil(c.LastSeen),
		RevokedAt: timeOrNil(c.RevokedAt),
		RevokedBy: c.RevokedBy,
	}
}

// ListOperatorCertificates implements FleetService.ListOperatorCertificates.
func (s *FleetServer) ListOperatorCertificates(ctx context.Context, req *livedumpv1.ListOperatorCertificatesRequest) (*livedumpv1.ListOperatorCertificatesResponse, error) {
	limit := int(req.GetLimit())
	if limit < 0 || limit > maxOperatorCertList {
		return nil, invalid("limit", "must be between 0 and %d, got %d", maxOperatorCertList, limit)
	}
	cs, err := s.cfg.Store.ListOperatorCerts(ctx, limit)
	if err != nil {
		return nil, toStatus(s.cfg.Logger, "list operator certificates", err)
	}
	resp := &livedumpv1.ListOperatorCertificatesResponse{}
	for _, c := range cs {
		resp.Certificates = append(resp.Certificates, operatorCertToProto(c))
	}
	return resp, nil
}

// RevokeOperatorCertificate implements FleetService.RevokeOperatorCertificate:
// the store refuses the certificate from the next call on, and every replica
// ends the streams it holds open.
func (s *FleetServer) RevokeOperatorCertificate(ctx context.Context, req *livedumpv1.RevokeOperatorCertificateRequest) (*livedumpv1.RevokeOperatorCertificateResponse, error) {
	by := ""
	if id, ok := IdentityFromContext(ctx); ok {
		by = id.String()
	}
	at := s.cfg.Clock.Now().UTC()
	switch t := req.GetTarget().(type) {
	case *livedumpv1.RevokeOperatorCertificateRequest_Serial:
		serial, err := pki.ParseSerial(t.Serial)
		if err != nil {
			return nil, invalid("serial", "%v", err)
		}
		setAuditTarget(ctx, "serial/"+serial)
		c, err := s.cfg.Store.RevokeOperatorCert(ctx, serial, at, by)
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "revoke operator certificate "+serial, err)
		}
		if s.cfg.Revocations != nil {
			s.cfg.Revocations.OperatorCertRevoked(ctx, serial)
		}
		s.cfg.Logger.Info("operator certificate revoked", "serial", serial, "operator", c.Name, "by", by)
		return &livedumpv1.RevokeOperatorCertificateResponse{
			Certificates: []*livedumpv1.OperatorCertificate{operatorCertToProto(c)},
			RevokedAt:    timestamppb.New(c.RevokedAt),
		}, nil
	case *livedumpv1.RevokeOperatorCertificateRequest_Name:
		if err := pki.ValidateOperatorName(t.Name); err != nil {
			return nil, invalid("name", "%v", err)
		}
		setAuditTarget(ctx, "operator/"+t.Name)
		// Certificates carry their issue time in whole seconds: the cut-off
		// is rounded up to the next second, so that every certificate
		// issued before the revocation is covered (one issued in the same
		// second just after it is too).
		if r := at.Truncate(time.Second); !r.Equal(at) {
			at = r.Add(time.Second)
		}
		n, err := s.cfg.Store.RevokeOperatorName(ctx, t.Name, at, by)
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "revoke operator "+t.Name, err)
		}
		if s.cfg.Revocations != nil {
			s.cfg.Revocations.OperatorNameRevoked(ctx, t.Name, at)
		}
		s.cfg.Logger.Info("operator certificates revoked by name", "operator", t.Name, "recorded", n, "by", by)
		resp := &livedumpv1.RevokeOperatorCertificateResponse{RevokedAt: timestamppb.New(at)}
		cs, err := s.cfg.Store.ListOperatorCerts(ctx, maxOperatorCertList)
		if err != nil {
			return nil, toStatus(s.cfg.Logger, "list operator certificates", err)
		}
		for _, c := range cs {
			if c.Name == t.Name && !c.RevokedAt.IsZero() {
				resp.Certificates = append(resp.Certificates, operatorCertToProto(c))
			}
		}
		return resp, nil
	}
	return nil, invalid("target", "give the serial of one certificate or the name of an operator")
}
