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

// ctlInvocation is a parsed `supervisor ctl` command line.
type ctlInvocation struct {
	path    string
	cmd     string
	asJSON  bool
	wait    bool
	timeout time.Duration // for the whole request
}

// runCtl is `supervisor ctl ...`; it returns the exit status: 0 done, 1 the
// request failed (the reason on stderr), 2 bad usage.
func runCtl(args []string, stdout, stderr io.Writer) int {
	inv, err := parseCtl(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, ctlUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 2
	}
	resp, err := control.Do(inv.path, control.Request{Cmd: inv.cmd, Wait: inv.wait}, inv.timeout)
	if err != nil {
		fmt.Fprintf(stderr, "supervisor ctl %s: %v\n", inv.cmd, err)
		return 1
	}
	if !resp.OK {
		kind := ""
		if resp.Kind != "" {
			kind = " (" + resp.Kind + ")"
		}
		fmt.Fprintf(stderr, "supervisor ctl %s: %s%s\n", inv.cmd, resp.Error, kind)
		return 1
	}
	printAnswer(stdout, inv, resp)
	return 0
}

// parseCtl reads the command line; its errors are the whole line to print.
func parseCtl(args []string) (*ctlInvocation, error) {
	path, cmd, rest, err := parseCtlArgs(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("supervisor ctl: %v (see supervisor ctl --help)", err)
	}
	inv := &ctlInvocation{path: path, cmd: cmd}
	fs := flag.NewFlagSet("ctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&inv.path, "control", path, "the control socket")
	fs.BoolVar(&inv.asJSON, "json", false, "status as one JSON object")
	fs.BoolVar(&inv.wait, "wait", false, "wait for the upgrade's result")
	fs.DurationVar(&inv.timeout, "timeout", 2*time.Minute, "how long to wait for an answer")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("supervisor ctl %s: %v (see supervisor ctl --help)", cmd, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("supervisor ctl %s: unexpected %q (see supervisor ctl --help)", cmd, fs.Arg(0))
	}
	flagUsed := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { flagUsed[f.Name] = true })
	allowed := map[string][]string{"status": {"json"}, "upgrade": {"wait", "timeout"}, "stop": {"wait", "timeout"}}
	for name := range flagUsed {
		if name != "control" && name != "timeout" && !contains(allowed[cmd], name) {
			return nil, fmt.Errorf("supervisor ctl %s: --%s is not a flag of %s (see supervisor ctl --help)", cmd, name, cmd)
		}
	}
	if inv.timeout <= 0 {
		return nil, fmt.Errorf("supervisor ctl %s: --timeout must be positive, such as 2m", cmd)
	}
	if !inv.wait && !flagUsed["timeout"] {
		inv.timeout = 10 * time.Second
	}
	return inv, nil
}

// printAnswer prints a successful answer.
func printAnswer(stdout io.Writer, inv *ctlInvocation, resp control.Response) {
	switch {
	case inv.cmd == control.CmdStatus && inv.asJSON:
		b, _ := json.Marshal(resp.Status)
		fmt.Fprintln(stdout, string(b))
	case inv.cmd == control.CmdStatus:
		printStatus(stdout, resp.Status)
	case inv.cmd == control.CmdUpgrade && inv.wait:
		fmt.Fprintf(stdout, "upgrade succeeded: generation %d is ready and serving\n", resp.Gen)
	case inv.cmd == control.CmdUpgrade:
		fmt.Fprintln(stdout, "upgrade requested (supervisor ctl status shows its result)")
	case inv.cmd == control.CmdStop && inv.wait:
		fmt.Fprintln(stdout, "stopped: every worker has drained")
	case inv.cmd == control.CmdStop:
		fmt.Fprintln(stdout, "stopping: the workers are draining")
	}
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
	if st.Current != nil {
		printGen(w, "serving", st.Current)
	} else {
		fmt.Fprintln(w, "serving: no generation")
	}
	if st.Upgrading != nil {
		printGen(w, "upgrading", st.Upgrading)
	}
	for i := range st.Draining {
		printGen(w, "draining", &st.Draining[i])
	}
	printResult(w, "last upgrade", st.LastUpgrade)
	if st.LastSelfUpgrade != nil {
		printResult(w, "last self-upgrade", st.LastSelfUpgrade)
	}
	if st.Stopping {
		fmt.Fprintln(w, "stopping: draining")
	}
}

func printGen(w io.Writer, label string, g *supervisor.GenStatus) {
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

// printResult prints an upgrade's or a self-upgrade's result.
func printResult(w io.Writer, label string, u *supervisor.UpgradeStatus) {
	switch {
	case u == nil:
		fmt.Fprintf(w, "%s: none yet\n", label)
	case u.OK && u.Gen > 0:
		fmt.Fprintf(w, "%s: generation %d succeeded at %s\n", label, u.Gen, u.At.Format(time.RFC3339))
	case u.OK:
		fmt.Fprintf(w, "%s: succeeded at %s\n", label, u.At.Format(time.RFC3339))
	case u.Kind != "":
		fmt.Fprintf(w, "%s: FAILED at %s: %s (%s)\n", label, u.At.Format(time.RFC3339), u.Reason, u.Kind)
	default:
		fmt.Fprintf(w, "%s: FAILED at %s: %s\n", label, u.At.Format(time.RFC3339), u.Reason)
	}
}
