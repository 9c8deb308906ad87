package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/livedump/livedump/agent/host"
)

// fileFormat is the on-disk machine. It is JSON, sorted and indented so a
// developer can read and diff the simulated machine's state; registry values
// carry their Windows type name so that part reads like a .reg export.
type fileFormat struct {
	Format  int          `json:"format"`
	Machine *fileMachine `json:"machine"`
	Keys    []fileKey    `json:"keys"`
}

// fileMachine is machine on disk. The fields whose zero value would be a
// plausible but different machine (a boot time, VBS capability and status)
// are pointers, so that a hand-edited file that leaves them out is refused
// rather than read as something nobody wrote.
type fileMachine struct {
	BootTime        *time.Time      `json:"boot_time"`
	BCDDtrace       string          `json:"bcd_dtrace"`
	BCDDtraceAtBoot string          `json:"bcd_dtrace_at_boot"`
	VBSCapable      *bool           `json:"vbs_capable"`
	VBSStatus       *host.VBSStatus `json:"vbs_status"`
	// HVCIRunning and NoBitLockerFeature are absent from files written
	// before they existed, where false is what those machines were.
	HVCIRunning        bool                  `json:"hvci_running,omitempty"`
	NoBitLockerFeature bool                  `json:"no_bitlocker_feature,omitempty"`
	Volumes            map[string]fileVolume `json:"volumes"`
	Products           []fileProduct         `json:"products"`
	Reboot             *fileReboot           `json:"reboot"`
	RecoveryRequired   bool                  `json:"recovery_required"`
}

type fileVolume struct {
	Encrypted        bool `json:"encrypted"`
	SuspendedReboots int  `json:"suspended_reboots"`
}

type fileProduct struct {
	Product string `json:"product"`
	// Code is absent from files written before it existed: the code is
	// then derived from the product name, as for packages without one.
	Code    string   `json:"product_code,omitempty"`
	Version string   `json:"version"`
	Files   []string `json:"files"`
	Dirs    []string `json:"dirs"`
}

type fileReboot struct {
	Requested time.Time `json:"requested"`
	Due       time.Time `json:"due"`
	Message   string    `json:"message"`
}

type fileKey struct {
	Key    string      `json:"key"`
	Values []fileValue `json:"values,omitempty"`
}

type fileValue struct {
	Name string          `json:"name"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// formatVersion lets a later agent refuse, rather than misread, a file
// written by a different layout. Format 1 held only the registry.
const formatVersion = 2

// save writes the machine to a temporary file and renames it over the old
// one, so a crash leaves either the old or the new machine, never half of
// one. The caller holds h.mu.
func (h *Host) save() error {
	data, err := h.encode()
	if err != nil {
		return fmt.Errorf("sim: encoding machine state: %w", err)
	}
	dir := filepath.Dir(h.path)
	tmp, err := os.CreateTemp(dir, StateFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("sim: saving machine state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("sim: saving machine state: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("sim: saving machine state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sim: saving machine state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sim: saving machine state: %w", err)
	}
	if err := os.Rename(tmp.Name(), h.path); err != nil {
		return fmt.Errorf("sim: saving machine state: %w", err)
	}
	// Make the rename itself durable; not every filesystem supports
	// syncing a directory, and the data is already safe, so errors are
	// ignored.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// encode serializes the machine in a stable order.
func (h *Host) encode() ([]byte, error) {
	ff := fileFormat{Format: formatVersion, Machine: encodeMachine(h.m), Keys: make([]fileKey, 0, len(h.keys))}
	for _, k := range h.keys {
		fk := fileKey{Key: k.path}
		for _, e := range k.values {
			var data any
			switch e.value.Type {
			case host.String, host.ExpandString:
				data = e.value.Str
			case host.MultiString:
				data = e.value.Strs
			default:
				data = e.value.Num
			}
			raw, err := json.Marshal(data)
			if err != nil {
				return nil, err
			}
			fk.Values = append(fk.Values, fileValue{Name: e.name, Type: e.value.Type.String(), Data: raw})
		}
		sort.Slice(fk.Values, func(i, j int) bool { return fold(fk.Values[i].Name) < fold(fk.Values[j].Name) })
		ff.Keys = append(ff.Keys, fk)
	}
	sort.Slice(ff.Keys, func(i, j int) bool { return fold(ff.Keys[i].Key) < fold(ff.Keys[j].Key) })
	out, err := json.MarshalIndent(ff, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func encodeMachine(m *machine) *fileMachine {
	boot := m.bootTime
	capable := m.vbsCapable
	vbs := m.vbs
	fm := &fileMachine{
		BootTime:           &boot,
		BCDDtrace:          m.bcdStored.String(),
		BCDDtraceAtBoot:    m.bcdBoot.String(),
		VBSCapable:         &capable,
		VBSStatus:          &vbs,
		Volumes:            make(map[string]fileVolume, len(m.volumes)),
		Products:           []fileProduct{},
		RecoveryRequired:   m.recovery,
		HVCIRunning:        m.hvci,
		NoBitLockerFeature: m.noBitLocker,
	}
	for _, name := range sortedVolumes(m) {
		v := m.volumes[name]
		fm.Volumes[name] = fileVolume{Encrypted: v.encrypted, SuspendedReboots: v.suspendedBoots}
	}
	for _, p := range m.products {
		fm.Products = append(fm.Products, fileProduct{Product: p.name, Code: p.code, Version: p.version, Files: nonNil(p.files), Dirs: nonNil(p.dirs)})
	}
	sort.Slice(fm.Products, func(i, j int) bool { return fold(fm.Products[i].Product) < fold(fm.Products[j].Product) })
	if r := m.reboot; r != nil {
		fm.Reboot = &fileReboot{Requested: r.requested, Due: r.due, Message: r.message}
	}
	return fm
}

// nonNil makes an empty list read as [] rather than null in the file.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// load replaces the in-memory machine with data. It checks everything the
// write path checks, because the file may have been edited by hand and a
// state the real machine could not be in must not reach the agent.
func (h *Host) load(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ff fileFormat
	if err := dec.Decode(&ff); err != nil {
		return fmt.Errorf("corrupt state file: %w", err)
	}
	if dec.More() {
		return errors.New("corrupt state file: trailing data after the JSON object")
	}
	if ff.Format != formatVersion {
		return fmt.Errorf("state file format %d, this agent reads format %d", ff.Format, formatVersion)
	}
	m, err := decodeMachine(ff.Machine)
	if err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	for i := range ff.Keys {
		norm, err := host.NormalizeKey(ff.Keys[i].Key)
		if err != nil {
			return err
		}
		ff.Keys[i].Key = norm
	}
	// Parents sort before their children, so each component takes the
	// spelling of the first key that names it, as when the keys were made.
	sort.SliceStable(ff.Keys, func(i, j int) bool { return fold(ff.Keys[i].Key) < fold(ff.Keys[j].Key) })
	seen := make(map[string]string)
	for _, fk := range ff.Keys {
		norm := fk.Key
		if prev, dup := seen[fold(norm)]; dup {
			return fmt.Errorf("registry key %s listed twice (also as %s)", host.Quote(norm), host.Quote(prev))
		}
		seen[fold(norm)] = norm
		k, _ := h.createKey(norm)
		for _, fv := range fk.Values {
			if err := host.ValidateValueName(fv.Name); err != nil {
				return fmt.Errorf("registry key %s: %w", host.Quote(norm), err)
			}
			v, err := decodeValue(fv)
			if err != nil {
				return fmt.Errorf("registry key %s value %s: %w", host.Quote(norm), host.Quote(host.DisplayName(fv.Name)), err)
			}
			f := fold(fv.Name)
			if _, dup := k.values[f]; dup {
				return fmt.Errorf("registry key %s value %s listed twice", host.Quote(norm), host.Quote(host.DisplayName(fv.Name)))
			}
			k.values[f] = &entry{name: fv.Name, value: v}
		}
	}
	h.m = m
	return nil
}

// decodeMachine checks a stored machine against the same rules the methods
// enforce when they change it.
func decodeMachine(fm *fileMachine) (*machine, error) {
	if fm == nil {
		return nil, errors.New("missing")
	}
	m := &machine{volumes: map[string]*volume{}, products: map[string]*product{}, recovery: fm.RecoveryRequired}
	if fm.BootTime == nil || fm.BootTime.IsZero() {
		return nil, errors.New("boot_time is missing")
	}
	m.bootTime = fm.BootTime.UTC()
	var err error
	if m.bcdStored, err = parseBCD(fm.BCDDtrace); err != nil {
		return nil, fmt.Errorf("bcd_dtrace: %w", err)
	}
	if m.bcdBoot, err = parseBCD(fm.BCDDtraceAtBoot); err != nil {
		return nil, fmt.Errorf("bcd_dtrace_at_boot: %w", err)
	}
	if fm.VBSCapable == nil {
		return nil, errors.New("vbs_capable is missing")
	}
	m.vbsCapable = *fm.VBSCapable
	switch {
	case fm.VBSStatus == nil:
		return nil, errors.New("vbs_status is missing")
	case *fm.VBSStatus < host.VBSOff || *fm.VBSStatus > host.VBSRunning:
		return nil, fmt.Errorf("vbs_status %d: want 0, 1 or 2", *fm.VBSStatus)
	case *fm.VBSStatus == host.VBSRunning && !m.vbsCapable:
		return nil, errors.New("vbs_status 2 (running) on a machine that is not VBS-capable")
	}
	m.vbs = *fm.VBSStatus
	if fm.HVCIRunning && m.vbs != host.VBSRunning {
		return nil, errors.New("hvci_running without VBS running: memory integrity runs inside VBS")
	}
	m.hvci = fm.HVCIRunning
	m.noBitLocker = fm.NoBitLockerFeature
	for name, v := range fm.Volumes {
		if !volumePattern.MatchString(name) {
			return nil, fmt.Errorf("volume %s: want a drive letter such as \"C:\"", host.Quote(name))
		}
		if v.SuspendedReboots < 0 || v.SuspendedReboots > MaxSuspendReboots {
			return nil, fmt.Errorf("volume %s: suspended_reboots %d is outside 0..%d", name, v.SuspendedReboots, MaxSuspendReboots)
		}
		if v.SuspendedReboots > 0 && !v.Encrypted {
			return nil, fmt.Errorf("volume %s: suspended but not encrypted", name)
		}
		m.volumes[name] = &volume{encrypted: v.Encrypted, suspendedBoots: v.SuspendedReboots}
	}
	for name, v := range m.volumes {
		if v.encrypted && m.noBitLocker {
			return nil, fmt.Errorf("volume %s: encrypted on a machine without the BitLocker feature", name)
		}
	}
	if m.volumes[systemVolume] == nil {
		return nil, fmt.Errorf("volume %s is missing", systemVolume)
	}
	for _, fp := range fm.Products {
		p, err := decodeProduct(fp)
		if err != nil {
			return nil, err
		}
		if _, dup := m.products[fold(p.name)]; dup {
			return nil, fmt.Errorf("product %s listed twice", host.Quote(p.name))
		}
		m.products[fold(p.name)] = p
	}
	if r := fm.Reboot; r != nil {
		if d := r.Due.Sub(r.Requested); d < 0 || d > MaxRebootDelay {
			return nil, fmt.Errorf("reboot: due %v after the request, want 0..%v", d, MaxRebootDelay)
		}
		if !utf8.ValidString(r.Message) || strings.IndexByte(r.Message, 0) >= 0 || utf8.RuneCountInString(r.Message) > MaxRebootMessage {
			return nil, fmt.Errorf("reboot: message is not text of at most %d characters", MaxRebootMessage)
		}
		m.reboot = &rebootRequest{requested: r.Requested.UTC(), due: r.Due.UTC(), message: r.Message}
	}
	return m, nil
}

func decodeProduct(fp fileProduct) (*product, error) {
	mf := MSIManifest{Product: fp.Product, ProductCode: fp.Code, Version: fp.Version}
	if err := mf.validate(); err != nil {
		return nil, fmt.Errorf("product %s: %w", host.Quote(fp.Product), err)
	}
	p := &product{name: fp.Product, version: fp.Version, code: mf.code()}
	for _, list := range []struct {
		in  []string
		out *[]string
	}{{fp.Files, &p.files}, {fp.Dirs, &p.dirs}} {
		for _, s := range list.in {
			w, err := parseWinPath(s)
			if err != nil {
				return nil, fmt.Errorf("product %s: %w", host.Quote(fp.Product), err)
			}
			if len(w) == 0 {
				return nil, fmt.Errorf("product %s: the drive root cannot belong to a product", host.Quote(fp.Product))
			}
			*list.out = append(*list.out, w.String())
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(p.files)))) != len(p.files) {
		return nil, fmt.Errorf("product %s: a file is listed twice", host.Quote(fp.Product))
	}
	return p, nil
}

// parseBCD reads back BCDValue.String.
func parseBCD(s string) (host.BCDValue, error) {
	for _, v := range []host.BCDValue{{}, {Present: true, On: true}, {Present: true}} {
		if s == v.String() {
			return v, nil
		}
	}
	return host.BCDValue{}, fmt.Errorf("%s: want %q, %q or %q", host.Quote(s), host.BCDValue{}.String(), "on", "off")
}

// decodeValue parses one stored value, insisting that the data matches the
// declared type.
func decodeValue(fv fileValue) (host.Value, error) {
	t, err := host.ParseValueType(fv.Type)
	if err != nil {
		return host.Value{}, err
	}
	if len(fv.Data) == 0 {
		return host.Value{}, errors.New("missing data")
	}
	v := host.Value{Type: t}
	switch t {
	case host.String, host.ExpandString:
		err = json.Unmarshal(fv.Data, &v.Str)
	case host.MultiString:
		err = json.Unmarshal(fv.Data, &v.Strs)
	default:
		err = json.Unmarshal(fv.Data, &v.Num)
	}
	if err != nil {
		return host.Value{}, fmt.Errorf("%s data %s: %w", t, fv.Data, err)
	}
	if err := v.Validate(); err != nil {
		return host.Value{}, err
	}
	return canonical(v), nil
}
