package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/control"
	"github.com/procswitch/supervisor/internal/supervisor"
)

const ctlUsage = `usage: supervisor ctl [--control PATH] COMMAND [flags]

Talks to a running supervisor over its control socket (default
$RUNTIME_DIRECTORY/control, as under systemd; else give --control PATH).

commands:
  status [--json]                   what runs: generations, worker PIDs, version, last upgrade
  upgrade [--wait] [--timeout D]    start an upgrade (as SIGHUP); with --wait, exit 0 only once the
                                    new generation is ready and serving, 1 with the reason if it failed
  stop [--wait] [--timeout D]       drain every worker and exit (as SIGTERM); with --wait, return once
                                    the supervisor is done (for systemd's ExecStop=)
`

// runCtl is `supervisor ctl ...`; it returns the exit status: 0 done, 1 the
// request failed (the reason on stderr), 2 bad usage.
func runCtl(args []string, stdout, stderr io.Writer) int {
	path, cmd, rest, err := parseCtlArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, ctlUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor ctl: %v (see supervisor ctl --help)\n", err)
		return 2
	}
	fs := flag.NewFlagSet("ctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&path, "control", path, "the control socket")
	asJSON := fs.Bool("json", false, "status as one JSON object")
	wait := fs.Bool("wait", false, "wait for the upgrade's result")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for an answer")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, ctlUsage)
			return 0
		}
		fmt.Fprintf(stderr, "supervisor ctl %s: %v (see supervisor ctl --help)\n", cmd, err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "supervisor ctl %s: unexpected %q (see supervisor ctl --help)\n", cmd, fs.Arg(0))
		return 2
	}
	flagUsed := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { flagUsed[f.Name] = true })
	allowed := map[string][]string{"status": {"json"}, "upgrade": {"wait", "timeout"}, "stop": {"wait", "timeout"}}
	for name := range flagUsed {
		if name != "control" && name != "timeout" && !contains(allowed[cmd], name) {
			fmt.Fprintf(stderr, "supervisor ctl %s: --%s is not a flag of %s (see supervisor ctl --help)\n", cmd, name, cmd)
			return 2
		}
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "supervisor ctl %s: --timeout must be positive, such as 2m\n", cmd)
		return 2
	}
	req := control.Request{Cmd: cmd, Wait: *wait}
	reqTimeout := *timeout
	if !*wait && !flagUsed["timeout"] {
		reqTimeout = 10 * time.Second
	}
	resp, err := control.Do(path, req, reqTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor ctl %s: %v\n", cmd, err)
		return 1
	}
	if !resp.OK {
		kind := ""
		if resp.Kind != "" {
			kind = " (" + resp.Kind + ")"
		}
		fmt.Fprintf(stderr, "supervisor ctl %s: %s%s\n", cmd, resp.Error, kind)
		return 1
	}
	switch {
	case cmd == control.CmdStatus && *asJSON:
		b, _ := json.Marshal(resp.Status)
		fmt.Fprintln(stdout, string(b))
	case cmd == control.CmdStatus:
		printStatus(stdout, resp.Status)
	case cmd == control.CmdUpgrade && *wait:
		fmt.Fprintf(stdout, "upgrade succeeded: generation %d is ready and serving\n", resp.Gen)
	case cmd == control.CmdUpgrade:
		fmt.Fprintln(stdout, "upgrade requested (supervisor ctl status shows its result)")
	case cmd == control.CmdStop && *wait:
		fmt.Fprintln(stdout, "stopped: every worker has drained")
	case cmd == control.CmdStop:
		fmt.Fprintln(stdout, "stopping: the workers are draining")
	}
	return 0
}

// parseCtlArgs takes the leading --control and the command.
func parseCtlArgs(args []string) (path, cmd string, rest []string, err error) {
	path = control.DefaultPath()
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "-h" || a == "--help" || a == "-help" || a == "help":
			return "", "", nil, flag.ErrHelp
		case a == "--control" || a == "-control":
			if len(args) < 2 {
				return "", "", nil, errors.New("--control needs a PATH")
			}
			path, args = args[1], args[2:]
		case strings.HasPrefix(a, "--control=") || strings.HasPrefix(a, "-control="):
			_, path, _ = strings.Cut(a, "=")
			args = args[1:]
		case strings.HasPrefix(a, "-"):
			return "", "", nil, fmt.Errorf("unknown flag %s", a)
		default:
			switch a {
			case control.CmdStatus, control.CmdUpgrade, control.CmdStop:
				return path, a, args[1:], nil
			}
			return "", "", nil, fmt.Errorf("unknown command %q: want status, upgrade or stop", a)
		}
	}
	return "", "", nil, errors.New("no command: want status, upgrade or stop")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func printStatus(w io.Writer, st *supervisor.Status) {
	if st == nil {
		return
	}
	fmt.Fprintf(w, "supervisor pid %d, mode %s", st.PID, st.Mode)
	if st.State != "" {
		fmt.Fprintf(w, ", state %s", st.State)
	}
	fmt.Fprintln(w)
	printGen := func(label string, g *supervisor.GenStatus) {
		fmt.Fprintf(w, "%s: generation %d (%s), binary %s", label, g.Gen, g.Phase, g.Binary)
		if g.Version != "" {
			fmt.Fprintf(w, ", version %s", g.Version)
		}
		if g.ReadyMS > 0 {
			fmt.Fprintf(w, ", ready in %.1f ms", g.ReadyMS)
		}
		fmt.Fprintln(w)
		for _, wk := range g.Workers {
			state := "starting"
			if wk.Ready {
				state = "ready"
			}
			fmt.Fprintf(w, "  worker pid %d %s", wk.PID, state)
			if wk.Restarts > 0 {
				fmt.Fprintf(w, ", %d restarts", wk.Restarts)
			}
			if wk.Status != "" {
				fmt.Fprintf(w, ": %s", wk.Status)
			}
			fmt.Fprintln(w)
		}
	}
	if st.Current != nil {
		printGen("serving", st.Current)
	} else {
		fmt.Fprintln(w, "serving: no generation")
	}
	if st.Upgrading != nil {
		printGen("upgrading", st.Upgrading)
	}
	for i := range st.Draining {
		printGen("draining", &st.Draining[i])
	}
	if u := st.LastUpgrade; u != nil {
		if u.OK {
			fmt.Fprintf(w, "last upgrade: generation %d succeeded at %s\n", u.Gen, u.At.Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "last upgrade: FAILED at %s: %s%s\n", u.At.Format(time.RFC3339), u.Reason, kindNote(u))
		}
	} else {
		fmt.Fprintln(w, "last upgrade: none yet")
	}
	if u := st.LastSelfUpgrade; u != nil {
		if u.OK {
			fmt.Fprintf(w, "last self-upgrade: succeeded at %s\n", u.At.Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "last self-upgrade: FAILED at %s: %s%s\n", u.At.Format(time.RFC3339), u.Reason, kindNote(u))
		}
	}
	if st.Stopping {
		fmt.Fprintln(w, "stopping: draining")
	}
}

// kindNote is the failure's kind, in parentheses, for the text status.
func kindNote(u *supervisor.UpgradeStatus) string {
	if u.Kind == "" {
		return ""
	}
	return " (" + u.Kind + ")"
}
