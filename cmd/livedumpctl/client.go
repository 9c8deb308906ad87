package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/internal/config"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

type fleetClient = livedumpv1.FleetServiceClient

// Config keys; each is also the name of its flag, and LIVEDUMP_<KEY> is its
// environment variable.
const (
	keyController = "controller"
	keyCA         = "ca"
	keyCert       = "cert"
	keyKey        = "key"
	keyOutput     = "output"
	keyTimeout    = "timeout"
)

const (
	envPrefix     = "LIVEDUMP"
	envConfigFile = "LIVEDUMPCTL_CONFIG"

	outputTable    = "table"
	outputJSON     = "json"
	defaultOutput  = outputTable
	defaultTimeout = 15 * time.Second
)

// settings is the resolved configuration of one invocation.
type settings struct {
	configFile string // the file used, "" if none
	controller string
	ca         string
	cert       string
	key        string
	output     string
	timeout    time.Duration
}

// defaultConfigFile is <user config dir>/livedump/livedumpctl.yaml, or ""
// when the platform has no user config dir.
func defaultConfigFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "livedump", "livedumpctl.yaml")
}

// configFile picks the config file: --config, else $LIVEDUMPCTL_CONFIG
// (both must exist), else the default file if it exists.
func (a *app) configFile() (string, error) {
	if a.configFlag != "" {
		return a.configFlag, nil
	}
	if f := os.Getenv(envConfigFile); f != "" {
		return f, nil
	}
	f := defaultConfigFile()
	if f == "" {
		return "", nil
	}
	switch _, err := os.Stat(f); {
	case err == nil:
		return f, nil
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	default:
		return "", fmt.Errorf("config file %s: %w", f, err)
	}
}

// settings resolves the configuration for cmd, whose flags have been parsed.
func (a *app) settings(cmd *cobra.Command) (settings, error) {
	file, err := a.configFile()
	if err != nil {
		return settings{}, err
	}
	v, err := config.Load(config.Options{
		File:      file,
		EnvPrefix: envPrefix,
		Flags:     cmd.Flags(),
		FlagKeys: map[string]string{
			keyController: keyController, keyCA: keyCA, keyCert: keyCert,
			keyKey: keyKey, keyOutput: keyOutput, keyTimeout: keyTimeout,
		},
		Defaults: map[string]any{
			keyController: "", keyCA: "", keyCert: "", keyKey: "",
			keyOutput: defaultOutput, keyTimeout: defaultTimeout,
		},
	})
	if err != nil {
		return settings{}, err
	}
	s := settings{
		configFile: file,
		controller: strings.TrimSpace(v.GetString(keyController)),
		ca:         v.Path(keyCA),
		cert:       v.Path(keyCert),
		key:        v.Path(keyKey),
		output:     strings.ToLower(strings.TrimSpace(v.GetString(keyOutput))),
	}
	if file != "" {
		s.configFile, _ = filepath.Abs(file)
	}
	if s.timeout, err = v.Duration(keyTimeout); err != nil {
		return settings{}, usageErrorf(cmd, "%v", err)
	}
	// Bad values are usage errors, wherever they were set (flag,
	// environment or file).
	if s.timeout <= 0 {
		return settings{}, usageErrorf(cmd, "timeout: %s: must be positive", s.timeout)
	}
	if ok, formats := outputAllowed(cmd, s.output); !ok {
		return settings{}, usageErrorf(cmd, "output %q: must be %s", v.GetString(keyOutput), formats)
	}
	if err := s.checkConnection(); err != nil {
		return settings{}, err
	}
	if host, port, err := net.SplitHostPort(s.controller); err != nil || host == "" || port == "" {
		return settings{}, usageErrorf(cmd, "controller %q: want HOST:PORT, e.g. controller.example.com:7443", s.controller)
	}
	return s, nil
}

// checkConnection reports the connection settings that are missing, and
// every way to set them.
func (s settings) checkConnection() error {
	type req struct{ key, val, arg string }
	var missing []req
	for _, r := range []req{
		{keyController, s.controller, "HOST:PORT"},
		{keyCA, s.ca, "FILE"},
		{keyCert, s.cert, "FILE"},
		{keyKey, s.key, "FILE"},
	} {
		if r.val == "" {
			missing = append(missing, r)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	file := s.configFile
	if file == "" {
		file = defaultConfigFile()
	}
	if file == "" {
		file = "a config file given with --config"
	}
	if len(missing) == 1 {
		m := missing[0]
		return fmt.Errorf("%s is not set: use --%s %s, %s, or %q in %s",
			m.key, m.key, m.arg, config.EnvVar(envPrefix, m.key), m.key+": "+m.arg, file)
	}
	var keys, flags, envs []string
	for _, m := range missing {
		keys = append(keys, m.key)
		flags = append(flags, "--"+m.key)
		envs = append(envs, config.EnvVar(envPrefix, m.key))
	}
	return fmt.Errorf("%s are not set: use the flags %s, the variables %s, or those keys in %s",
		list(keys), list(flags), list(envs), file)
}

// list joins items as "a, b and c".
func list(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// tlsConfig builds the client side of mutual TLS 1.3: the controller must
// present a certificate for serverName that chains to the CA file (and only
// to it: the system roots are not consulted); we present the operator
// certificate.
func tlsConfig(s settings, serverName string, now time.Time) (*tls.Config, error) {
	cas, err := pki.ReadCerts(s.ca)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	chain, err := pki.ReadCerts(s.cert)
	if err != nil {
		return nil, fmt.Errorf("cert: %w", err)
	}
	key, err := pki.ReadKey(s.key)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	leaf := chain[0]
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("key %s does not match certificate %s", s.key, s.cert)
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("cert %s expired at %s: ask an admin for a new operator certificate", s.cert, leaf.NotAfter.Format(time.RFC3339))
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		ServerName:   serverName,
		Certificates: []tls.Certificate{{Certificate: raw, PrivateKey: key, Leaf: leaf}},
	}, nil
}

// dialController opens a gRPC client connection to the controller. gRPC
// connects lazily: a controller that is down shows up at the first call.
func dialController(_ context.Context, s settings) (fleetClient, func() error, error) {
	host, port, err := net.SplitHostPort(s.controller)
	if err != nil || host == "" || port == "" {
		return nil, nil, fmt.Errorf("controller %q: want HOST:PORT, e.g. controller.example.com:7443", s.controller)
	}
	cfg, err := tlsConfig(s, host, time.Now())
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(s.controller, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, nil, fmt.Errorf("controller %s: %w", s.controller, err)
	}
	return livedumpv1.NewFleetServiceClient(conn), conn.Close, nil
}

// connect loads the settings and opens the connection, for the commands
// that stream and so cannot use call. The caller closes the connection.
func (a *app) connect(cmd *cobra.Command) (fleetClient, settings, func() error, error) {
	s, err := a.settings(cmd)
	if err != nil {
		return nil, s, nil, err
	}
	client, closeConn, err := a.dial(cmd.Context(), s)
	if err != nil {
		return nil, s, nil, err
	}
	return client, s, closeConn, nil
}

// rpc is a FleetServiceClient method expression, such as
// livedumpv1.FleetServiceClient.ListAgents.
type rpc[Req, Resp any] func(fleetClient, context.Context, Req, ...grpc.CallOption) (Resp, error)

// call loads the settings, connects, and makes one call bounded by the
// timeout. Local validation happens before call, so bad input never needs a
// controller.
func call[Req, Resp any](a *app, cmd *cobra.Command, method rpc[Req, Resp], req Req) (Resp, settings, error) {
	return callLonger(a, cmd, 0, method, req)
}

// callLonger is call with extra time on top of the timeout, for calls that
// wait on agents by design (provisioning).
func callLonger[Req, Resp any](a *app, cmd *cobra.Command, extra time.Duration, method rpc[Req, Resp], req Req) (Resp, settings, error) {
	var zero Resp
	client, s, closeConn, err := a.connect(cmd)
	if err != nil {
		return zero, s, err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(cmd.Context(), s.timeout+extra)
	defer cancel()
	resp, err := method(client, ctx, req)
	if err != nil {
		return zero, s, rpcError(err, s)
	}
	return resp, s, nil
}

// rpcError turns a gRPC error into one readable line: the status code in
// words, then the server's message.
func rpcError(err error, s settings) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := oneLine(st.Message())
	switch st.Code() {
	case codes.DeadlineExceeded:
		return fmt.Errorf("no answer from controller %s within %s (raise --timeout or LIVEDUMP_TIMEOUT)", s.controller, s.timeout)
	case codes.Canceled:
		return errors.New("interrupted")
	case codes.Unavailable:
		return fmt.Errorf("controller %s unavailable: %s", s.controller, msg)
	}
	words := codeWords(st.Code())
	if msg == "" {
		return errors.New(words)
	}
	if st.Code() == codes.Unknown || strings.HasPrefix(strings.ToLower(msg), words) {
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %s", words, msg)
}

// codeWords spells a gRPC code in lower-case words: PermissionDenied
// becomes "permission denied".
func codeWords(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
