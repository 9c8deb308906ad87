package dtracesim

import (
	"fmt"
	"slices"
	"time"
)

// Drops. The kernel writes a probe's data into the principal buffer of the
// CPU it fired on; the consumer copies the buffers out once per switchrate
// interval (1 s by default). A record that does not fit in its CPU's
// buffer is dropped, counted, and the consumer reports the count when it
// reads the buffer: "dtrace: N drops on CPU k" on stderr (libdtrace
// dt_drop.c, dt_handle_cpudrop; dtrace.c's drop handler). The data is
// never printed, but the clause's other effects (variables, exit(), lkd())
// took place, so a capture's hit counter skips the dropped records.
//
// All drop output goes through emit and reportDrops, so that other
// sources of drop lines can be merged here.

// dropState is the consumer's view of the buffers in the current interval.
type dropState struct {
	interval int64         // the switchrate interval, in seconds since the epoch
	used     map[int]int64 // bytes buffered per CPU in the interval
	dropped  map[int]int64 // records dropped per CPU in the interval
}

// bufsize is the principal buffer size per CPU: -b or -x bufsize, else
// the realism's default (EnvBufsize, 4m).
func (s *session) bufsize() int64 {
	if s.opts.bufsize > 0 {
		return s.opts.bufsize
	}
	if s.world.real.bufsize > 0 {
		return s.world.real.bufsize
	}
	return DefaultBufsize
}

// emit passes the firing's output through its CPU's buffer to the
// consumer, dropping it when the buffer is full.
func (s *session) emit(f *firing, b []byte) {
	d := &s.drops
	if d.used == nil {
		d.used, d.dropped = map[int]int64{}, map[int]int64{}
	}
	if iv := f.wall / int64(time.Second); iv != d.interval {
		s.reportDrops()
		d.interval = iv
		clear(d.used)
	}
	if f.probe.prov == "dtrace" && f.probe.name == "END" {
		s.reportDrops() // the last buffers are read before END's
	}
	if len(b) == 0 {
		return
	}
	if f.probe.prov != "dtrace" {
		if d.used[f.cpu]+int64(len(b)) > s.bufsize() {
			d.dropped[f.cpu]++
			s.stats.dropped++
			return
		}
		d.used[f.cpu] += int64(len(b))
	}
	s.out.write(b)
}

// reportDrops prints the drops counted since the last report, one line
// per CPU, as dtrace's drop handler does.
func (s *session) reportDrops() {
	d := &s.drops
	cpus := make([]int, 0, len(d.dropped))
	for c := range d.dropped {
		cpus = append(cpus, c)
	}
	slices.Sort(cpus)
	for _, c := range cpus {
		n := d.dropped[c]
		plural := "s"
		if n == 1 {
			plural = ""
		}
		fmt.Fprintf(s.err, "%s: %d drop%s on CPU %d\n", pname, n, plural, c)
	}
	clear(d.dropped)
}
