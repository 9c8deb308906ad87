package dtracesim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// On the local machine (the Windows build standing in for dtrace.exe, see
// local_windows.go) the live dump is written by a child process, the
// simulation's "kernel", started when the probe fires: Windows writes a
// live dump itself, from the end of the probe on, so the dump completes
// even when dtrace.exe is terminated right after it has printed the event
// (as the agent does when the capture is cancelled on that event). dtrace
// still waits for it, as the simulation does on the simulated machine.

// envKernelDump, in the environment of this program, makes it write one
// live dump of the local machine and print its path: the value is
// "mode,size,duration-ns,seed".
const envKernelDump = "LIVEDUMP_SIM_KERNEL_DUMP"

// kernelDump is a dump being written by a child process.
type kernelDump struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	err            error // from starting it
}

// startKernel starts the child process that writes one dump.
func (d *dumper) startKernel(mode int64) *kernelDump {
	k := &kernelDump{}
	exe, err := os.Executable()
	if err != nil {
		k.err = err
		return k
	}
	k.cmd = exec.Command(exe)
	k.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d,%d", envKernelDump, mode, d.size, int64(d.dur), d.seed))
	k.cmd.Stdout, k.cmd.Stderr = &k.stdout, &k.stderr
	k.err = k.cmd.Start()
	return k
}

// wait waits for the dump to be complete and returns its path.
func (k *kernelDump) wait() (string, error) {
	if k.err != nil {
		return "", fmt.Errorf("live dump: %w", k.err)
	}
	if err := k.cmd.Wait(); err != nil {
		return "", fmt.Errorf("live dump: %v: %s", err, strings.TrimSpace(k.stderr.String()))
	}
	return strings.TrimSpace(k.stdout.String()), nil
}

// kernelMain is the child process of kernelWrite.
func kernelMain(spec string, stdout, stderr io.Writer) int {
	f := strings.Split(spec, ",")
	var n [3]int64
	var seed uint64
	var err error
	if len(f) != len(n)+1 {
		err = fmt.Errorf("want 4 fields, got %d", len(f))
	}
	for i := 0; i < len(n) && err == nil; i++ {
		n[i], err = strconv.ParseInt(f[i], 10, 64)
	}
	if err == nil {
		seed, err = strconv.ParseUint(f[3], 10, 64)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s=%q: %v\n", envKernelDump, spec, err)
		return exitUsage
	}
	m, err := localMachine()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	d := newDumper(m, n[1], time.Duration(n[2]), seed, time.Now)
	path, err := d.write(n[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	fmt.Fprintln(stdout, path)
	return exitSuccess
}
