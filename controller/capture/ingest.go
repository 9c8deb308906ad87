package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// DefaultSignatureFrames is how many top user frames make a stack
// signature.
const DefaultSignatureFrames = 5

// Signature groups events by where they happened, for buckets and for the
// per-signature dump quota. It is made to stay useful on the stacks real
// Windows machines give (poorer than textbook ones: one-frame, empty or
// unresolved user stacks, DTrace-on-Windows issue #19,
// https://github.com/microsoft/DTrace-on-Windows/issues/19):
//
//   - A symbolized frame is module!function, without its offset (offsets
//     differ between builds of one module).
//   - A frame whose module is known but not its symbol (module`0xaddr) is
//     module!?+0xNNNN, the low 16 bits of its address: Windows loads
//     images 64 KiB aligned, so those bits are the same on every machine
//     and process running the same build, while the address is not (ASLR).
//   - A frame with only an address (JIT code, or the process exited before
//     dtrace symbolized its stack) is <unresolved>; a run of them is one
//     token, and does not count as one of the frames.
//   - Up to frames counted frames are taken, innermost first.
//
// A stack with at least two counted frames and a symbolized or
// module-known innermost frame is signed by them alone (the form of
// fully symbolized stacks, unchanged). Any other is qualified, never
// thrown into one bucket of "no frames": by the probe, the user frames
// there are (or "no user frames"), the process when fewer than two
// frames are counted, and the kernel frames, e.g.
//
//	NtCreateFile:return in ms-teams.exe: no user frames | nt!KiSystemServiceCopyEnd
//	NtCreateFile:return in ms-teams.exe: ntdll!NtCreateFile | nt!KiSystemServiceCopyEnd
//	NtCreateFile:return: <unresolved> < ms-teams!WorkerThread::Run < KERNEL32!BaseThreadInitThunk
//
// The process is compared case-insensitively (lower case here). The
// signature is valid UTF-8 whatever the frames hold.
func Signature(ev *livedumpv1.TriggerEvent, frames int) string {
	if frames <= 0 {
		frames = DefaultSignatureFrames
	}
	user, counted := signatureTokens(ev.GetUserFrames(), frames)
	if counted >= 2 && user[0] != unresolvedToken {
		return strings.ToValidUTF8(strings.Join(user, " < "), "\uFFFD")
	}
	var b strings.Builder
	b.WriteString(ev.GetProbe())
	if counted < 2 {
		b.WriteString(" in ")
		b.WriteString(strings.ToLower(ev.GetProcess()))
	}
	b.WriteString(": ")
	switch {
	case len(user) > 0:
		b.WriteString(strings.Join(user, " < "))
	case len(ev.GetUserFrames()) == 0:
		b.WriteString("no user frames")
	default:
		b.WriteString(unresolvedToken)
	}
	if kernel, _ := signatureTokens(ev.GetKernelFrames(), frames); len(kernel) > 0 {
		b.WriteString(" | ")
		b.WriteString(strings.Join(kernel, " < "))
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

// unresolvedToken stands for one or more frames that are only an address.
const unresolvedToken = "<unresolved>"

// signatureTokens normalises frames (see Signature) until limit of them
// are counted; runs of bare addresses become one uncounted token, and a
// trailing one is dropped.
func signatureTokens(fs []*livedumpv1.Frame, limit int) (tokens []string, counted int) {
	for _, f := range fs {
		if counted == limit {
			break
		}
		switch {
		case f.GetFunction() != "":
			tokens = append(tokens, f.GetModule()+"!"+f.GetFunction())
			counted++
		case f.GetModule() != "":
			tokens = append(tokens, fmt.Sprintf("%s!?+0x%04x", f.GetModule(), f.GetAddress()&0xffff))
			counted++
		case len(tokens) == 0 || tokens[len(tokens)-1] != unresolvedToken:
			tokens = append(tokens, unresolvedToken)
		}
	}
	if n := len(tokens); n > 0 && tokens[n-1] == unresolvedToken && counted > 0 {
		tokens = tokens[:n-1]
	}
	return tokens, counted
}

// Ingest queues an event from an agent's stream. It blocks when the queue is
// full, which slows that agent's stream down instead of buffering without
// bound. An event over the agent's rate or over the size limits is refused
// here, so only its IDs are queued, for the acknowledgement.
func (m *Manager) Ingest(ctx context.Context, s *fleet.Session, agentID string, ev *livedumpv1.TriggerEvent) error {
	it := ingest{agentID: agentID, ev: ev, sess: s}
	if !m.limits.allow(agentID, m.cfg.Clock.Now()) {
		it.refused = &refusal{RefusedRateLimited, fmt.Sprintf("agent %s sent more than %g events a second (burst %d)", agentID, m.cfg.EventRate, m.cfg.EventBurst)}
	} else {
		it.refused = checkEvent(agentID, ev)
	}
	if it.refused != nil {
		it.ev = &livedumpv1.TriggerEvent{Id: ev.GetId(), CaptureId: truncate(ev.GetCaptureId(), 64)}
	}
	select {
	case m.in <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Manager) ingestLoop(ctx context.Context) {
	for {
		var batch []ingest
		select {
		case <-ctx.Done():
			return
		case it := <-m.in:
			batch = append(batch, it)
		}
		deadline := time.NewTimer(m.cfg.BatchDelay)
	fill:
		for len(batch) < m.cfg.BatchSize {
			select {
			case it := <-m.in:
				batch = append(batch, it)
			case <-deadline.C:
				break fill
			}
		}
		deadline.Stop()
		m.flush(context.WithoutCancel(ctx), batch)
	}
}

type frameJSON struct {
	Module   string `json:"module,omitempty"`
	Function string `json:"function,omitempty"`
	Offset   uint64 `json:"offset,omitempty"`
	Address  uint64 `json:"address,omitempty"`
}

func framesJSON(fs []*livedumpv1.Frame) string {
	out := make([]frameJSON, 0, len(fs))
	for _, f := range fs {
		out = append(out, frameJSON{f.GetModule(), f.GetFunction(), f.GetOffset(), f.GetAddress()})
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func framesProto(s string) []*livedumpv1.Frame {
	var fs []frameJSON
	_ = json.Unmarshal([]byte(s), &fs)
	if len(fs) > MaxEventFrames {
		fs = fs[:MaxEventFrames]
	}
	out := make([]*livedumpv1.Frame, 0, len(fs))
	for _, f := range fs {
		out = append(out, &livedumpv1.Frame{Module: truncate(f.Module, MaxEventString), Function: truncate(f.Function, MaxEventString), Offset: f.Offset, Address: f.Address})
	}
	return out
}

// ackableID bounds the event IDs echoed in an acknowledgement: a longer one
// cannot be an ID our agents make, so there is nothing to drop from a spool.
const ackableID = 128

// flush stores a batch in one transaction, then acks it to the agents: an
// ack means the event is durable on the controller, or refused for good,
// and the agent may drop it from its spool.
func (m *Manager) flush(ctx context.Context, batch []ingest) {
	var rows []store.Event
	acks := map[*fleet.Session]*livedumpv1.EventAck{}
	ack := func(it ingest, r *refusal) {
		if it.sess == nil || len(it.ev.GetId()) > ackableID {
			return
		}
		a := acks[it.sess]
		if a == nil {
			a = &livedumpv1.EventAck{}
			acks[it.sess] = a
		}
		a.EventIds = append(a.EventIds, it.ev.GetId())
		if r != nil {
			a.Refused = append(a.Refused, refusalAck(it.ev.GetId(), r))
		}
	}
	var accepted, statuses []ingest
	loaded := map[string]bool{}
	for _, it := range batch {
		if it.status != nil {
			statuses = append(statuses, it)
			continue
		}
		captureID := it.ev.GetCaptureId()
		r := it.refused
		if r == nil {
			now := m.cfg.Clock.Now()
			var known bool
			r, known = m.adm.check(captureID, it.agentID, now)
			if !known && !loaded[captureID] {
				loaded[captureID] = true
				if err := m.adm.load(ctx, m.cfg.Store, captureID, now); err != nil {
					// Not acked: the agent sends it again after a reconnect.
					m.log.Warn("look up capture of an event", "capture_id", captureID, "err", err)
					continue
				}
				r, known = m.adm.check(captureID, it.agentID, now)
			}
			if !known {
				continue // the look-up failed earlier in this batch
			}
		}
		if r != nil {
			m.refuse(it.agentID, captureID, r)
			ack(it, r)
			continue
		}
		ev := it.ev
		ev.Signature = Signature(ev, DefaultSignatureFrames)
		rows = append(rows, store.Event{
			ID: ev.GetId(), CaptureID: ev.GetCaptureId(), AgentID: it.agentID, Time: ev.GetTime().AsTime(),
			PID: int(ev.GetPid()), TID: int(ev.GetTid()), Process: ev.GetProcess(), Probe: ev.GetProbe(), Status: ev.GetStatus(),
			User: framesJSON(ev.GetUserFrames()), Kernel: framesJSON(ev.GetKernelFrames()), Signature: ev.GetSignature(),
		})
		accepted = append(accepted, it)
	}
	if len(rows) > 0 {
		start := time.Now()
		n, err := m.cfg.Store.InsertEvents(ctx, rows)
		if err != nil {
			// Not acked: the agents keep the events spooled and send
			// them again when they reconnect, so make them reconnect,
			// perhaps to a replica that reaches the store.
			m.log.Error("store events", "count", len(rows), "err", err)
			for _, it := range batch {
				if it.sess != nil {
					it.sess.End(fleet.ErrStoreUnavailable)
				}
			}
			return
		}
		m.metrics.ingestSeconds.Observe(time.Since(start).Seconds())
		m.metrics.events.Add(float64(n))
		m.metrics.duplicates.Add(float64(len(rows) - n))
		captures := map[string]bool{}
		hosts := map[string]string{}
		for i, it := range accepted {
			ack(it, nil)
			captures[it.ev.GetCaptureId()] = true
			if m.watched(it.ev.GetCaptureId()) {
				m.publishEvent(eventProto(rows[i], m.hostname(ctx, hosts, it.agentID)))
			}
		}
		if n > 0 {
			m.Kick() // max-dumps may be reached
			for id := range captures {
				m.cfg.Router.EventsStored(ctx, id)
			}
		}
	}
	for s, a := range acks {
		_ = s.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_EventAck{EventAck: a}})
	}
	m.applyStatuses(ctx, statuses)
}

// hostname is the agent's hostname as the controller stores it (never what
// an event claims), read once per batch.
func (m *Manager) hostname(ctx context.Context, memo map[string]string, agentID string) string {
	h, ok := memo[agentID]
	if !ok {
		if a, err := m.cfg.Store.GetAgent(ctx, agentID); err == nil {
			h = a.Hostname
		}
		memo[agentID] = h
	}
	return h
}

// relayWindow is how far back a relay re-reads: with several replicas,
// events can commit out of sequence order.
const relayWindow = 512

// maxRelaySeen bounds the IDs remembered per watched capture.
const maxRelaySeen = 100000

// relayState is what the watchers of one capture have been given.
type relayState struct {
	after int64
	seen  map[string]struct{}
}

func (m *Manager) watched(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.watchers[id]) > 0
}

// publishEvent gives an event to local watchers, once.
func (m *Manager) publishEvent(ev *livedumpv1.TriggerEvent) {
	id := ev.GetCaptureId()
	m.mu.Lock()
	st := m.relays[id]
	if st != nil {
		if _, dup := st.seen[ev.GetId()]; dup {
			m.mu.Unlock()
			return
		}
		st.seen[ev.GetId()] = struct{}{}
	}
	m.mu.Unlock()
	m.publish(id, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Event{Event: ev}}, false)
}

// Relay gives local watchers the events another replica stored.
func (m *Manager) Relay(captureID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.relay(ctx, captureID)
}

func (m *Manager) relay(ctx context.Context, captureID string) {
	m.mu.Lock()
	st := m.relays[captureID]
	after := int64(0)
	if st != nil {
		after = max(0, st.after-relayWindow)
	}
	m.mu.Unlock()
	if st == nil {
		return
	}
	for range 100 {
		rows, err := m.cfg.Store.ListEvents(ctx, captureID, after, 1000)
		if err != nil {
			m.log.Warn("relay events", "capture_id", captureID, "err", err)
			return
		}
		hosts := map[string]string{}
		for _, r := range rows {
			after = r.Seq
			if _, ok := hosts[r.AgentID]; !ok {
				if a, err := m.cfg.Store.GetAgent(ctx, r.AgentID); err == nil {
					hosts[r.AgentID] = a.Hostname
				}
			}
			m.publishEvent(eventProto(r, hosts[r.AgentID]))
		}
		m.mu.Lock()
		if cur := m.relays[captureID]; cur != nil {
			cur.after = max(cur.after, after)
			if len(cur.seen) > maxRelaySeen {
				cur.seen = map[string]struct{}{}
			}
		}
		m.mu.Unlock()
		if len(rows) < 1000 {
			return
		}
	}
}

// Watch subscribes to a capture's events and target changes. The channel is
// closed when the capture ends (after the final message) or when the
// watcher falls too far behind; stop unsubscribes.
func (m *Manager) Watch(id string) (<-chan *livedumpv1.WatchCaptureResponse, func()) {
	ch := make(chan *livedumpv1.WatchCaptureResponse, 1024)
	m.mu.Lock()
	if m.watchers[id] == nil {
		m.watchers[id] = map[chan *livedumpv1.WatchCaptureResponse]struct{}{}
	}
	m.watchers[id][ch] = struct{}{}
	if m.relays[id] == nil {
		m.relays[id] = &relayState{seen: map[string]struct{}{}}
	}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.watchers[id][ch]; ok {
			delete(m.watchers[id], ch)
			close(ch)
		}
		if len(m.watchers[id]) == 0 {
			delete(m.watchers, id)
			delete(m.relays, id)
		}
	}
}

func (m *Manager) publish(id string, msg *livedumpv1.WatchCaptureResponse, final bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.watchers[id] {
		select {
		case ch <- msg:
		default:
			// A watcher that cannot keep up is dropped rather than
			// allowed to hold memory without bound.
			delete(m.watchers[id], ch)
			close(ch)
			continue
		}
		if final {
			delete(m.watchers[id], ch)
			close(ch)
		}
	}
}

// Events returns a capture's events after the event with ID after.
func (m *Manager) Events(ctx context.Context, captureID, after string, limit int) ([]*livedumpv1.TriggerEvent, error) {
	evs, _, err := m.EventsPage(ctx, captureID, after, limit, 0)
	return evs, err
}

// eventChunk is how many stored events a page reads at a time.
const eventChunk = 256

// EventsPage returns up to limit of a capture's events after the event with
// ID after, and at most budget encoded bytes of them (0: no budget; one
// event is always returned, and none exceeds MaxEventBytes by much). next is
// the ID to read on from, empty when no event follows.
func (m *Manager) EventsPage(ctx context.Context, captureID, after string, limit, budget int) (evs []*livedumpv1.TriggerEvent, next string, err error) {
	if limit <= 0 {
		limit = 1000
	}
	var seq int64
	if after != "" {
		if seq, err = m.cfg.Store.EventSeq(ctx, after); err != nil {
			return nil, "", err
		}
	}
	hosts := map[string]string{}
	size := 0
	for {
		// One row more than the limit, to know whether another follows.
		want := min(limit-len(evs)+1, eventChunk)
		rows, err := m.cfg.Store.ListEvents(ctx, captureID, seq, want)
		if err != nil {
			return nil, "", err
		}
		// Hostnames of this chunk's agents not named yet: a page never
		// reads the whole fleet with its labels.
		unnamed := map[string]bool{}
		for _, r := range rows {
			if _, ok := hosts[r.AgentID]; !ok {
				unnamed[r.AgentID] = true
				hosts[r.AgentID] = ""
			}
		}
		if len(unnamed) > 0 {
			if named, err := store.Hostnames(ctx, m.cfg.Store, unnamed); err == nil {
				maps.Copy(hosts, named)
			}
		}
		for _, r := range rows {
			if len(evs) == limit {
				return evs, evs[len(evs)-1].GetId(), nil
			}
			ev := eventProto(r, hosts[r.AgentID])
			n := proto.Size(ev) + 8 // with the field's tag and length
			if budget > 0 && len(evs) > 0 && size+n > budget {
				return evs, evs[len(evs)-1].GetId(), nil
			}
			size += n
			evs = append(evs, ev)
			seq = r.Seq
		}
		if len(rows) < want {
			return evs, "", nil
		}
	}
}

// eventProto is a stored event as the API shows it. Strings and stacks are
// cut to the ingest limits, for events stored before those limits existed.
func eventProto(r store.Event, hostname string) *livedumpv1.TriggerEvent {
	return &livedumpv1.TriggerEvent{
		Id: r.ID, CaptureId: r.CaptureID, AgentId: r.AgentID, Hostname: hostname, Time: timestampOf(r.Time),
		Pid: int32(r.PID), Tid: int32(r.TID), Process: truncate(r.Process, MaxEventString), Probe: truncate(r.Probe, MaxEventString), Status: r.Status,
		UserFrames: framesProto(r.User), KernelFrames: framesProto(r.Kernel), Signature: truncate(r.Signature, 4*MaxEventString),
	}
}

type metrics struct {
	events        prometheus.Counter
	duplicates    prometheus.Counter
	directives    prometheus.Counter
	acked         *prometheus.CounterVec
	ackSeconds    prometheus.Histogram
	byState       *prometheus.GaugeVec
	ingestSeconds prometheus.Histogram
	refused       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, m *Manager) metrics {
	mt := metrics{
		events:     prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_trigger_events_total", Help: "Trigger events stored."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_trigger_events_duplicate_total", Help: "Trigger events received again and dropped by ID."}),
		directives: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_directives_sent_total", Help: "Capture directives (arm, disarm) sent to agents."}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_directives_acked_total", Help: "Capture directives answered by agents, by result (ok, rejected)."},
			[]string{"result"}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livedump_controller_directive_ack_seconds", Help: "Time from sending a capture directive to the agent's ack.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_events_refused_total",
			Help: "Trigger events refused, by reason (capture_unknown, capture_not_active, not_target, invalid, too_large, rate_limited)."}, []string{"reason"}),
		byState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "livedump_controller_captures", Help: "Captures by state."}, []string{"state"}),
		ingestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livedump_controller_event_batch_store_seconds", Help: "Time to store one batch of trigger events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	if reg != nil {
		for _, r := range []string{"ok", "rejected"} {
			mt.acked.WithLabelValues(r)
		}
		for _, r := range refusalReasons {
			mt.refused.WithLabelValues(r)
		}
		for _, st := range []string{StateActive, StateDone, StateExpired, StateCancelled} {
			mt.byState.WithLabelValues(st)
		}
		reg.MustRegister(mt.events, mt.duplicates, mt.directives, mt.acked, mt.ackSeconds, mt.byState, mt.ingestSeconds, mt.refused)
	}
	return mt
}
