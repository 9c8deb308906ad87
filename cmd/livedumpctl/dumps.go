package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func dumpStateName(s livedumpv1.DumpState) string {
	return enumname.Name(s, "-")
}

func (a *app) dumpsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dumps",
		Short: "List, download and pull live kernel dumps",
	}
	groupCommand(cmd)
	var captureID, agentRef string
	list := &cobra.Command{
		Use:   "list [--capture ID] [--agent AGENT]",
		Short: "List dumps, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			agentID := ""
			if agentRef != "" {
				var err error
				if agentID, err = a.resolveAgentArg(cmd, "--agent", agentRef); err != nil {
					return err
				}
			}
			resp := &livedumpv1.ListDumpsResponse{}
			s, err := followPages(a, cmd, func(ctx context.Context, client fleetClient, after string) (string, error) {
				page, err := client.ListDumps(ctx, &livedumpv1.ListDumpsRequest{CaptureId: captureID, AgentId: agentID, After: after})
				resp.Dumps = append(resp.Dumps, page.GetDumps()...)
				return page.GetNext(), err
			})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			t := newTable(a.stdout, "ID", "HOSTNAME", "CAPTURE", "FILE", "SIZE", "STATE", "SHA256", "WRITTEN")
			for _, d := range resp.GetDumps() {
				t.row(d.GetId(), d.GetHostname(), d.GetCaptureId(), d.GetFileName(), humanBytes(d.GetSize()), dumpStateName(d.GetState()), d.GetSha256(), formatTime(d.GetWritten()))
			}
			return t.flush()
		},
	}
	list.Flags().StringVar(&captureID, "capture", "", "only this capture's dumps")
	list.Flags().StringVar(&agentRef, "agent", "", "only this agent's dumps: its `ID or HOSTNAME`")

	var out string
	get := &cobra.Command{
		Use:   "get ID [-f FILE]",
		Short: "Download a dump, verify its SHA-256, and keep it only if it matches (-o json: print its description)",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.downloadDump(cmd, args[0], out)
		},
	}
	get.Flags().StringVarP(&out, "file", "f", "", "output `FILE` (default: the dump's file name in the current directory)")

	pull := &cobra.Command{
		Use:   "pull ID",
		Short: "Ask the agent to upload a dump it kept hash-only",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, s, err := call(a, cmd, fleetClient.PullDump, &livedumpv1.PullDumpRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if s.output == outputJSON {
				return writeJSON(a.stdout, resp)
			}
			fmt.Fprintf(a.stdout, "dump %s: upload requested from %s (now %s)\n", resp.GetDump().GetId(), resp.GetDump().GetAgentId(), dumpStateName(resp.GetDump().GetState()))
			return nil
		},
	}
	cmd.AddCommand(list, get, pull)
	return cmd
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// downloadDump streams a dump into a temporary file next to the target,
// hashing as it goes, and renames it into place only when the SHA-256
// matches: a corrupt or partial download never takes the dump's name.
func (a *app) downloadDump(cmd *cobra.Command, id, out string) error {
	client, s, closeConn, err := a.connect(cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	st, err := client.GetDump(cmd.Context(), &livedumpv1.GetDumpRequest{Id: id})
	if err != nil {
		return rpcError(err, s)
	}
	first, err := st.Recv()
	if err != nil {
		return rpcError(err, s)
	}
	d := first.GetDump()
	if d == nil {
		return errors.New("controller sent data before the dump's description")
	}
	if out == "" {
		out = filepath.Base(d.GetFileName())
		if out == "" || out == "." || out == "/" {
			out = d.GetId() + ".dmp"
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-*")
	if err != nil {
		return fmt.Errorf("-f: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	var got int64
	start, lastDraw := time.Now(), time.Time{}
	draw := func(final bool) {
		if !final && time.Since(lastDraw) < 200*time.Millisecond {
			return
		}
		lastDraw = time.Now()
		pct := 100.0
		if d.GetSize() > 0 {
			pct = float64(got) * 100 / float64(d.GetSize())
		}
		rate := float64(got) / max(time.Since(start).Seconds(), 0.001)
		fmt.Fprintf(a.stderr, "\r%s %5.1f%% %s/%s %s/s ", filepath.Base(out), pct, humanBytes(got), humanBytes(d.GetSize()), humanBytes(int64(rate)))
		if final {
			fmt.Fprintln(a.stderr)
		}
	}
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tmp.Close()
			return rpcError(err, s)
		}
		c := m.GetChunk()
		if _, err := tmp.Write(c); err != nil {
			tmp.Close()
			return fmt.Errorf("-f: %w", err)
		}
		h.Write(c)
		got += int64(len(c))
		draw(false)
	}
	draw(true)
	if err := tmp.Close(); err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if got != d.GetSize() || sum != d.GetSha256() {
		return fmt.Errorf("dump %s: received %d bytes hashing to %s, want %d bytes with sha256 %s; nothing was kept", id, got, sum, d.GetSize(), d.GetSha256())
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	if s.output == outputJSON {
		// The verified dump's description, header facts included
		// (dump_type, bug_check_code, os_build, declared_size).
		return writeJSON(a.stdout, d)
	}
	fmt.Fprintf(a.stdout, "%s  %s (verified)\n", sum, out)
	return nil
}
