package contract

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// The contract's names are a wire protocol that programs outside this module
// speak: they never change.
func TestWireNames(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{EnvListenFDs, "LISTEN_FDS"},
		{EnvListenFDNames, "LISTEN_FDNAMES"},
		{EnvListenPID, "LISTEN_PID"},
		{EnvNotifySocket, "NOTIFY_SOCKET"},
		{EnvWatchdogUSec, "WATCHDOG_USEC"},
		{EnvWatchdogPID, "WATCHDOG_PID"},
		{EnvDrainSignal, "SUPERVISOR_DRAIN_SIGNAL"},
		{EnvGeneration, "SUPERVISOR_GENERATION"},
		{MsgReady, "READY=1"},
		{MsgStopping, "STOPPING=1"},
		{MsgWatchdog, "WATCHDOG=1"},
		{MsgStatusKey, "STATUS="},
		{DefaultListenFDName, "unknown"},
		{EnvMode, "SUPERVISOR_MODE"},
		{EnvSnapshot, "SUPERVISOR_SNAPSHOT"},
		{EnvHandoverFD, "SUPERVISOR_HANDOVER_FD"},
		{ModeHandover, "handover"},
		{MsgFDStore, "FDSTORE=1"},
		{MsgFDNameKey, "FDNAME="},
		{MsgHandoverSaved, "HANDOVER=saved"},
		{MsgHandoverFailed, "HANDOVER=failed"},
		{MsgHandoverErrorKey, "HANDOVER_ERROR="},
		{KeyHandover, "HANDOVER"},
		{KeyHandoverError, "HANDOVER_ERROR"},
		{HandoverSaved, "saved"},
		{HandoverFailed, "failed"},
		{HandoverWaiting, "WAITING"},
		{HandoverFDsKey, "FDS "},
		{HandoverGo, "GO"},
	} {
		if tt.got != tt.want {
			t.Errorf("contract name %q, want %q", tt.got, tt.want)
		}
	}
	if ListenFDsStart != 3 {
		t.Errorf("ListenFDsStart = %d, want 3 (SD_LISTEN_FDS_START)", ListenFDsStart)
	}
}

func TestParseListenFDs(t *testing.T) {
	const pid = 4242
	for _, tt := range []struct {
		name    string
		env     map[string]string
		s       Strictness
		names   []string // one per fd; nil: none passed
		wantErr string   // a part of the error; "" for none
	}{
		{name: "named", env: env("4242", "2", "web:dns"), names: []string{"web", "dns"}},
		{name: "named, lenient", env: env("4242", "2", "web:dns"), s: Lenient, names: []string{"web", "dns"}},
		{name: "no names", env: env("4242", "2", "-"), names: []string{"unknown", "unknown"}},
		{name: "no names, lenient", env: env("4242", "2", "-"), s: Lenient, names: []string{"unknown", "unknown"}},
		{name: "empty name kept", env: env("4242", "2", "web:"), names: []string{"web", ""}},
		{name: "empty name, lenient", env: env("4242", "2", ":dns"), s: Lenient, names: []string{"unknown", "dns"}},
		{name: "names short", env: env("4242", "2", "web"), wantErr: "LISTEN_FDNAMES has 1 names for LISTEN_FDS=2"},
		{name: "names short, lenient", env: env("4242", "2", "web"), s: Lenient, names: []string{"web", "unknown"}},
		{name: "names long", env: env("4242", "1", "web:dns"), wantErr: "2 names"},
		{name: "names long, lenient", env: env("4242", "1", "web:dns"), s: Lenient, names: []string{"web"}},
		{name: "names empty", env: env("4242", "2", ""), wantErr: "1 names"},
		{name: "names empty, lenient", env: env("4242", "2", ""), s: Lenient, names: []string{"unknown", "unknown"}},
		{name: "zero", env: env("4242", "0", "-")},
		{name: "another process", env: env("1", "2", "web:dns")},
		{name: "another process, lenient", env: env("1", "2", "web:dns"), s: Lenient},
		{name: "no pid", env: env("-", "2", "web:dns")},
		{name: "no count", env: env("4242", "-", "web")},
		{name: "malformed pid", env: env("12x", "1", "-"), wantErr: `LISTEN_PID="12x": not a process id`},
		{name: "malformed pid, lenient", env: env("12x", "1", "-"), s: Lenient},
		{name: "zero pid", env: env("0", "1", "-"), wantErr: "LISTEN_PID"},
		{name: "empty count", env: env("4242", "", "-"), wantErr: `LISTEN_FDS="": not a count`},
		{name: "empty count, lenient", env: env("4242", "", "-"), s: Lenient},
		{name: "malformed count", env: env("4242", "two", "-"), wantErr: `LISTEN_FDS="two"`},
		{name: "malformed count, lenient", env: env("4242", "two", "-"), s: Lenient, wantErr: `LISTEN_FDS="two"`},
		{name: "negative count", env: env("4242", "-1", "-"), s: Lenient, wantErr: `LISTEN_FDS="-1"`},
		{name: "malformed count, another process", env: env("1", "two", "-")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			l, err := ParseListenFDs(lookup, pid, tt.s)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range l.Count {
				got = append(got, l.Name(i))
			}
			if strings.Join(got, ",") != strings.Join(tt.names, ",") || len(got) != len(tt.names) {
				t.Errorf("names %q, want %q", got, tt.names)
			}
		})
	}
}

// env is LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES; "-" leaves one unset.
func env(pid, count, names string) map[string]string {
	m := map[string]string{}
	for k, v := range map[string]string{EnvListenPID: pid, EnvListenFDs: count, EnvListenFDNames: names} {
		if v != "-" {
			m[k] = v
		}
	}
	return m
}

func TestParseDrainSignal(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want syscall.Signal
		err  error
	}{
		{"SIGTERM", syscall.SIGTERM, nil},
		{"term", syscall.SIGTERM, nil},
		{"Quit", syscall.SIGQUIT, nil},
		{"sigusr2", syscall.SIGUSR2, nil},
		{"12", syscall.SIGUSR2, nil},
		{"SIGKILL", 0, ErrUncatchableSignal},
		{"stop", 0, ErrUncatchableSignal},
		{"9", 0, ErrUncatchableSignal},
		{"NOPE", 0, ErrUnknownSignal},
		{"SIGNOPE", 0, ErrUnknownSignal},
		{"", 0, ErrUnknownSignal},
		{"0", 0, ErrUnknownSignal},
		{"-15", 0, ErrUnknownSignal},
		{"999", 0, ErrUnknownSignal},
	} {
		sig, err := ParseDrainSignal(tt.in)
		if sig != tt.want || !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
			t.Errorf("ParseDrainSignal(%q) = %v, %v; want %v, %v", tt.in, sig, err, tt.want, tt.err)
		}
	}
	if _, err := ParseDrainSignal("kill"); err == nil || err.Error() != "SIGKILL cannot be caught" {
		t.Errorf("ParseDrainSignal(kill): %v, want \"SIGKILL cannot be caught\"", err)
	}
	if _, err := ParseDrainSignal("NOPE"); err == nil || err.Error() != `unknown signal "NOPE"` {
		t.Errorf("ParseDrainSignal(NOPE): %v, want `unknown signal \"NOPE\"`", err)
	}
}
