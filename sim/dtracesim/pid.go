package dtracesim

// Processes named by pid. A script that compares pid with a number
// (`/pid == 4242/`, as the agent's on-demand dump does with its helper
// process) traces that process only while it really exists: the simulated
// machine shares the host's process table for them, so a pid that is not a
// running process never fires, as on Windows.

// helperImage is the image name a process named by pid is given in
// execname and stacks: the agent's helper is the agent binary itself.
const helperImage = "livedump-agent.exe"

// pidProcess is the simulated view of a real process, named by its pid.
func pidProcess(pid int32, real realism) *process {
	p := newProcess(helperImage, real)
	p.pid = pid
	p.real = true
	return p
}

// alive reports whether a firing may come from p now: processes named by
// pid must be running on the host.
func (p *process) alive() bool { return !p.real || processAlive(int(p.pid)) }
