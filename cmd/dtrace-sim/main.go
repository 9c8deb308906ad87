// Command dtrace-sim is the simulated dtrace.exe: it takes dtrace's
// arguments (-s script, -q, -w, -o file, -x opt=val, ...), runs the D
// script against the simulated Windows machine named by
// LIVEDUMP_SIM_HOST, and prints what dtrace.exe prints. It builds for
// Linux and for Windows, where it stands in for dtrace.exe under Wine.
// See package dtracesim for the behaviour and the environment it reads.
package main

import (
	"os"

	"github.com/livedump/livedump/sim/dtracesim"
)

func main() {
	os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
