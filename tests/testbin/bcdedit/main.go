// Command bcdedit is a test double for Windows' bcdedit.exe, for the Wine
// tests: .ci/wine/setup builds it for windows/amd64 and installs it as
// C:\windows\system32\bcdedit.exe, where the agent runs the real one. It
// knows exactly the three commands the agent sends, and keeps the dtrace
// element of {current} in teststate.BCDFile:
//
//	bcdedit /enum {current}              en-US listing, "dtrace Yes|No" only when set
//	bcdedit /set {current} dtrace on|off "The operation completed successfully."
//	bcdedit /deletevalue {current} dtrace the same, or bcdedit's error when not set
//
// Anything else exits 1 with a message, so an agent that starts sending
// something new fails its tests instead of talking to a double that pretends.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/livedump/livedump/tests/testbin/teststate"
)

const usage = "livedump test double for bcdedit.exe: supports only /enum {current}, /set {current} dtrace on|off, /deletevalue {current} dtrace"

// entry is the en-US listing of a Windows 11 loader entry, as in
// agent/host/testdata/bcdedit/en-US-unset.txt.
var entry = []string{
	"",
	"Windows Boot Loader",
	"-------------------",
	"identifier              {current}",
	"device                  partition=C:",
	`path                    \WINDOWS\system32\winload.efi`,
	"description             Windows 11",
	"locale                  en-US",
	"inherit                 {bootloadersettings}",
	"recoverysequence        {92f49998-fef7-11e8-a8e2-e508765ab07c}",
	"displaymessageoverride  Recovery",
	"recoveryenabled         Yes",
	"isolatedcontext         Yes",
	"allowedinmemorysettings 0x15000075",
	"osdevice                partition=C:",
	`systemroot              \WINDOWS`,
	"resumeobject            {92f49995-fef7-11e8-a8e2-e508765ab07c}",
	"nx                      OptIn",
	"bootmenupolicy          Standard",
}

const ok = "The operation completed successfully."

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprint(os.Stderr, crlf(err.Error()))
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	var st teststate.BCD
	if err := teststate.Load(teststate.BCDFile, &st); err != nil {
		return 1, err
	}
	lower := make([]string, len(args))
	for i, a := range args {
		lower[i] = strings.ToLower(a)
	}
	switch strings.Join(lower, " ") {
	case "/enum {current}":
		lines := entry
		if st.Dtrace != nil {
			lines = append(lines[:len(lines):len(lines)], "dtrace                  "+yesNo(*st.Dtrace))
		}
		fmt.Print(crlf(strings.Join(lines, "\n") + "\n"))
		return 0, nil
	case "/set {current} dtrace on", "/set {current} dtrace off":
		on := lower[3] == "on"
		st.Dtrace = &on
	case "/deletevalue {current} dtrace":
		if st.Dtrace == nil {
			return 1, fmt.Errorf("An error occurred while attempting to delete the specified data element.\nElement not found.\n")
		}
		st.Dtrace = nil
	default:
		return 1, fmt.Errorf("%s\ngot: %q\n", usage, args)
	}
	if err := teststate.Save(teststate.BCDFile, &st); err != nil {
		return 1, err
	}
	fmt.Print(crlf(ok + "\n"))
	return 0, nil
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// crlf gives the output Windows line ends, as bcdedit's has.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
