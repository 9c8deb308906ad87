//go:build !windows

package dumps

import (
	"os"
	"time"
)

// OpensExclusively reports whether path opens with no sharing at all. Only
// Windows has share modes: elsewhere it is always true, and completion
// rests on the size staying stable.
func OpensExclusively(string) bool { return true }

// birthTime is unavailable here: the dump ID uses the first-seen time.
func birthTime(os.FileInfo) (time.Time, bool) { return time.Time{}, false }
