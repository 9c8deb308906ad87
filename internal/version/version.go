// Package version holds the build's version, stamped at link time with
// -ldflags "-X github.com/livedump/livedump/internal/version.Version=1.2.3".
package version

// Version is the release version of this build, or "dev" for unstamped builds.
var Version = "dev"
