// Package loadgen simulates a fleet of agents in one process for benchmarks
// and fault tests. Every simulated agent is a real protocol peer: its own
// ECDSA key, a certificate from enrollment with a token, its own mTLS gRPC
// connection and Connect stream, heartbeats at the interval the controller
// asks for, acks for directives, armed/cancelled capture statuses, and
// trigger events with 10-frame stacks while a capture is armed. Only the
// Windows machine behind it is missing.
//
// Past about 28k connections one loopback source address runs out of
// ephemeral ports, so connections are spread over SourceIPs (127.0.0.x).
//
// Given several controllers (replicas), each agent starts on one of them
// and moves on to the next when a connection attempt fails, as the real
// agent does with its list of controllers.
package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/agent/session"
	"github.com/livedump/livedump/internal/atomicfile"
	"github.com/livedump/livedump/internal/backoff"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Config configures a Fleet.
type Config struct {
	Controller string         // host:port; ignored when Controllers is set
	ServerName string         // TLS server name; default the host of the address dialled
	CA         *x509.CertPool // the controller's CA
	Token      string         // enrollment token for agents without an identity
	Agents     int
	// Controllers are several replicas' host:port. Agent i starts on
	// Controllers[i mod n], as a fleet spread by DNS or a load balancer.
	// Like the real agent, it reconnects to the same controller after an
	// established stream ends and moves on to the next one after a failed
	// attempt; half the agents go round the list one way and half the
	// other, so the agents of a replica that fails spread over the others.
	Controllers []string
	// SourceIPs are local addresses to dial from, round-robin; empty: any.
	SourceIPs []net.IP
	// Concurrency bounds enrollments and first connections in flight.
	Concurrency int
	// EventRate is trigger events per second per armed agent (0: none).
	EventRate float64
	// EventInterval is how often an agent sends the events that fired
	// since the last time (default 250 ms, never less than one event's
	// interval): several go as one EventBatch when the controller takes
	// batches, as the real agent sends what its spool holds.
	EventInterval time.Duration
	// StateFile keeps identities between runs (JSON lines); empty: memory.
	StateFile string
	// BackoffMin and BackoffMax bound reconnect backoff (jittered).
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
	// Hostname prefix of the simulated machines.
	HostPrefix string
}

// Identity is an enrolled agent's key and certificate.
type Identity struct {
	AgentID string   `json:"agent_id"`
	Key     []byte   `json:"key"`   // PKCS#8 DER
	Chain   [][]byte `json:"chain"` // DER, leaf first
}

// Fleet is a set of simulated agents.
type Fleet struct {
	cfg    Config
	agents []*agent

	connected atomic.Int64
	events    atomic.Int64 // sent
	acked     atomic.Int64 // acknowledged by the controller
	reconnect atomic.Int64
	failures  atomic.Int64 // stream attempts that failed

	mu   sync.Mutex
	arms map[string][]time.Time // capture -> when each agent received its arm
}

type agent struct {
	f    *Fleet
	i    int
	id   *Identity
	cert tls.Certificate
	src  net.IP

	mu    sync.Mutex
	armed map[string]*livedumpv1.ArmCapture
	sent  map[string]int // events sent per capture
	up    bool
	seen  bool // connected at least once
}

// New returns a Fleet, loading identities from the state file if any.
func New(cfg Config) (*Fleet, error) {
	if cfg.Agents <= 0 {
		return nil, errors.New("agents: must be at least 1")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 500 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EventInterval <= 0 {
		cfg.EventInterval = 250 * time.Millisecond
	}
	if cfg.HostPrefix == "" {
		cfg.HostPrefix = "LOAD"
	}
	if len(cfg.Controllers) == 0 {
		cfg.Controllers = []string{cfg.Controller}
	}
	for _, c := range cfg.Controllers {
		if _, _, err := net.SplitHostPort(c); err != nil {
			return nil, fmt.Errorf("controller %q: %w", c, err)
		}
	}
	f := &Fleet{cfg: cfg, arms: map[string][]time.Time{}}
	ids, err := loadIdentities(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Agents {
		a := &agent{f: f, i: i, armed: map[string]*livedumpv1.ArmCapture{}, sent: map[string]int{}}
		if len(cfg.SourceIPs) > 0 {
			a.src = cfg.SourceIPs[i%len(cfg.SourceIPs)]
		}
		if i < len(ids) {
			if err := a.setIdentity(ids[i]); err != nil {
				return nil, fmt.Errorf("state file identity %d: %w", i, err)
			}
		}
		f.agents = append(f.agents, a)
	}
	return f, nil
}

func loadIdentities(path string) ([]*Identity, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []*Identity
	if err := json.Unmarshal(b, &ids); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return ids, nil
}

func (a *agent) setIdentity(id *Identity) error {
	key, err := x509.ParsePKCS8PrivateKey(id.Key)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(id.Chain[0])
	if err != nil {
		return err
	}
	a.id = id
	a.cert = tls.Certificate{Certificate: id.Chain, PrivateKey: key, Leaf: leaf}
	return nil
}

// save writes every identity to the state file.
func (f *Fleet) save() error {
	if f.cfg.StateFile == "" {
		return nil
	}
	ids := make([]*Identity, 0, len(f.agents))
	for _, a := range f.agents {
		if a.id == nil {
			break
		}
		ids = append(ids, a.id)
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	return atomicfile.Write(f.cfg.StateFile, b, 0o600)
}

// dialer dials from the agent's source address.
func (a *agent) dialer() func(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 20 * time.Second}
	if a.src != nil {
		d.LocalAddr = &net.TCPAddr{IP: a.src}
	}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

func (f *Fleet) dialOptions(a *agent, withCert bool) []grpc.DialOption {
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: f.cfg.CA, ServerName: f.cfg.ServerName}
	if withCert {
		tc.Certificates = []tls.Certificate{a.cert}
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(a.dialer()),
		// As the real agent: the controller drives keepalive, this one
		// fires only when the controller has gone silent.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: session.ClientKeepaliveTime, Timeout: 20 * time.Second, PermitWithoutStream: true}),
		// Thousands of idle connections in one process: small buffers.
		grpc.WithReadBufferSize(4 << 10), grpc.WithWriteBufferSize(4 << 10), grpc.WithSharedWriteBuffer(true),
		// As the real agent: gRPC's own reconnect backoff within the
		// connect loop's bounds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: f.cfg.BackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: f.cfg.BackoffMax},
			MinConnectTimeout: 20 * time.Second,
		}),
		// As the real agent: fixed windows, no BDP pings.
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(8 << 20),
	}
}

// EnrollStats is what Enroll measured.
type EnrollStats struct {
	Enrolled int
	Took     time.Duration
	PerSec   float64
}

// Enroll enrolls every agent that has no identity yet, Concurrency at a
// time, and saves the identities.
func (f *Fleet) Enroll(ctx context.Context) (EnrollStats, error) {
	var todo []*agent
	for _, a := range f.agents {
		if a.id == nil {
			todo = append(todo, a)
		}
	}
	if len(todo) == 0 {
		return EnrollStats{}, nil
	}
	if f.cfg.Token == "" {
		return EnrollStats{}, fmt.Errorf("token: %d agents have no identity and no token was given", len(todo))
	}
	start := time.Now()
	// One TLS connection per worker, reused: enrollment needs no client
	// certificate, and the figure is the controller's token + CSR rate.
	workers := min(f.cfg.Concurrency, len(todo))
	work := make(chan *agent)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc, err := grpc.NewClient(f.cfg.Controllers[w%len(f.cfg.Controllers)], f.dialOptions(f.agents[w%len(f.agents)], false)...)
			if err != nil {
				errs <- err
				return
			}
			defer cc.Close()
			client := livedumpv1.NewAgentServiceClient(cc)
			for a := range work {
				if err := a.enroll(ctx, client); err != nil {
					errs <- fmt.Errorf("agent %d: %w", a.i, err)
					return
				}
			}
		}()
	}
	var firstErr error
feed:
	for _, a := range todo {
		select {
		case work <- a:
		case firstErr = <-errs:
			break feed
		case <-ctx.Done():
			firstErr = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		select {
		case firstErr = <-errs:
		default:
		}
	}
	took := time.Since(start)
	n := 0
	for _, a := range todo {
		if a.id != nil {
			n++
		}
	}
	if err := f.save(); err != nil && firstErr == nil {
		firstErr = err
	}
	return EnrollStats{Enrolled: n, Took: took, PerSec: float64(n) / took.Seconds()}, firstErr
}

func (a *agent) enroll(ctx context.Context, client livedumpv1.AgentServiceClient) error {
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := client.Enroll(rctx, &livedumpv1.EnrollRequest{Token: a.f.cfg.Token, Csr: csr, Inventory: a.inventory()})
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return a.setIdentity(&Identity{AgentID: resp.GetAgentId(), Key: der, Chain: resp.GetCertificateChain()})
}

func (a *agent) inventory() *livedumpv1.Inventory {
	return &livedumpv1.Inventory{
		Hostname: fmt.Sprintf("%s-%05d", a.f.cfg.HostPrefix, a.i), OsBuild: "22631", OsUbr: 4460, OsEdition: "Enterprise",
		OsProductName: "Windows 11 Enterprise", OsInstallationType: "Client", Arch: "amd64", AgentVersion: "loadgen",
	}
}

// Run keeps every enrolled agent's stream up until ctx ends. First
// connections are opened Concurrency at a time; after that each agent
// reconnects on its own with jittered backoff, as the real agent does.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, f.cfg.Concurrency)
	for _, a := range f.agents {
		if a.id == nil {
			return fmt.Errorf("agent %d is not enrolled", a.i)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.run(ctx, sem)
		}()
	}
	wg.Wait()
	return nil
}

func (a *agent) run(ctx context.Context, first chan struct{}) {
	release := func() {
		if first != nil {
			<-first
			first = nil
		}
	}
	defer release()
	// One connection at a time, to the controller being tried: unlike the
	// real agent, which keeps one per address, a process holding thousands
	// of agents cannot afford idle sockets.
	var (
		cc     *grpc.ClientConn
		ccAddr string
		client livedumpv1.AgentServiceClient
	)
	defer func() {
		if cc != nil {
			cc.Close()
		}
	}()
	retry := backoff.New(backoff.Policy{Min: a.f.cfg.BackoffMin, Max: a.f.cfg.BackoffMax, Jitter: true})
	for try := 0; ctx.Err() == nil; {
		if addr := a.controller(try); cc == nil || addr != ccAddr {
			if cc != nil {
				cc.Close()
			}
			var err error
			if cc, err = grpc.NewClient(addr, a.f.dialOptions(a, true)...); err != nil {
				a.f.cfg.Logger.Error("loadgen client", "agent", a.i, "err", err)
				return
			}
			ccAddr, client = addr, livedumpv1.NewAgentServiceClient(cc)
		}
		established := a.stream(ctx, client, release)
		release()
		if ctx.Err() != nil {
			return
		}
		if established {
			retry.Reset() // the same controller first, as the real agent
		} else {
			a.f.failures.Add(1)
			try++ // the next controller
		}
		d := retry.NextBackOff()
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// controller is the address of this agent's try-th attempt: agent i starts
// on controller i mod n, then even rounds of n agents go round the list
// forwards and odd ones backwards.
func (a *agent) controller(try int) string {
	cs := a.f.cfg.Controllers
	n := len(cs)
	step := 1
	if (a.i/n)%2 == 1 {
		step = n - 1
	}
	return cs[(a.i%n+(try%n)*step)%n]
}

// stream runs one Connect stream; it reports whether the controller
// welcomed it.
func (a *agent) stream(ctx context.Context, client livedumpv1.AgentServiceClient, welcomed func()) bool {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Connect(sctx)
	if err != nil {
		return false
	}
	// As the real agent: every goroutine sends under one lock, replies to
	// a directive straight from the receiving goroutine.
	var sendMu sync.Mutex
	send := func(m *livedumpv1.ConnectRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return st.Send(m)
	}
	if err := st.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: a.id.AgentID, Inventory: a.inventory()}}}); err != nil {
		return false
	}
	m, err := st.Recv()
	if err != nil || m.GetWelcome() == nil {
		return false
	}
	interval := 30 * time.Second
	if w := m.GetWelcome().GetHeartbeatInterval(); w != nil && w.AsDuration() > 0 {
		interval = w.AsDuration()
	}
	maxBatch := int(m.GetWelcome().GetMaxEventBatch())
	a.setUp(true)
	defer a.setUp(false)
	welcomed()

	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if ack := m.GetEventAck(); ack != nil {
				a.f.acked.Add(int64(len(ack.GetEventIds())))
			}
			if d := m.GetDirective(); d != nil {
				for _, r := range a.directive(d) {
					if err := send(r); err != nil {
						recvErr <- err
						return
					}
				}
			}
		}
	}()
	// Heartbeats and events.
	hb := time.NewTicker(jitter(interval))
	defer hb.Stop()
	var evC <-chan time.Time
	every := a.f.cfg.EventInterval
	if a.f.cfg.EventRate > 0 {
		every = max(every, time.Duration(float64(time.Second)/a.f.cfg.EventRate))
		t := time.NewTicker(every)
		defer t.Stop()
		evC = t.C
	}
	due := 0.0 // events fired and not sent yet, with the fraction of the next
	for {
		select {
		case <-sctx.Done():
			return true
		case <-recvErr:
			return true
		case <-hb.C:
			if send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Heartbeat{Heartbeat: &livedumpv1.Heartbeat{SentAt: timestamppb.Now()}}}) != nil {
				return true
			}
		case <-evC:
			due += a.f.cfg.EventRate * every.Seconds()
			var evs []*livedumpv1.TriggerEvent
			for ; due >= 1; due-- {
				ev := a.event()
				if ev == nil {
					due = 0 // nothing armed (or every cap reached): nothing fired
					break
				}
				evs = append(evs, ev)
			}
			if a.sendEvents(send, evs, maxBatch) != nil {
				return true
			}
		}
	}
}

// sendEvents sends events as batches of up to maxBatch, or one by one to a
// controller that takes no batches (maxBatch 0).
func (a *agent) sendEvents(send func(*livedumpv1.ConnectRequest) error, evs []*livedumpv1.TriggerEvent, maxBatch int) error {
	for len(evs) > 0 {
		var m *livedumpv1.ConnectRequest
		n := 1
		if maxBatch > 1 && len(evs) > 1 {
			n = min(len(evs), maxBatch)
			m = &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_EventBatch{EventBatch: &livedumpv1.EventBatch{Events: evs[:n]}}}
		} else {
			m = &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: evs[0]}}
		}
		if err := send(m); err != nil {
			return err
		}
		a.f.events.Add(int64(n))
		evs = evs[n:]
	}
	return nil
}

// jitter spreads the agents' heartbeats over the interval's first tick.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(mrand.Int64N(int64(d)/4+1))
}

func (a *agent) setUp(up bool) {
	a.mu.Lock()
	was, seen := a.up, a.seen
	a.up = up
	if up {
		a.seen = true
	}
	a.mu.Unlock()
	switch {
	case up && !was:
		a.f.connected.Add(1)
		if seen {
			a.f.reconnect.Add(1)
		}
	case !up && was:
		a.f.connected.Add(-1)
	}
}

// directive answers a directive as the real agent does: an ack, and the
// capture's new state.
func (a *agent) directive(d *livedumpv1.Directive) []*livedumpv1.ConnectRequest {
	out := []*livedumpv1.ConnectRequest{{Msg: &livedumpv1.ConnectRequest_Ack{Ack: &livedumpv1.Ack{DirectiveId: d.GetId()}}}}
	switch k := d.GetKind().(type) {
	case *livedumpv1.Directive_Arm:
		id := k.Arm.GetCaptureId()
		a.f.armed(id)
		a.mu.Lock()
		a.armed[id] = k.Arm
		a.mu.Unlock()
		out = append(out, &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_CaptureStatus{CaptureStatus: &livedumpv1.CaptureStatus{
			CaptureId: id, State: livedumpv1.TargetState_TARGET_STATE_ARMED}}})
	case *livedumpv1.Directive_Disarm:
		id := k.Disarm.GetCaptureId()
		a.mu.Lock()
		delete(a.armed, id)
		a.mu.Unlock()
		out = append(out, &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_CaptureStatus{CaptureStatus: &livedumpv1.CaptureStatus{
			CaptureId: id, State: livedumpv1.TargetState_TARGET_STATE_CANCELLED, Detail: k.Disarm.GetReason()}}})
	}
	return out
}

var frames = func() []*livedumpv1.Frame {
	fns := []string{"NtCreateFile", "CreateFileW", "CreateFileInternal", "FileStream::Open", "Storage::OpenBlob",
		"Cache::Load", "Teams::LoadProfile", "Teams::Start", "wWinMain", "RtlUserThreadStart"}
	mods := []string{"ntdll.dll", "KERNELBASE.dll", "KERNELBASE.dll", "ms-teams.exe", "ms-teams.exe",
		"ms-teams.exe", "ms-teams.exe", "ms-teams.exe", "ms-teams.exe", "ntdll.dll"}
	out := make([]*livedumpv1.Frame, len(fns))
	for i := range fns {
		out[i] = &livedumpv1.Frame{Module: mods[i], Function: fns[i], Offset: uint64(0x10 * (i + 1)), Address: 0x7ffd_0000_0000 + uint64(i)*0x1000}
	}
	return out
}()

// event is the next trigger event of an armed capture, within its cap.
func (a *agent) event() *livedumpv1.TriggerEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, arm := range a.armed {
		if c := arm.GetPerAgentCap(); c > 0 && a.sent[id] >= int(c) {
			continue
		}
		a.sent[id]++
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return &livedumpv1.TriggerEvent{
			Id: hex.EncodeToString(b), CaptureId: id, AgentId: a.id.AgentID, Time: timestamppb.Now(),
			Pid: 4242, Tid: 4243, Process: "ms-teams.exe", Probe: "syscall::NtCreateFile:return", Status: 0xC000000D,
			UserFrames: frames,
		}
	}
	return nil
}

func (f *Fleet) armed(captureID string) {
	f.mu.Lock()
	f.arms[captureID] = append(f.arms[captureID], time.Now())
	f.mu.Unlock()
}

// Stats is a snapshot of the fleet.
type Stats struct {
	Agents      int   `json:"agents"`
	Connected   int64 `json:"connected"`
	EventsSent  int64 `json:"events_sent"`
	EventsAcked int64 `json:"events_acked"`
	Reconnects  int64 `json:"reconnects"`
	FailedDials int64 `json:"failed_attempts"`
}

// Stats returns the current counters.
func (f *Fleet) Stats() Stats {
	return Stats{Agents: len(f.agents), Connected: f.connected.Load(), EventsSent: f.events.Load(), EventsAcked: f.acked.Load(),
		Reconnects: f.reconnect.Load(), FailedDials: f.failures.Load()}
}

// ArmedCaptures returns the captures some agent has received an arm for.
func (f *Fleet) ArmedCaptures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.arms))
	for id := range f.arms {
		ids = append(ids, id)
	}
	return ids
}

// ArmTimes returns when each agent received its arm for a capture.
func (f *Fleet) ArmTimes(captureID string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.arms[captureID])
}

// WaitConnected waits until n agents are connected, or ctx ends.
func (f *Fleet) WaitConnected(ctx context.Context, n int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for f.connected.Load() < int64(n) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d agents connected: %w", f.connected.Load(), n, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Percentile returns the p-th percentile (0-100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
