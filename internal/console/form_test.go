package console

import (
	"net/url"
	"strings"
	"testing"
	"time"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func form(edit func(url.Values)) captureForm {
	v := url.Values{"selector": {"role=vdi"}, "processes": {"ms-teams.exe, outlook.exe"}, "statuses": {"STATUS_INVALID_PARAMETER"},
		"action": {"stacks"}, "expire": {"10m"}, "ustack": {"12"}, "lkd_mode": {"0"}, "upload": {"full"}}
	if edit != nil {
		edit(v)
	}
	return readForm(v)
}

func TestFormSpec(t *testing.T) {
	spec, err := form(nil).spec()
	if err != nil {
		t.Fatal(err)
	}
	if spec.GetSelector() != "role=vdi" || strings.Join(spec.GetProcesses(), "|") != "ms-teams.exe|outlook.exe" ||
		spec.GetUstack() != 12 || spec.GetAction() != livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS ||
		spec.GetExpire().AsDuration() != 10*time.Minute || spec.GetUpload() != livedumpv1.UploadMode_UPLOAD_MODE_FULL {
		t.Fatalf("spec: %v", spec)
	}
	od, err := form(func(v url.Values) { v.Set("action", "on-demand"); v.Del("statuses"); v.Del("processes") }).spec()
	if err != nil || !od.GetOnDemand() || od.GetAction() != livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP {
		t.Fatalf("on-demand: %v %v", od, err)
	}
}

// Each bad value is refused naming its field; none is partly used.
func TestFormSpecRefusals(t *testing.T) {
	for _, tc := range []struct {
		edit  func(url.Values)
		field string
	}{
		{func(v url.Values) { v.Set("selector", "") }, "selector: required"},
		{func(v url.Values) { v.Set("selector", "role in (vdi") }, "selector: "},
		{func(v url.Values) { v.Set("processes", "a.exe,,b.exe") }, "processes: "},
		{func(v url.Values) { v.Set("processes", "a.exe,") }, "processes: "},
		{func(v url.Values) { v.Set("statuses", "") }, "statuses: at least one"},
		{func(v url.Values) { v.Set("statuses", "STATUS_X\nsyscall:::entry") }, "statuses: contains the control character"},
		{func(v url.Values) { v.Set("action", "Stacks") }, "action: "},
		{func(v url.Values) { v.Set("ustack", "0") }, "ustack: "},
		{func(v url.Values) { v.Set("ustack", "101") }, "ustack: "},
		{func(v url.Values) { v.Set("per_agent", "-1") }, "per_agent: "},
		{func(v url.Values) { v.Set("max_dumps", "1e3") }, "max_dumps: "},
		{func(v url.Values) { v.Set("lkd_mode", "x") }, "lkd_mode: "},
		{func(v url.Values) { v.Set("upload", "hash") }, "upload: "},
		{func(v url.Values) { v.Set("expire", "") }, "expire: required"},
		{func(v url.Values) { v.Set("expire", "10") }, "expire: "},
		{func(v url.Values) { v.Set("expire", "30s") }, "expire: 30s: must be between"},
		{func(v url.Values) { v.Set("expire", "169h") }, "expire: "},
	} {
		_, err := form(tc.edit).spec()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("want an error starting %q, got %v", tc.field, err)
		}
	}
}

func TestListen(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:0", "localhost:0", "[::1]:0"} {
		ln, err := Listen(ok)
		if err != nil {
			if ok == "[::1]:0" && strings.Contains(err.Error(), "cannot assign") {
				continue // no IPv6 loopback here
			}
			t.Fatalf("Listen(%q): %v", ok, err)
		}
		ln.Close()
	}
	for _, bad := range []string{"0.0.0.0:0", ":0", "10.0.0.1:0", "[::]:0", "example.com:0", "127.0.0.1", "127.0.0.1:99999"} {
		if ln, err := Listen(bad); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) accepted", bad)
		}
	}
}
