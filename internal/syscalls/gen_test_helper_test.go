package syscalls

import (
	"os/exec"
)

// genForTest runs the generator with the version recorded in the table, so
// that a different installed package version shows as a difference in the
// sha256, not as a spurious version change.
func genForTest(lib, version, out string) error {
	cmd := exec.Command("go", "run", "./gen", "-lib", lib, "-version", version, "-o", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return &genError{string(b), err}
	}
	return nil
}

type genError struct {
	out string
	err error
}

func (e *genError) Error() string { return e.err.Error() + ": " + e.out }
