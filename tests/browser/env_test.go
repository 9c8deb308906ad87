//go:build unix

package browser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium package, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// env is the lab every test of the package works in: one dev controller
// with its three simulated agents (two role=vdi, provisioned), an admin
// and a viewer console, two captures created at start-up so they run while
// the first tests do (stacks with a per-agent cap, so their events end; a
// dump capture, so its dumps upload), and one headless Chromium.
type env struct {
	work     string // temp dir: binaries, data, logs
	bin      string
	data     string
	ctl      string // livedumpctl
	adminCfg string // livedumpctl.yaml of the dev admin
	viewCfg  string // livedumpctl.yaml of the viewer
	ctlAddr  string // the controller's gRPC address

	admin, viewer console

	stacksCapture string // role=vdi, ms-teams.exe, stacks, --per-agent stacksPerAgent
	dumpCapture   string // role=vdi, ms-teams.exe, dump (one 32 MiB dump per machine)

	procs []*exec.Cmd // process-group leaders to kill at the end

	browserCtx    context.Context // a started browser; tabs are its children
	browserCancel context.CancelFunc
	allocCancel   context.CancelFunc
}

// console is one running `livedumpctl ui`.
type console struct {
	base  string // http://127.0.0.1:PORT
	token string
	host  string // 127.0.0.1:PORT
}

// loginURL is the URL the console printed: path with ?token=.
func (c console) loginURL(path string) string {
	return c.base + path + "?token=" + url.QueryEscape(c.token)
}

// stacksPerAgent caps the stacks capture, so its events end and the flame
// graph can be compared with the buckets.
const stacksPerAgent = 25

// vdiSelector matches the two VDI machines of the dev lab.
const vdiSelector = "role=vdi"

// viewerName is the viewer operator's name (its audit actor ends with it).
const viewerName = "browser-viewer"

var (
	theEnv   *env
	envOnce  sync.Once
	envErr   error
	envLogs  string // where logs live, printed when the package fails
	hasChrom bool
)

func TestMain(m *testing.M) {
	_, err := os.Stat(chromiumPath)
	hasChrom = err == nil
	code := m.Run()
	if theEnv != nil {
		theEnv.close()
		if code != 0 {
			theEnv.printLogs()
		}
		if code == 0 || os.Getenv("LIVEDUMP_KEEP_BROWSER_ENV") == "" {
			os.RemoveAll(theEnv.work)
		} else {
			fmt.Fprintf(os.Stderr, "tests/browser: kept %s\n", theEnv.work)
		}
	}
	os.Exit(code)
}

// needBrowser skips a test without Chromium, except in CI, which must run
// every browser test.
func needBrowser(t *testing.T) {
	t.Helper()
	skipShort(t)
	if hasChrom {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("needs Chromium: %s not found, and CI must run the browser tests (apt-get install chromium)", chromiumPath)
	}
	t.Skipf("needs Chromium: %s not found (apt-get install chromium)", chromiumPath)
}

// skipShort skips under -short (CI's race-detector run): the lab takes
// half a minute to start; the README's `go test ./...` runs the tests.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the browser tests start a dev controller, two consoles and Chromium")
	}
}

// getEnv starts the lab on first use; a failure fails every test.
func getEnv(t *testing.T) *env {
	t.Helper()
	skipShort(t)
	envOnce.Do(func() {
		e := &env{}
		theEnv = e
		envErr = e.start()
	})
	if envErr != nil {
		t.Fatalf("lab: %v (logs in %s)", envErr, theEnv.work)
	}
	return theEnv
}

func (e *env) start() error {
	var err error
	if e.work, err = os.MkdirTemp("", "livedump-browser-"); err != nil {
		return err
	}
	e.bin = filepath.Join(e.work, "bin")
	e.data = filepath.Join(e.work, "data")
	e.ctl = filepath.Join(e.bin, "livedumpctl")
	e.adminCfg = filepath.Join(e.data, "livedumpctl.yaml")

	// Build the binaries the README tells an SRE to run.
	build := exec.Command("go", "build", "-o", e.bin+string(filepath.Separator), "./cmd/livedump-controller", "./cmd/livedumpctl")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}

	// The dev controller on free ports; its simulated dtrace fires a little
	// faster than the default 2/s, so the captures fill in seconds but a
	// page opened as one starts still sees its events arrive.
	ctlOut := filepath.Join(e.work, "controller.out")
	cmd := exec.Command(filepath.Join(e.bin, "livedump-controller"), "--dev", "--data-dir", e.data,
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--dev-agent-metrics-port", "0")
	// Dumps of 32 MiB, not the dev default's 256: the download is checked
	// the same way (hash held back to the end), and the README's go test
	// runs other packages beside this one on a 2-core machine.
	cmd.Env = append(os.Environ(), "LIVEDUMP_SIM_DTRACE_RATE=5", "LIVEDUMP_SIM_DUMP_BYTES=32m")
	if err := e.spawn(cmd, ctlOut, filepath.Join(e.work, "controller.log")); err != nil {
		return err
	}
	addrRe := regexp.MustCompile(`livedump dev controller on (\S+),`)
	if err := waitFor(30*time.Second, func() error {
		b, _ := os.ReadFile(ctlOut)
		m := addrRe.FindSubmatch(b)
		if m == nil {
			return errors.New("the controller did not print its address")
		}
		e.ctlAddr = string(m[1])
		return e.exited(cmd)
	}); err != nil {
		return err
	}

	// 3 agents online (as .ci/dev-acceptance's start()).
	if err := waitFor(60*time.Second, func() error {
		if err := e.exited(cmd); err != nil {
			return err
		}
		var list struct {
			Agents []struct {
				State string `json:"state"`
			} `json:"agents"`
		}
		if err := e.ctlJSON(&list, "agents", "list"); err != nil {
			return err
		}
		online := 0
		for _, a := range list.Agents {
			if a.State == "AGENT_STATE_ONLINE" {
				online++
			}
		}
		if online != 3 {
			return fmt.Errorf("%d of 3 agents online", online)
		}
		return nil
	}); err != nil {
		return err
	}

	// Provision the VDI machines so captures arm there.
	if _, err := e.run("provision", "apply", "-l", vdiSelector, "--reboot", "if-needed"); err != nil {
		return err
	}
	if err := waitFor(90*time.Second, func() error {
		var list struct {
			Agents []struct {
				ProvisionState string `json:"provision_state"`
			} `json:"agents"`
		}
		if err := e.ctlJSON(&list, "agents", "list", "-l", vdiSelector); err != nil {
			return err
		}
		ready := 0
		for _, a := range list.Agents {
			if a.ProvisionState == "PROVISION_STATE_READY" {
				ready++
			}
		}
		if ready != 2 {
			return fmt.Errorf("%d of 2 VDI machines provisioned", ready)
		}
		return nil
	}); err != nil {
		return err
	}

	// The captures that run while the consoles start.
	out, err := e.run("capture", "create", "-l", vdiSelector, "--process", "ms-teams.exe",
		"--status", "STATUS_INVALID_PARAMETER", "--action", "stacks", "--per-agent", fmt.Sprint(stacksPerAgent), "--expire", "30m")
	if err != nil {
		return err
	}
	e.stacksCapture = lastLine(out)
	if out, err = e.run("capture", "create", "-l", vdiSelector, "--process", "ms-teams.exe",
		"--status", "STATUS_INVALID_PARAMETER", "--action", "dump", "--expire", "30m"); err != nil {
		return err
	}
	e.dumpCapture = lastLine(out)

	// A viewer certificate.
	viewDir := filepath.Join(e.work, "viewer")
	issue := exec.Command(filepath.Join(e.bin, "livedump-controller"), "issue-operator", "--role", "viewer",
		"--name", viewerName, "--out", viewDir, "--data-dir", e.data, "--controller", e.ctlAddr)
	if out, err := issue.CombinedOutput(); err != nil {
		return fmt.Errorf("issue-operator --role viewer: %v\n%s", err, out)
	}
	e.viewCfg = filepath.Join(viewDir, "livedumpctl.yaml")

	// The two consoles.
	if e.admin, err = e.startConsole("admin", e.adminCfg); err != nil {
		return err
	}
	if e.viewer, err = e.startConsole("viewer", e.viewCfg); err != nil {
		return err
	}

	if hasChrom {
		return e.startBrowser()
	}
	return nil
}

var consoleLine = regexp.MustCompile(`^livedump console: (http://(127\.0\.0\.1:\d+)/\?token=(\S+))$`)

// startConsole runs `livedumpctl ui --no-browser` with the given config and
// reads the URL line it prints.
func (e *env) startConsole(name, cfg string) (console, error) {
	cmd := exec.Command(e.ctl, "ui", "--no-browser")
	cmd.Env = append(os.Environ(), "LIVEDUMPCTL_CONFIG="+cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(e.work, "ui-"+name+".log"))
	if err != nil {
		return console{}, err
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return console{}, err
	}
	if err := cmd.Start(); err != nil {
		return console{}, fmt.Errorf("livedumpctl ui (%s): %w", name, err)
	}
	e.procs = append(e.procs, cmd)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			fmt.Fprintln(logf, "stdout: "+sc.Text())
			if first {
				lines <- sc.Text()
				first = false
			}
		}
		if first {
			close(lines)
		}
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			return console{}, fmt.Errorf("livedumpctl ui (%s) printed no URL line; see %s", name, logf.Name())
		}
		m := consoleLine.FindStringSubmatch(line)
		if m == nil {
			return console{}, fmt.Errorf("livedumpctl ui (%s): want the line %q, got %q", name, "livedump console: http://127.0.0.1:PORT/?token=TOKEN", line)
		}
		tok, err := url.QueryUnescape(m[3])
		if err != nil {
			return console{}, err
		}
		return console{base: "http://" + m[2], host: m[2], token: tok}, nil
	case <-time.After(30 * time.Second):
		return console{}, fmt.Errorf("livedumpctl ui (%s) printed nothing within 30 s; see %s", name, logf.Name())
	}
}

func (e *env) startBrowser() error {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(filepath.Join(e.work, "chromium-profile")),
		chromedp.WindowSize(1280, 900),
		// On this closed network Chromium otherwise hangs on its own
		// background connections (the machine notes).
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	e.allocCancel = allocCancel
	e.browserCtx, e.browserCancel = chromedp.NewContext(allocCtx)
	if err := chromedp.Do(e.browserCtx); err != nil {
		return fmt.Errorf("start %s: %w", chromiumPath, err)
	}
	return nil
}

// spawn starts a process in a group of its own (killed at the end, with
// its children), stdout and stderr to files.
func (e *env) spawn(cmd *exec.Cmd, stdout, stderr string) error {
	o, err := os.Create(stdout)
	if err != nil {
		return err
	}
	er, err := os.Create(stderr)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = o, er
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	e.procs = append(e.procs, cmd)
	go func() { _ = cmd.Wait() }()
	return nil
}

// exited says whether a spawned process has ended.
func (e *env) exited(cmd *exec.Cmd) error {
	if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
		return fmt.Errorf("%s exited", filepath.Base(cmd.Path))
	}
	return nil
}

// close stops the browser and every process group (TERM, then KILL).
func (e *env) close() {
	if e.browserCancel != nil {
		e.browserCancel()
	}
	if e.allocCancel != nil {
		e.allocCancel()
	}
	for i := len(e.procs) - 1; i >= 0; i-- {
		p := e.procs[i].Process
		_ = syscall.Kill(-p.Pid, syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && syscall.Kill(-p.Pid, 0) == nil {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
}

// printLogs prints the tail of every log, for a failed run.
func (e *env) printLogs() {
	logs, _ := filepath.Glob(filepath.Join(e.work, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(os.Stderr, "--- tail of %s\n%s\n", l, strings.Join(lines, "\n"))
	}
}

// run runs livedumpctl as the dev admin and returns its stdout.
func (e *env) run(args ...string) (string, error) {
	return e.runAs(e.adminCfg, args...)
}

func (e *env) runAs(cfg string, args ...string) (string, error) {
	cmd := exec.Command(e.ctl, args...)
	cmd.Env = append(os.Environ(), "LIVEDUMPCTL_CONFIG="+cfg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("livedumpctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ctlJSON runs livedumpctl ARGS -o json as the admin and decodes it.
func (e *env) ctlJSON(v any, args ...string) error {
	out, err := e.run(append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("livedumpctl %s -o json: %v: %.300s", strings.Join(args, " "), err, out)
	}
	return nil
}

// waitFor calls f until it returns nil, or returns its last error.
func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", d, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// tab opens a tab in a fresh browser context (its own cookies) signed in to
// the console c: the token URL sets the cookie and redirects.
func (e *env) tab(t *testing.T, c console) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(e.browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
	defer tcancel()
	if err := chromedp.Do(tctx, chromedp.Navigate(c.loginURL("/"))); err != nil {
		t.Fatalf("open the console's URL: %v", err)
	}
	loc, err := chromedp.Run(tctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(loc, "token=") {
		t.Fatalf("the token URL did not redirect to a URL without the token: at %s", loc)
	}
	return ctx
}
