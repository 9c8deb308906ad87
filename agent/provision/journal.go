package provision

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/livedump/livedump/internal/atomicfile"
	"github.com/livedump/livedump/internal/profile"
)

// JournalFile is the durable record of what provisioning changed, kept in
// the agent's state directory.
const JournalFile = "provision.json"

const journalVersion = 1

// record is what one step changed: the value before the first change, kept
// until a revert consumes it. A second apply never overwrites it, so a
// revert after any number of applies, interrupted or not, restores the
// machine as it was before livedump touched it.
type record struct {
	Step  string          `json:"step"`
	Prior json.RawMessage `json:"prior"`
	// At is when the step was first changed.
	At time.Time `json:"at"`
}

// journal is the provisioning state that must survive restarts and reboots.
type journal struct {
	Version int      `json:"version"`
	Records []record `json:"records"`
	// Profile is the last profile applied, so the agent can tell its state
	// after a restart without being asked again.
	Profile *profile.Profile `json:"profile,omitempty"`
	// SymbolPath is the _NT_SYMBOL_PATH given to dtrace.
	SymbolPath string `json:"symbol_path,omitempty"`
	// RebootNeededSince is when a change that needs a reboot was made (or
	// was about to be: it is written before the change, so a crash cannot
	// hide a needed reboot). A boot after it means the change is effective.
	RebootNeededSince time.Time `json:"reboot_needed_since,omitzero"`
	// RebootRequestedAt is when this agent scheduled a reboot.
	RebootRequestedAt time.Time `json:"reboot_requested_at,omitzero"`
	// FailedStep and Failure describe the last failed apply until the next
	// successful one.
	FailedStep string `json:"failed_step,omitempty"`
	Failure    string `json:"failure,omitempty"`
	// MSIPath is the local DTrace MSI used to install. It is kept for the
	// record only: uninstalling goes by ProductCode.
	MSIPath string `json:"msi_path,omitempty"`
	// ProductCode is the ProductCode of the DTrace product this agent
	// installed, found under the Uninstall key right after the install;
	// revert removes it with msiexec /x {ProductCode}.
	ProductCode string `json:"product_code,omitempty"`
}

func loadJournal(dir string) (*journal, error) {
	path := filepath.Join(dir, JournalFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &journal{Version: journalVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if j.Version != journalVersion {
		return nil, fmt.Errorf("%s: version %d, this agent understands %d", path, j.Version, journalVersion)
	}
	return &j, nil
}

// save writes the journal atomically and durably: it is written before the
// host is changed, so it must be on disk when the change happens.
func (j *journal) save(dir string) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, JournalFile), b, 0o600)
}

func (j *journal) find(step string) (int, bool) {
	for i, r := range j.Records {
		if r.Step == step {
			return i, true
		}
	}
	return -1, false
}
