// Command powershell is a test double for Windows PowerShell, for the Wine
// tests: .ci/wine/setup builds it for windows/amd64 and installs it as
// C:\windows\system32\WindowsPowerShell\v1.0\powershell.exe, over Wine's own
// stub. It accepts only the command line the agent's Windows host sends
// (host.PowerShellArgs) and recognizes its three scripts by what they call:
//
//	Suspend-BitLocker   suspends the drive in $d='X:' (BitLocker off, the
//	                    -RebootCount recorded) and prints its status JSON
//	GetProtectionStatus prints {"ProtectionStatus":N,"ReturnValue":0}
//	Win32_DeviceGuard   prints {"VirtualizationBasedSecurityStatus":N} (or
//	                    {"SecurityServicesRunning":[...]} for that script),
//	                    or nothing when the class is "missing"
//
// The answers come from teststate.WMIFile (defaults: VBS 0, BitLocker 0).
// Anything else exits 1, so a script the double does not know fails the test.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/livedump/livedump/tests/testbin/teststate"
)

const usage = "livedump test double for powershell.exe: supports only -NoProfile -NonInteractive -ExecutionPolicy Bypass -Command <one of the agent's WMI scripts>"

// prefix is the command line before the script, compared case-insensitively
// as powershell.exe does.
var prefix = []string{"-noprofile", "-noninteractive", "-executionpolicy", "bypass", "-command"}

var (
	driveRE  = regexp.MustCompile(`\$d='([A-Z]:)';`)
	rebootRE = regexp.MustCompile(`-RebootCount (\d+)\b`)
)

func main() {
	out, err := run(os.Args[1:])
	if err != nil {
		// PowerShell's own errors look like "Cmdlet : message".
		fmt.Fprintf(os.Stderr, "%s\r\n", err)
		os.Exit(1)
	}
	if out != "" {
		fmt.Print(out + "\r\n")
	}
}

func run(args []string) (string, error) {
	if len(args) <= len(prefix) {
		return "", fmt.Errorf("%s; got %q", usage, args)
	}
	for i, p := range prefix {
		if strings.ToLower(args[i]) != p {
			return "", fmt.Errorf("%s; got %q", usage, args)
		}
	}
	script := strings.Join(args[len(prefix):], " ")
	if !strings.Contains(script, "ConvertTo-Json -Compress") {
		return "", fmt.Errorf("%s; the script prints no JSON: %q", usage, script)
	}
	var st teststate.WMI
	if err := teststate.Load(teststate.WMIFile, &st); err != nil {
		return "", err
	}
	switch {
	case strings.Contains(script, "Suspend-BitLocker"):
		d, err := drive(script)
		if err != nil {
			return "", err
		}
		m := rebootRE.FindStringSubmatch(script)
		if m == nil {
			return "", fmt.Errorf("Suspend-BitLocker : no -RebootCount in %q", script)
		}
		n, _ := strconv.Atoi(m[1])
		if st.BitLockerMissing {
			return "", fmt.Errorf("Suspend-BitLocker : The term 'Suspend-BitLocker' is not recognized as the name of a cmdlet")
		}
		if st.BitLocker == nil {
			st.BitLocker = map[string]int{}
		}
		if st.Suspended == nil {
			st.Suspended = map[string]int{}
		}
		st.BitLocker[d] = 0
		st.Suspended[d] = n
		if err := teststate.Save(teststate.WMIFile, &st); err != nil {
			return "", err
		}
		return protection(0)
	case strings.Contains(script, "GetProtectionStatus"):
		d, err := drive(script)
		if err != nil {
			return "", err
		}
		if st.BitLockerMissing {
			// The namespace is missing: a script that catches
			// InvalidNamespace goes on to its own answer.
			if strings.Contains(script, "'InvalidNamespace'") && strings.Contains(script, "BitLockerFeature='absent'") {
				return `{"BitLockerFeature":"absent"}`, nil
			}
			return "", fmt.Errorf("Get-CimInstance : Invalid namespace")
		}
		return protection(st.BitLocker[d])
	case strings.Contains(script, "Win32_DeviceGuard") && strings.Contains(script, "SecurityServicesRunning"):
		if st.DeviceGuardMissing {
			return "", nil
		}
		running := st.SecurityServicesRunning
		if running == nil {
			running = []int{}
		}
		b, err := json.Marshal(map[string][]int{"SecurityServicesRunning": running})
		return string(b), err
	case strings.Contains(script, "Win32_DeviceGuard"):
		if st.DeviceGuardMissing {
			return "", nil
		}
		b, err := json.Marshal(map[string]int{"VirtualizationBasedSecurityStatus": st.VBSStatus})
		return string(b), err
	}
	return "", fmt.Errorf("%s; unrecognized script %q", usage, script)
}

func drive(script string) (string, error) {
	m := driveRE.FindStringSubmatch(script)
	if m == nil {
		return "", fmt.Errorf("Get-CimInstance : no drive ($d='X:') in %q", script)
	}
	return m[1], nil
}

func protection(status int) (string, error) {
	return fmt.Sprintf(`{"ProtectionStatus":%d,"ReturnValue":0}`, status), nil
}
