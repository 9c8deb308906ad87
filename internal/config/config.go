// Package config is the one configuration loader of the livedump programs
// (controller, agent and livedumpctl). It wraps viper with a single,
// documented precedence:
//
//	flag (only when given on the command line) > environment > config file > default
//
// A config file never overrides a flag, and a key in a config file that the
// program does not know is an error naming the key and the file, so a typo
// never silently falls back to a default.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/livedump/livedump/internal/editdist"
)

// Options describe one program's configuration sources.
type Options struct {
	// File is an explicit config file ("" = no file). A missing explicit
	// file is an error. Its type comes from the extension: .yaml, .yml,
	// .json or .toml.
	File string
	// EnvPrefix names the environment variables: with "LIVEDUMP", key
	// "tls.ca_file" is read from LIVEDUMP_TLS_CA_FILE ('.' and '-' become
	// '_'). An empty prefix disables environment variables.
	EnvPrefix string
	// Flags holds the command-line flags. A flag overrides the other sources
	// only when it was given on the command line (pflag's Changed); its
	// default value is never used, Defaults is.
	Flags *pflag.FlagSet
	// FlagKeys maps a config key to the name of the flag that sets it, e.g.
	// "tls.ca_file" -> "ca-file". A known key without an entry is bound to
	// the flag named like the key, or like the key with '.' and '_' turned
	// into '-', if Flags has one; an entry with an empty flag name binds no
	// flag.
	FlagKeys map[string]string
	// Defaults maps each key to its default value. The set of keys in
	// Defaults is the set of KNOWN keys: any other key in the config file is
	// an error. Nested keys are written with dots ("tls.ca_file").
	Defaults map[string]any
}

// extensions are the config file types Load accepts.
var extensions = []string{".yaml", ".yml", ".json", ".toml"}

// Config is a loaded configuration: the viper instance holding every known
// key (read with the usual getters, GetString, ...) and what Load learnt
// about where each value came from, which Path and FromFile need. One
// built around a bare viper (&Config{Viper: v}) has no file: Path leaves
// every value as it is.
type Config struct {
	*viper.Viper
	// dir is the absolute directory of the config file, "" without one.
	dir string
	// fromFile holds the (lower-case) keys whose value is the file's.
	fromFile map[string]bool
	// file is the absolute name of the config file, "" without one.
	file string
	// flags maps a (lower-case) key to the flag bound to it.
	flags map[string]*pflag.Flag
	// env maps a (lower-case) key to its environment variable, set or not.
	env map[string]string
}

// Load builds the configuration described by o. Every key of o.Defaults is
// readable from the result with the usual viper getters (GetString, ...);
// use its Duration for durations and Path for file names.
func Load(o Options) (*Config, error) {
	known := make(map[string]bool, len(o.Defaults))
	for k := range o.Defaults {
		known[strings.ToLower(k)] = true
	}
	for k := range o.FlagKeys {
		if !known[strings.ToLower(k)] {
			return nil, fmt.Errorf("config: flag key %q is not among the known keys (Defaults)", k)
		}
	}

	v := viper.New()
	c := &Config{Viper: v, fromFile: map[string]bool{}}
	var fileKeys []string
	if o.File != "" {
		abs, err := filepath.Abs(o.File)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", o.File, err)
		}
		if err := readFile(v, abs); err != nil {
			return nil, err
		}
		// Before anything else is bound, AllKeys lists exactly the file's
		// keys, nested ones flattened with dots.
		fileKeys = v.AllKeys()
		slices.Sort(fileKeys)
		for _, k := range fileKeys {
			if !known[k] {
				return nil, fmt.Errorf("config file %s: unknown key %q%s", abs, k, suggest(k, known))
			}
		}
		c.dir = filepath.Dir(abs)
		c.file = abs
	}

	envName := map[string]string{}
	for k, def := range o.Defaults {
		v.SetDefault(k, def)
		if o.EnvPrefix != "" {
			envName[strings.ToLower(k)] = EnvVar(o.EnvPrefix, k)
			if err := v.BindEnv(k, EnvVar(o.EnvPrefix, k)); err != nil {
				return nil, fmt.Errorf("config: bind env for %q: %w", k, err)
			}
		}
	}

	flagged := map[string]*pflag.Flag{}
	if o.Flags != nil {
		for k := range o.Defaults {
			f, err := flagFor(o, k)
			if err != nil {
				return nil, err
			}
			if f == nil {
				continue
			}
			if err := v.BindPFlag(k, f); err != nil {
				return nil, fmt.Errorf("config: bind flag --%s to %q: %w", f.Name, k, err)
			}
			flagged[strings.ToLower(k)] = f
		}
	}

	c.flags, c.env = flagged, envName
	// Record which keys take their value from the file, so that Path
	// resolves only those relative to the file's directory.
	for _, k := range fileKeys {
		if f := flagged[k]; f != nil && f.Changed {
			continue
		}
		if name := envName[k]; name != "" && os.Getenv(name) != "" {
			continue
		}
		c.fromFile[k] = true
	}
	return c, nil
}

// readFile reads the config file at path into v.
func readFile(v *viper.Viper, path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if !slices.Contains(extensions, ext) {
		return fmt.Errorf("config file %s: unsupported type %q: use .yaml, .yml, .json or .toml", path, ext)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("config file %s: does not exist", path)
	case err != nil:
		return fmt.Errorf("config file %s: %w", path, err)
	case st.IsDir():
		return fmt.Errorf("config file %s: is a directory", path)
	}
	v.SetConfigFile(path)
	v.SetConfigType(strings.TrimPrefix(ext, "."))
	if err := v.ReadInConfig(); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// flagFor returns the flag bound to key, or nil if there is none.
func flagFor(o Options, key string) (*pflag.Flag, error) {
	if name, ok := lookupFold(o.FlagKeys, key); ok {
		if name == "" {
			return nil, nil
		}
		f := o.Flags.Lookup(name)
		if f == nil {
			return nil, fmt.Errorf("config: key %q is mapped to flag --%s, which does not exist", key, name)
		}
		return f, nil
	}
	if f := o.Flags.Lookup(key); f != nil {
		return f, nil
	}
	return o.Flags.Lookup(strings.NewReplacer(".", "-", "_", "-").Replace(key)), nil
}

func lookupFold(m map[string]string, key string) (string, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// suggest names the known key closest to an unknown one, for typos such as
// "controler" or "tls.cafile".
func suggest(unknown string, known map[string]bool) string {
	best, bestDist := "", 3
	for k := range known {
		if d := editdist.Distance(unknown, k, 3); d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// EnvVar returns the environment variable that sets key under prefix, e.g.
// EnvVar("LIVEDUMP", "tls.ca_file") is "LIVEDUMP_TLS_CA_FILE".
func EnvVar(prefix, key string) string {
	name := strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
	if prefix == "" {
		return name
	}
	return strings.ToUpper(prefix) + "_" + name
}

// Duration returns the duration at key. Strings are parsed with
// time.ParseDuration ("15s", "1h30m"); a bare number is rejected because
// its unit would be a guess. The error names the key.
func (c *Config) Duration(key string) (time.Duration, error) {
	switch val := c.Get(key).(type) {
	case nil:
		return 0, nil
	case time.Duration:
		return val, nil
	case string:
		s := strings.TrimSpace(val)
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a duration: want a number with a unit, e.g. 30s, 5m or 1h30m", key, val)
		}
		return d, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		if fmt.Sprint(val) == "0" {
			return 0, nil
		}
		return 0, fmt.Errorf("%s: %v is not a duration: add a unit, e.g. %vs", key, val, val)
	default:
		return 0, fmt.Errorf("%s: %v (%T) is not a duration: want e.g. 30s, 5m or 1h30m", key, val, val)
	}
}

// FileDir returns the absolute directory of the config file c was loaded
// from, or "" when no file was used.
func (c *Config) FileDir() string { return c.dir }

// ResolvePath resolves p against base: an empty p, an absolute p or an
// empty base leave p unchanged, and a relative p becomes base/p.
func ResolvePath(base, p string) string {
	if p == "" || base == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

// Path returns the file name at key. A relative path written in the config
// file is resolved against the file's directory, so a config file can sit
// beside its certificates; a relative path from a flag or the environment
// stays relative to the working directory, as a shell user expects.
func (c *Config) Path(key string) string {
	p := c.GetString(key)
	if c.fromFile[strings.ToLower(key)] {
		return ResolvePath(c.dir, p)
	}
	return p
}

// FromFile reports whether the value at key comes from the config file,
// rather than from a flag, the environment or a default.
func (c *Config) FromFile(key string) bool { return c.fromFile[strings.ToLower(key)] }

// Describe names the setting at key with its value as the user wrote it,
// for an error about that value: "--listen 127.0.0.1:7443 (listen)" when
// it comes from a flag given on the command line or from the default,
// "LIVEDUMP_CONTROLLER_LISTEN=127.0.0.1:7443 (--listen, listen)" from the
// environment, "listen: 127.0.0.1:7443 in /etc/livedump/controller.yaml
// (--listen)" from the config file. value is the value in use, which a
// program may have derived from the configured one.
func (c *Config) Describe(key string, value any) string {
	k := strings.ToLower(key)
	flag := ""
	if f := c.flags[k]; f != nil {
		flag = "--" + f.Name
	}
	switch {
	case flag != "" && c.flags[k].Changed:
		return fmt.Sprintf("%s %v (%s)", flag, value, key)
	case c.env[k] != "" && os.Getenv(c.env[k]) != "":
		if flag == "" {
			return fmt.Sprintf("%s=%v (%s)", c.env[k], value, key)
		}
		return fmt.Sprintf("%s=%v (%s, %s)", c.env[k], value, flag, key)
	case c.fromFile[k]:
		if flag == "" {
			return fmt.Sprintf("%s: %v in %s", key, value, c.file)
		}
		return fmt.Sprintf("%s: %v in %s (%s)", key, value, c.file, flag)
	case flag != "":
		return fmt.Sprintf("%s %v (%s)", flag, value, key)
	}
	return fmt.Sprintf("%s %v", key, value)
}
