// Command livedump-loadgen runs thousands of simulated agents against a
// controller, each a real mTLS gRPC peer, and measures what SREs ask about:
// enrollment rate, connections held, directive fan-out, reconnect storms and
// event ingest. It prints one JSON line per result on stdout.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/loadgen"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot(ctx, os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "livedump-loadgen: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	controller, ca, serverName, token, state, sourceIPs string
	operatorCert, operatorKey                           string
	agents, concurrency                                 int
	eventRate                                           float64
	eventInterval                                       time.Duration
	selector, cpuProfile                                string
}

func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:   "livedump-loadgen",
		Short: "Simulate a fleet of agents against a controller and measure it",
		Long: `livedump-loadgen runs --agents simulated agents in one process. Each has its own
key and certificate (enrolled once with --token, then kept in --state) and its own mTLS
gRPC stream. Results are JSON lines on stdout; progress goes to stderr.

One process holds a little under the open-file limit in connections (20k on the
reference machine): run several processes for more. Spread connections over
--source-ips past about 28k per address.

--controller takes several replicas' addresses, a,b,c: agent i starts on the
(i mod n)-th and, when an attempt fails, moves on to the next, as the real agent
does with its list of controllers. Captures are created through the first.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	f := root.PersistentFlags()
	f.StringVar(&o.controller, "controller", "127.0.0.1:7443", "controller address, or several replicas' as a comma list")
	f.StringVar(&o.ca, "ca", "", "controller CA certificate (PEM)")
	f.StringVar(&o.serverName, "server-name", "", "TLS server name (default: the controller's host)")
	f.StringVar(&o.token, "token", "", "enrollment token for agents not yet in --state")
	f.StringVar(&o.state, "state", "", "file keeping the agents' identities between runs")
	f.StringVar(&o.sourceIPs, "source-ips", "", "local addresses to dial from: 127.0.0.2-127.0.0.9 or a comma list")
	f.IntVar(&o.agents, "agents", 1000, "number of simulated agents")
	f.IntVar(&o.concurrency, "concurrency", 64, "enrollments and first connections in flight")
	f.Float64Var(&o.eventRate, "event-rate", 0, "trigger events per second per armed agent")
	f.DurationVar(&o.eventInterval, "event-interval", 250*time.Millisecond, "how often an agent sends the events fired since the last time (as one batch when the controller takes batches)")
	f.StringVar(&o.operatorCert, "operator-cert", "", "operator certificate, for scenarios that create captures")
	f.StringVar(&o.operatorKey, "operator-key", "", "operator key")
	f.StringVar(&o.selector, "selector", "fleet=loadgen", "label selector of the simulated agents (their token's labels)")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to the file (for benchmarks)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if o.cpuProfile == "" {
			return nil
		}
		pf, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		return pprof.StartCPUProfile(pf)
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if o.cpuProfile != "" {
			pprof.StopCPUProfile()
		}
	}

	out := json.NewEncoder(stdout)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	progress := func(format string, args ...any) { fmt.Fprintf(stderr, "loadgen: "+format+"\n", args...) }

	fleet := func() (*loadgen.Fleet, error) {
		pool, err := caPool(o.ca)
		if err != nil {
			return nil, err
		}
		ips, err := parseIPs(o.sourceIPs)
		if err != nil {
			return nil, err
		}
		return loadgen.New(loadgen.Config{
			Controllers: controllers(o.controller), ServerName: o.serverName, CA: pool, Token: o.token, Agents: o.agents,
			SourceIPs: ips, Concurrency: o.concurrency, EventRate: o.eventRate, EventInterval: o.eventInterval, StateFile: o.state, Logger: log,
		})
	}
	// connected enrolls what is missing, starts the fleet and waits for
	// every stream.
	connected := func(ctx context.Context) (*loadgen.Fleet, time.Duration, func(), error) {
		fl, err := fleet()
		if err != nil {
			return nil, 0, nil, err
		}
		if st, err := fl.Enroll(ctx); err != nil {
			return nil, 0, nil, err
		} else if st.Enrolled > 0 {
			progress("enrolled %d agents in %s (%.0f/s)", st.Enrolled, st.Took.Round(time.Millisecond), st.PerSec)
		}
		// The streams outlive a signal until the scenario stops them, so
		// that its last figures (hold's connected count) are taken first.
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		start := time.Now()
		go func() { defer close(done); _ = fl.Run(rctx) }()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Minute)
		defer wcancel()
		if err := fl.WaitConnected(wctx, o.agents); err != nil {
			cancel()
			<-done
			return nil, 0, nil, err
		}
		took := time.Since(start)
		progress("%d agents connected in %s", o.agents, took.Round(time.Millisecond))
		return fl, took, func() { cancel(); <-done }, nil
	}

	enroll := &cobra.Command{
		Use:   "enroll",
		Short: "Enroll every agent not in --state and report the rate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl, err := fleet()
			if err != nil {
				return err
			}
			st, err := fl.Enroll(ctx)
			if err != nil {
				return err
			}
			return out.Encode(map[string]any{"scenario": "enroll", "agents": o.agents, "enrolled": st.Enrolled,
				"seconds": st.Took.Seconds(), "per_second": round(st.PerSec)})
		},
	}

	var holdFor time.Duration
	hold := &cobra.Command{
		Use:   "hold",
		Short: "Connect every agent and hold the streams (idle, heartbeating) for --duration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl, took, stop, err := connected(ctx)
			if err != nil {
				return err
			}
			defer stop()
			if err := out.Encode(map[string]any{"scenario": "connected", "agents": o.agents, "seconds": took.Seconds()}); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
			case <-time.After(holdFor):
			}
			st := fl.Stats()
			return out.Encode(map[string]any{"scenario": "hold", "agents": o.agents, "connected": st.Connected, "reconnects": st.Reconnects})
		},
	}
	hold.Flags().DurationVar(&holdFor, "duration", time.Minute, "how long to hold the streams")

	var rounds int
	var follow, latencies bool
	// fanoutResult is one round's line; with --latencies it carries every
	// agent's figure, so that the lines of several processes can be merged.
	var cpu0 float64 // the load generator's CPU seconds when the rounds began
	fanoutResult := func(r int, id string, lat []time.Duration) error {
		res := map[string]any{"scenario": "fanout", "round": r + 1, "agents": o.agents, "armed": len(lat),
			"p50_ms": ms(loadgen.Percentile(lat, 50)), "p99_ms": ms(loadgen.Percentile(lat, 99)), "max_ms": ms(loadgen.Percentile(lat, 100)),
			"loadgen_cpu_s": float64(int64((cpuSeconds()-cpu0)*100+0.5)) / 100}
		if follow {
			res["capture"] = id
		}
		if latencies {
			all := make([]float64, len(lat))
			for i, d := range lat {
				all[i] = ms(d)
			}
			res["latencies_ms"] = all
		}
		return out.Encode(res)
	}
	fanout := &cobra.Command{
		Use:   "fanout",
		Short: "Create a capture for every agent and time each agent's arm directive",
		Long: `fanout connects every agent, creates --rounds captures one after the other and
times each agent's arm directive from the creation.

With --follow it creates nothing: it times the arms of the next --rounds captures
someone else creates (another process, livedumpctl), from the creation time the
controller recorded; several processes holding one fleet each follow, and their
--latencies are merged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			op, err := operator(o)
			if err != nil {
				return err
			}
			fl, _, stop, err := connected(ctx)
			if err != nil {
				return err
			}
			defer stop()
			cpu0 = cpuSeconds()
			if follow {
				return followCaptures(ctx, fl, op, o.agents, rounds, fanoutResult)
			}
			for r := range rounds {
				start := time.Now()
				resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
					Selector: o.selector, Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
					Expire: durationpb.New(time.Hour),
				}, Force: true}) // simulated agents report no provisioning state
				if err != nil {
					return fmt.Errorf("create capture: %w", err)
				}
				id := resp.GetCapture().GetId()
				deadline := time.Now().Add(2 * time.Minute)
				for len(fl.ArmTimes(id)) < o.agents && time.Now().Before(deadline) && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				var lat []time.Duration
				for _, t := range fl.ArmTimes(id) {
					lat = append(lat, t.Sub(start))
				}
				if _, err := op.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: id}); err != nil {
					return fmt.Errorf("cancel capture: %w", err)
				}
				if err := fanoutResult(r, id, lat); err != nil {
					return err
				}
				time.Sleep(2 * time.Second) // let the disarms settle
			}
			return nil
		},
	}
	fanout.Flags().IntVar(&rounds, "rounds", 3, "captures to create, one after the other")
	fanout.Flags().BoolVar(&follow, "follow", false, "create no capture: time the arms of captures created elsewhere")
	fanout.Flags().BoolVar(&latencies, "latencies", false, "also print every agent's create → arm time (ms)")

	var stormTimeout time.Duration
	storm := &cobra.Command{
		Use:   "storm",
		Short: "Hold every stream; when the controller goes away and comes back, time the reconnection",
		Long: `storm connects every agent, prints {"scenario":"ready"}, then waits for the
streams to drop (restart the controller now) and for every agent to be back. It
reports the time from the first drop to the last reconnection and how many agents
were not back within --timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl, _, stop, err := connected(ctx)
			if err != nil {
				return err
			}
			defer stop()
			if err := out.Encode(map[string]any{"scenario": "ready", "agents": o.agents}); err != nil {
				return err
			}
			for fl.Stats().Connected == int64(o.agents) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(5 * time.Millisecond)
			}
			dropped := time.Now()
			progress("streams dropping; waiting for %d agents to come back", o.agents)
			low := fl.Stats().Connected
			for fl.Stats().Connected < int64(o.agents) && time.Since(dropped) < stormTimeout && ctx.Err() == nil {
				low = min(low, fl.Stats().Connected)
				time.Sleep(10 * time.Millisecond)
			}
			st := fl.Stats()
			return out.Encode(map[string]any{"scenario": "storm", "agents": o.agents, "lowest_connected": low,
				"back": st.Connected, "not_back": int64(o.agents) - st.Connected, "seconds": time.Since(dropped).Seconds(),
				"failed_attempts": st.FailedDials})
		},
	}
	storm.Flags().DurationVar(&stormTimeout, "timeout", 2*time.Minute, "how long agents have to come back")

	var ingestFor time.Duration
	var perAgentCap int
	ingest := &cobra.Command{
		Use:   "ingest",
		Short: "Arm a capture on every agent and send trigger events at --event-rate; report events/s stored",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.eventRate <= 0 {
				return errors.New("event-rate: must be above 0 for ingest")
			}
			op, err := operator(o)
			if err != nil {
				return err
			}
			fl, _, stop, err := connected(ctx)
			if err != nil {
				return err
			}
			defer stop()
			resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
				Selector: o.selector, Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
				Expire: durationpb.New(time.Hour), PerAgentCap: uint32(perAgentCap), Ustack: 10,
			}, Force: true}) // simulated agents report no provisioning state
			if err != nil {
				return fmt.Errorf("create capture: %w", err)
			}
			id := resp.GetCapture().GetId()
			for len(fl.ArmTimes(id)) < o.agents && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			// Warm up, then measure acknowledged (stored) events.
			time.Sleep(2 * time.Second)
			a0, s0, t0 := fl.Stats().EventsAcked, fl.Stats().EventsSent, time.Now()
			select {
			case <-ctx.Done():
			case <-time.After(ingestFor):
			}
			a1, s1, el := fl.Stats().EventsAcked, fl.Stats().EventsSent, time.Since(t0)
			_, _ = op.CancelCapture(context.WithoutCancel(ctx), &livedumpv1.CancelCaptureRequest{Id: id})
			return out.Encode(map[string]any{"scenario": "ingest", "agents": o.agents, "seconds": el.Seconds(),
				"sent_per_second": round(float64(s1-s0) / el.Seconds()), "stored_per_second": round(float64(a1-a0) / el.Seconds())})
		},
	}
	ingest.Flags().DurationVar(&ingestFor, "duration", 20*time.Second, "measurement window")
	ingest.Flags().IntVar(&perAgentCap, "per-agent-cap", 0, "events per agent (0: the controller's default)")

	root.AddCommand(enroll, hold, fanout, storm, ingest)
	return root
}

// followCaptures times, for each of rounds captures created elsewhere, every
// agent's arm from the capture's creation as the controller recorded it.
func followCaptures(ctx context.Context, fl *loadgen.Fleet, op livedumpv1.FleetServiceClient, agents, rounds int,
	result func(r int, id string, lat []time.Duration) error) error {
	seen := map[string]bool{}
	for _, id := range fl.ArmedCaptures() {
		seen[id] = true
	}
	for r := range rounds {
		id := ""
		for id == "" {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(10 * time.Millisecond)
			for _, c := range fl.ArmedCaptures() {
				if !seen[c] {
					id = c
				}
			}
		}
		seen[id] = true
		resp, err := op.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: id})
		if err != nil {
			return fmt.Errorf("get capture %s: %w", id, err)
		}
		created := resp.GetCapture().GetCreated().AsTime()
		deadline := time.Now().Add(2 * time.Minute)
		for len(fl.ArmTimes(id)) < agents && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		var lat []time.Duration
		for _, t := range fl.ArmTimes(id) {
			lat = append(lat, t.Sub(created))
		}
		if err := result(r, id, lat); err != nil {
			return err
		}
	}
	return nil
}

// controllers splits a comma list of addresses.
func controllers(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func round(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func ms(d time.Duration) float64 { return round(float64(d) / float64(time.Millisecond)) }

func caPool(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, errors.New("ca: required (the controller's ca.crt)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ca: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// parseIPs reads "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3".
func parseIPs(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, b := net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
		if a == nil || b == nil || a[0] != 127 || b[0] != 127 || !(a[0] == b[0] && a[1] == b[1] && a[2] == b[2]) || a[3] > b[3] {
			return nil, fmt.Errorf("source-ips %q: want a loopback range within one /24, e.g. 127.0.0.2-127.0.0.9", s)
		}
		var out []net.IP
		for i := int(a[3]); i <= int(b[3]); i++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(i)))
		}
		return out, nil
	}
	var out []net.IP
	for _, p := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(p))
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("source-ips: %q is not a loopback address", p)
		}
		out = append(out, ip)
	}
	return out, nil
}

func operator(o *options) (livedumpv1.FleetServiceClient, error) {
	if o.operatorCert == "" || o.operatorKey == "" {
		return nil, errors.New("operator-cert and operator-key: required for this scenario (livedump-controller issue-operator, or the dev data dir's dev-admin.crt/.key)")
	}
	cert, err := tls.LoadX509KeyPair(o.operatorCert, o.operatorKey)
	if err != nil {
		return nil, fmt.Errorf("operator-cert: %w", err)
	}
	pool, err := caPool(o.ca)
	if err != nil {
		return nil, err
	}
	addr := o.controller
	if cs := controllers(addr); len(cs) > 0 {
		addr = cs[0]
	}
	name := o.serverName
	if name == "" {
		name, _, _ = net.SplitHostPort(addr)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: name, Certificates: []tls.Certificate{cert},
	})))
	if err != nil {
		return nil, err
	}
	return livedumpv1.NewFleetServiceClient(cc), nil
}
