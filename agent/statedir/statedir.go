// Package statedir builds paths inside the agent's state directory. Names
// in those paths can come from the controller (capture IDs, artifact
// hashes); Join refuses any that would lead outside, whatever the
// operating system, so that no caller depends on having validated them
// first.
package statedir

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Join returns dir joined with elems, each a single path element. It
// refuses an empty element, one holding a separator of either Linux or
// Windows, "." or "..", and any result that filepath.IsLocal does not
// accept (on Windows: a reserved device name, a drive or a UNC prefix).
func Join(dir string, elems ...string) (string, error) {
	if dir == "" {
		return "", errors.New("state directory: empty path")
	}
	for _, e := range elems {
		if e == "" || e == "." || e == ".." || strings.ContainsAny(e, `/\`) || strings.ContainsRune(e, 0) {
			return "", fmt.Errorf("path element %q: not a single name inside the state directory", e)
		}
	}
	rel := filepath.Join(elems...)
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("path %q: not inside the state directory", rel)
	}
	return filepath.Join(dir, rel), nil
}
