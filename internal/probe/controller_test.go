package probe_test

import (
	"testing"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/internal/probe"
)

// The parser's tests check every record against the controller's
// admission limits; this package cannot import the controller (it imports
// this one), so this external test hands them over.
func init() {
	probe.ControllerLimits.String = capture.MaxEventString
	probe.ControllerLimits.Frames = capture.MaxEventFrames
	probe.ControllerLimits.Bytes = capture.MaxEventBytes
}

func TestLimitsMatchTheController(t *testing.T) {
	if probe.MaxString != capture.MaxEventString {
		t.Errorf("MaxString = %d, controller's MaxEventString = %d", probe.MaxString, capture.MaxEventString)
	}
	if probe.MaxFrames > capture.MaxEventFrames {
		t.Errorf("MaxFrames = %d, controller's MaxEventFrames = %d", probe.MaxFrames, capture.MaxEventFrames)
	}
}
