//go:build !windows

package dtracesim

import "errors"

// localMachine exists only in the Windows build (see local_windows.go):
// elsewhere the simulated dtrace needs a simulated machine.
func localMachine() (*machine, error) {
	return nil, errors.New("no simulated machine: set " + EnvHost)
}

func localPath(win string) (string, error) { return "", errors.New("no local Windows machine") }

func localInstalled() bool { return false }
