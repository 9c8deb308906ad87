package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func listDumps(t *testing.T, fc livedumpv1.FleetServiceClient, captureID string) []*livedumpv1.Dump {
	t.Helper()
	r, err := fc.ListDumps(context.Background(), &livedumpv1.ListDumpsRequest{CaptureId: captureID})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetDumps()
}

func allDumps(ds []*livedumpv1.Dump, n int, st livedumpv1.DumpState) bool {
	if len(ds) != n {
		return false
	}
	for _, d := range ds {
		if d.GetState() != st {
			return false
		}
	}
	return true
}

// download streams a dump and returns the SHA-256 of what arrived.
func download(t *testing.T, fc livedumpv1.FleetServiceClient, id string) (string, *livedumpv1.Dump) {
	t.Helper()
	st, err := fc.GetDump(context.Background(), &livedumpv1.GetDumpRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var d *livedumpv1.Dump
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.GetDump() != nil {
			d = m.GetDump()
		}
		h.Write(m.GetChunk())
	}
	return hex.EncodeToString(h.Sum(nil)), d
}

func dumpCapture(t *testing.T, op livedumpv1.FleetServiceClient, spec *livedumpv1.CaptureSpec) string {
	t.Helper()
	if spec.Expire == nil {
		spec.Expire = durationpb.New(10 * time.Minute)
	}
	r, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetCapture().GetId()
}

func TestDumpCaptureUploadsVerifiedDumps(t *testing.T) {
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "6m")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.5")
	_, _, op := provisionedLab(t, controllerOpts{})
	id := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "role=vdi", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP})
	eventually(t, 60*time.Second, "2 dumps uploaded and verified", func() bool {
		return allDumps(listDumps(t, op, id), 2, livedumpv1.DumpState_DUMP_STATE_UPLOADED)
	})
	for _, d := range listDumps(t, op, id) {
		if !strings.HasPrefix(d.GetFileName(), "DTRACE-") || d.GetSize() != 6<<20 || d.GetEventId() == "" || d.GetCompressed() >= d.GetSize() {
			t.Fatalf("dump %+v", d)
		}
		sum, got := download(t, op, d.GetId())
		if sum != d.GetSha256() || got.GetSha256() != d.GetSha256() {
			t.Fatalf("downloaded content hashes to %s, dump says %s", sum, d.GetSha256())
		}
	}
}

func TestDumpHashOnlyThenPull(t *testing.T) {
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "2m")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.2")
	_, _, op := provisionedLab(t, controllerOpts{})
	id := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "hostname=LAB-VDI-01", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, Upload: livedumpv1.UploadMode_UPLOAD_MODE_HASH_ONLY})
	eventually(t, 30*time.Second, "dump hashed and kept on the agent", func() bool {
		ds := listDumps(t, op, id)
		return allDumps(ds, 1, livedumpv1.DumpState_DUMP_STATE_HASH_ONLY) && ds[0].GetSha256() != ""
	})
	d := listDumps(t, op, id)[0]
	if _, err := op.PullDump(context.Background(), &livedumpv1.PullDumpRequest{Id: d.GetId()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "pulled dump uploaded", func() bool {
		return allDumps(listDumps(t, op, id), 1, livedumpv1.DumpState_DUMP_STATE_UPLOADED)
	})
	if sum, _ := download(t, op, d.GetId()); sum != d.GetSha256() {
		t.Fatalf("pulled dump hashes to %s, want %s", sum, d.GetSha256())
	}
}

func TestDumpUploadResumesAcrossAControllerRestart(t *testing.T) {
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "48m")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.5")
	dataDir := t.TempDir()
	msi := writeSimMSI(t)
	// No grace on stop: the upload is cut, not allowed to finish.
	c := startController(t, controllerOpts{dataDir: dataDir, profile: fastProfile(), dtraceMSI: msi, shutdownGrace: time.Millisecond})
	addr, caFile := c.Addr(), c.caFile
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, nil), hostname: "SLOW-01", bandwidth: 8 << 20})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, op, "")) == 1 })
	if _, err := op.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "hostname=SLOW-01", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "ready", func() bool { return allIn(provisionState(t, op, ""), "PROVISION_STATE_READY") })
	id := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "hostname=SLOW-01", OnDemand: true})
	eventually(t, 30*time.Second, "upload under way", func() bool {
		ds := listDumps(t, op, id)
		return len(ds) == 1 && ds[0].GetUploaded() >= 8<<20
	})
	mid := listDumps(t, op, id)[0].GetUploaded()
	c.stop() // mid-upload: the agent keeps the dump and the committed offset survives
	c2 := startController(t, controllerOpts{dataDir: dataDir, listen: addr, profile: fastProfile(), dtraceMSI: msi})
	c2.caFile = caFile
	op2 := fleetClient(t, c2, pki.RoleOperator)
	eventually(t, 60*time.Second, "upload resumed and verified", func() bool {
		return allDumps(listDumps(t, op2, id), 1, livedumpv1.DumpState_DUMP_STATE_UPLOADED)
	})
	d := listDumps(t, op2, id)[0]
	if sum, _ := download(t, op2, d.GetId()); sum != d.GetSha256() {
		t.Fatalf("resumed upload hashes to %s, want %s", sum, d.GetSha256())
	}
	if m := scrape(t, c2.MetricsAddr()); !strings.Contains(m, "livedump_controller_dump_upload_resumes_total 1") {
		t.Fatalf("the restarted controller saw no resumed upload:\n%s", grepLines(m, "livedump_controller_dump"))
	}
	t.Logf("controller stopped with at least %d of %d bytes committed; the upload resumed from its committed offset and verified", mid, d.GetSize())
	_ = a
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestDumpCaptureRefusedWithoutDiskSpace(t *testing.T) {
	msi := writeSimMSI(t)
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: msi})
	startAgent(t, c, agentOpts{token: c.token(t, 1, nil), hostname: "FULL-01", freeBytes: 1 << 30})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, op, "")) == 1 })
	// Force: the machine is not provisioned; its disk space is the blocker
	// under test.
	r, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{Selector: "hostname=FULL-01", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, Expire: durationpb.New(10 * time.Minute)}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	id := r.GetCapture().GetId()
	eventually(t, 10*time.Second, "target failed with the space blocker", func() bool {
		tg := getCapture(t, op, id).GetTargets()[0]
		return tg.GetState() == livedumpv1.TargetState_TARGET_STATE_FAILED && strings.Contains(tg.GetDetail(), "blocker: 1024 MiB free")
	})
}
