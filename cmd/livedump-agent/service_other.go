//go:build !windows

package main

import (
	"context"

	"github.com/spf13/cobra"
)

// addPlatformCommands adds nothing outside Windows: the agent runs there as
// a console process (the "service" command is Windows only).
func addPlatformCommands(context.Context, *cobra.Command) {}
