//go:build !linux

package pgtest

import (
	"errors"
	"runtime"
)

// cluster is a private PostgreSQL server; only Linux can start one.
type cluster struct{ url string }

func startCluster() (*cluster, error) {
	return nil, errors.New("no private PostgreSQL cluster on " + runtime.GOOS + ": set " + EnvURL)
}

func (c *cluster) stop() error { return nil }
