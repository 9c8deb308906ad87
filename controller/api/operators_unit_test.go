package api

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestOperatorCertificates(t *testing.T) {
	r := newRig(t, true)
	r.clock.Advance(1500 * time.Millisecond) // not on a whole second
	c1, c2 := r.cert(t, operator), r.cert(t, viewer)
	for _, c := range []struct {
		id     pki.Identity
		serial string
	}{{operator, pki.SerialHex(c1)}, {viewer, pki.SerialHex(c2)}} {
		if err := r.st.RecordOperatorCert(context.Background(), store.OperatorCert{Serial: c.serial, Role: string(c.id.Role), Name: c.id.Name,
			Issued: t0, NotAfter: t0.Add(24 * time.Hour), FirstSeen: t0, LastSeen: t0}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.fleet.ListOperatorCertificates(ctxAs(admin), &livedumpv1.ListOperatorCertificatesRequest{Limit: -1})
	wantCode(t, err, codes.InvalidArgument, "limit: ")
	list, err := r.fleet.ListOperatorCertificates(ctxAs(admin), &livedumpv1.ListOperatorCertificatesRequest{})
	if err != nil || len(list.GetCertificates()) != 2 || list.GetCertificates()[0].GetRevokedAt() != nil {
		t.Fatalf("%v %v", list, err)
	}

	for _, tc := range []struct {
		req   *livedumpv1.RevokeOperatorCertificateRequest
		field string
	}{
		{&livedumpv1.RevokeOperatorCertificateRequest{}, "target: "},
		{&livedumpv1.RevokeOperatorCertificateRequest{Target: &livedumpv1.RevokeOperatorCertificateRequest_Serial{Serial: "not hex"}}, "serial: "},
		{&livedumpv1.RevokeOperatorCertificateRequest{Target: &livedumpv1.RevokeOperatorCertificateRequest_Name{Name: "a b/c"}}, "name: "},
	} {
		_, err := r.fleet.RevokeOperatorCertificate(ctxAs(admin), tc.req)
		wantCode(t, err, codes.InvalidArgument, tc.field)
	}

	// By serial: stored, broadcast, audited under the serial.
	ctx, rec := as(admin)
	resp, err := r.fleet.RevokeOperatorCertificate(ctx, &livedumpv1.RevokeOperatorCertificateRequest{Target: &livedumpv1.RevokeOperatorCertificateRequest_Serial{Serial: pki.SerialHex(c1)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCertificates()) != 1 || resp.GetCertificates()[0].GetRevokedBy() != admin.String() || rec.target != "serial/"+pki.SerialHex(c1) {
		t.Fatalf("%v, target %q", resp, rec.target)
	}
	// By name: the cut-off is rounded up to the next whole second.
	ctx, rec = as(admin)
	resp, err = r.fleet.RevokeOperatorCertificate(ctx, &livedumpv1.RevokeOperatorCertificateRequest{Target: &livedumpv1.RevokeOperatorCertificateRequest_Name{Name: viewer.Name}})
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(2 * time.Second); !resp.GetRevokedAt().AsTime().Equal(want) || rec.target != "operator/"+viewer.Name {
		t.Fatalf("revoked at %v, want %v; target %q", resp.GetRevokedAt().AsTime(), want, rec.target)
	}
	if len(resp.GetCertificates()) != 1 || resp.GetCertificates()[0].GetName() != viewer.Name {
		t.Fatalf("certificates %v: want the viewer's", resp.GetCertificates())
	}
	_, serials, names := r.peers.Revocations()
	if len(serials) != 1 || serials[0] != pki.SerialHex(c1) || len(names) != 1 || names[0] != viewer.Name+" before "+t0.Add(2*time.Second).Format(time.RFC3339) {
		t.Fatalf("broadcast serials %v names %v", serials, names)
	}
}
