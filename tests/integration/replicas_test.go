package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/backend"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/pgtest"
	"github.com/livedump/livedump/tests/s3test"
)

// envReplica makes the test binary run one controller replica from the JSON
// config in it, until it is killed: a replica that can really crash.
const envReplica = "LIVEDUMP_TEST_REPLICA"

type replicaConfig struct {
	Listen, DataDir, Store, CACert, CAKey, BlobsURL, Access, Secret, ReplicaID string
	Lease                                                                      time.Duration
}

// runReplica is the replica process's main.
func runReplica(js string) int {
	var rc replicaConfig
	if err := json.Unmarshal([]byte(js), &rc); err != nil {
		fmt.Fprintln(os.Stderr, "replica config:", err)
		return 2
	}
	ctx := context.Background()
	c, err := controller.New(ctx, controller.Config{
		Listen: rc.Listen, MetricsListen: "-", DataDir: rc.DataDir, Store: rc.Store, CACertFile: rc.CACert, CAKeyFile: rc.CAKey,
		BlobsURL: rc.BlobsURL, BlobsAccessKey: rc.Access, BlobsSecretKey: rc.Secret, Lease: rc.Lease, ReplicaID: rc.ReplicaID,
		Profile: fastProfile(), Metrics: prometheus.NewRegistry(), Logger: testLogger(nil),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 1
	}
	return 0
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestReplicasSharePostgreSQLAndS3 runs two controller replicas on one
// PostgreSQL database and one S3 bucket (VersityGW), with 20 agents split
// across them. Replica B is a separate process that is killed with SIGKILL.
func TestReplicasSharePostgreSQLAndS3(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 20 agents and two replicas (CI runs it on its own and in the full suite)")
	}
	const nAgents = 20
	const lease = 3 * time.Second
	t.Setenv("LIVEDUMP_SIM_DTRACE_RATE", "4")
	t.Setenv("LIVEDUMP_SIM_DUMP_SECONDS", "0.2")
	t.Setenv("LIVEDUMP_SIM_DUMP_BYTES", "9m") // two multipart parts

	pg := pgtest.URL(t)
	s3 := s3test.Start(t)
	bucket := s3.NewBucket(t)
	blobsURL := "s3://" + bucket + "/dumps/?endpoint=" + s3.Endpoint + "&region=us-east-1"

	// One external CA, so both replicas issue and trust the same
	// certificates.
	pkiDir := t.TempDir()
	if _, err := pki.LoadOrCreateCA(pkiDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	caCert, caKey := filepath.Join(pkiDir, pki.CACertFile), filepath.Join(pkiDir, pki.CAKeyFile)

	a := startController(t, controllerOpts{
		store: pg, blobsURL: blobsURL, blobsAccess: s3.AccessKey, blobsKey: s3.SecretKey, lease: lease, replicaID: "replica-a",
		caCertFile: caCert, caKeyFile: caKey, profile: fastProfile(), dtraceMSI: writeSimMSI(t),
	})

	addrB := freeAddr(t)
	js, _ := json.Marshal(replicaConfig{Listen: addrB, DataDir: t.TempDir(), Store: pg, CACert: caCert, CAKey: caKey,
		BlobsURL: blobsURL, Access: s3.AccessKey, Secret: s3.SecretKey, ReplicaID: "replica-b", Lease: lease})
	logB, err := os.Create(filepath.Join(t.TempDir(), "replica-b.log"))
	if err != nil {
		t.Fatal(err)
	}
	b := exec.Command(os.Args[0], "-test.run=^$")
	b.Env = append(os.Environ(), envReplica+"="+string(js))
	b.Stdout, b.Stderr = logB, logB
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	killB := func() {
		if b.Process != nil {
			_ = b.Process.Signal(syscall.SIGKILL)
			_ = b.Wait()
			b.Process = nil
		}
	}
	t.Cleanup(killB)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(logB.Name())
			t.Logf("replica B output:\n%s", out)
		}
	})
	eventually(t, 20*time.Second, "replica B listening", func() bool {
		c, err := net.Dial("tcp", addrB)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// Half the agents prefer B, half A; each lists both.
	tok := a.token(t, nAgents, map[string]string{"role": "vdi"})
	agents := make([]*testAgent, nAgents)
	for i := range agents {
		addrs := []string{a.Addr(), addrB}
		if i%2 == 1 {
			addrs = []string{addrB, a.Addr()}
		}
		agents[i] = startAgent(t, a, agentOpts{token: tok, hostname: fmt.Sprintf("REP-%02d", i), controllers: addrs})
	}
	op := fleetClient(t, a, pki.RoleOperator)
	eventually(t, 30*time.Second, "20 agents online, seen through replica A", func() bool { return countOnline(listAgents(t, op, "")) == nAgents })
	st := a.Store()
	onB := func() int {
		p, err := st.Presence(context.Background(), time.Now().Add(-lease))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range p {
			if r == "replica-b" {
				n++
			}
		}
		return n
	}
	if n := onB(); n != nAgents/2 {
		t.Fatalf("%d agents on replica B, want %d", n, nAgents/2)
	}
	// Provisioning through A reaches B's agents: a routed call and report.
	if _, err := op.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "role=vdi", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "every machine ready", func() bool {
		s := provisionState(t, op, "role=vdi")
		return len(s) == nAgents && allIn(s, "PROVISION_STATE_READY") && countOnline(listAgents(t, op, "")) == nAgents
	})

	// 1. --max-dumps 3 across both replicas: exactly 3 dumps uploaded.
	dumpID := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "role=vdi", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP, PerAgentCap: 1, MaxDumps: 3})
	eventually(t, 60*time.Second, "dump capture ended at max-dumps", func() bool {
		return getCapture(t, op, dumpID).GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE
	})
	var last []*livedumpv1.Dump
	t.Cleanup(func() {
		if t.Failed() {
			for _, d := range last {
				t.Logf("dump %s agent %s: %s %q committed %d of %d", d.GetId(), d.GetAgentId(), d.GetState(), d.GetDetail(), d.GetUploaded(), d.GetSize())
			}
		}
	})
	// A dtrace disarmed at max-dumps is killed, and a dump it was writing
	// is left truncated, as the simulator models it: that is settled too.
	eventually(t, 90*time.Second, "every written dump settled (uploaded, kept on its agent, aborted or truncated)", func() bool {
		ds := listDumps(t, op, dumpID)
		last = ds
		up := 0
		for _, d := range ds {
			switch d.GetState() {
			case livedumpv1.DumpState_DUMP_STATE_UPLOADED:
				up++
			case livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, livedumpv1.DumpState_DUMP_STATE_ABORTED, livedumpv1.DumpState_DUMP_STATE_TRUNCATED:
			default:
				return false
			}
		}
		return up == 3
	})
	time.Sleep(2 * time.Second) // nothing more may arrive
	var uploaded []*livedumpv1.Dump
	ds := listDumps(t, op, dumpID)
	for _, d := range ds {
		if d.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED {
			uploaded = append(uploaded, d)
		}
	}
	if len(uploaded) != 3 {
		t.Fatalf("%d dumps uploaded fleet-wide for --max-dumps 3 (%d written)", len(uploaded), len(ds))
	}
	t.Logf("max-dumps 3: %d dumps written, %d uploaded", len(ds), len(uploaded))

	// 2. A dump uploaded through one replica downloads through the other.
	opB := fleetClientAt(t, a, addrB, pki.RoleOperator)
	for _, d := range uploaded {
		for name, c := range map[string]livedumpv1.FleetServiceClient{"A": op, "B": opB} {
			sum, got := download(t, c, d.GetId())
			if sum != d.GetSha256() || got.GetSha256() != d.GetSha256() {
				t.Fatalf("dump %s through replica %s hashes to %s, want %s", d.GetId(), name, sum, d.GetSha256())
			}
		}
	}

	// 3. A capture created on A reaches the agents on B.
	const perAgent = 20
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "role=vdi", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"},
		PerAgentCap: perAgent, Expire: durationpb.New(10 * time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCapture().GetId()
	// A watcher on A sees the events B stores too.
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer wcancel()
	watch, err := op.WatchCapture(wctx, &livedumpv1.WatchCaptureRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	watched := make(chan map[string]bool, 1)
	go func() {
		seen := map[string]bool{}
		for {
			m, err := watch.Recv()
			if err != nil || m.GetEnded() != nil {
				watched <- seen
				return
			}
			if e := m.GetEvent(); e != nil {
				seen[e.GetId()] = true
			}
		}
	}()
	eventually(t, 30*time.Second, "every target armed, B's too", func() bool {
		n := 0
		for _, tg := range getCapture(t, op, id).GetTargets() {
			if tg.GetState() == livedumpv1.TargetState_TARGET_STATE_ARMED || tg.GetState() == livedumpv1.TargetState_TARGET_STATE_TRIGGERED {
				n++
			}
		}
		return n == nAgents
	})
	eventually(t, 30*time.Second, "events flowing through both replicas", func() bool {
		return getCapture(t, op, id).GetEvents() >= nAgents
	})
	before := getCapture(t, op, id).GetEvents()

	// 4. Replica B crashes; its agents move to A within the lease.
	killed := time.Now()
	killB()
	eventually(t, lease+10*time.Second, "B's agents on A", func() bool { return onB() == 0 && a.Connected() == nAgents })
	moved := time.Since(killed)
	if moved > lease+5*time.Second {
		t.Fatalf("agents took %s to move, lease %s", moved, lease)
	}
	eventually(t, 60*time.Second, "every event stored", func() bool {
		c := getCapture(t, op, id)
		return c.GetState() == livedumpv1.CaptureState_CAPTURE_STATE_DONE && c.GetEvents() == nAgents*perAgent
	})
	evs, err := op.ListEvents(context.Background(), &livedumpv1.ListEventsRequest{CaptureId: id, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs.GetEvents() {
		if seen[e.GetId()] {
			t.Fatalf("event %s stored twice", e.GetId())
		}
		seen[e.GetId()] = true
	}
	if len(seen) != nAgents*perAgent {
		t.Fatalf("%d distinct events, want %d", len(seen), nAgents*perAgent)
	}
	t.Logf("replica B killed with %d of %d events stored; its agents were on A %s later; all %d events stored once",
		before, nAgents*perAgent, moved.Round(10*time.Millisecond), len(seen))
	select {
	case got := <-watched:
		if len(got) != nAgents*perAgent {
			for _, e := range evs.GetEvents() {
				if !got[e.GetId()] {
					t.Logf("not watched: event %s of agent %s at %s", e.GetId(), e.GetAgentId(), e.GetTime().AsTime().Format(time.RFC3339Nano))
				}
			}
			t.Fatalf("the watcher on replica A saw %d distinct events, want %d", len(got), nAgents*perAgent)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher on replica A never saw the capture end")
	}

	// The audit trail of both replicas is in the one store.
	entries, err := st.ListAudit(context.Background(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var enrolls int
	for _, e := range entries {
		if strings.HasSuffix(e.Action, "Enroll") {
			enrolls++
		}
	}
	if enrolls != nAgents {
		t.Fatalf("%d enrollments audited, want %d", enrolls, nAgents)
	}
}

// fleetClientAt is an operator client of the controller at addr, which
// shares c's CA.
func fleetClientAt(t *testing.T, c *testController, addr string, role pki.Role) livedumpv1.FleetServiceClient {
	t.Helper()
	return livedumpv1.NewFleetServiceClient(dialAddr(t, c, addr, issue(t, c, pki.OperatorIdentity(role, "test-"+string(role)))))
}

// TestStoreURLSelectsTheStore opens both stores by URL, as the controller does.
func TestStoreURLSelectsTheStore(t *testing.T) {
	for _, u := range []string{"sqlite://" + filepath.Join(t.TempDir(), "x.db"), pgtest.URL(t)} {
		s, err := backend.Open(context.Background(), u)
		if err != nil {
			t.Fatalf("open %s: %v", u, err)
		}
		if _, err := s.ListAgents(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}
