// Command livedumpctl is the SRE command line of livedump: it lists and
// labels agents, manages enrollment tokens and reads the audit log by
// calling the controller's FleetService over mutual TLS.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
