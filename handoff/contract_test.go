package handoff

import "testing"

// The contract's names are a wire protocol that programs outside this module
// speak: they never change.
func TestContractWireNames(t *testing.T) {
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
