package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/control"
)

const ctlUsage = `usage: supervisor ctl [--control PATH] COMMAND [flags]

Talks to a running supervisor over its control socket (default
$RUNTIME_DIRECTORY/control, as under systemd; else give --control PATH).

commands:
  status [--json]                   what runs: generations, worker PIDs, version, last upgrade, the
                                    binaries held for a rollback, the end of probation
  upgrade [--wait] [--timeout D]    start an upgrade (as SIGHUP); with --wait, exit 0 only once the
                                    new generation is ready and serving, 1 with the reason if it failed
  rollback [--wait] [--timeout D] [--to GEN]
                                    go back to the binary that served before (or generation GEN's,
                                    one that status lists), held open even if the path was overwritten;
                                    --wait as for upgrade
  reload [--wait] [--timeout D]     reload in place, no process switch: send --reload-signal (SIGHUP)
                                    to every worker of the serving generation (systemd's
                                    Type=notify-reload contract); refused at once if a worker does not
                                    catch it; with --wait, exit 0 once every worker answered READY=1,
                                    1 with the reason and a kind (reload-failed, reload-timeout,
                                    refused) if one failed
  history [--json] [-n N]           the last N records of the upgrade history (default 20; 0: all),
                                    oldest first; --json: the history's own JSON lines
  metrics                           the supervisor's metrics (supervisor_*) in Prometheus' text format,
                                    for node_exporter's textfile collector; --metrics-listen serves them
                                    over HTTP, with the Go runtime's and the process's
  stop [--wait] [--timeout D]       drain every worker and exit (as SIGTERM); with --wait, return once
                                    the supervisor is done (for systemd's ExecStop=)
`

// ctlCommands are the commands, with the flags each takes besides
// --control and --timeout.
var ctlCommands = map[string][]string{
	control.CmdStatus:   {"json"},
	control.CmdUpgrade:  {"wait"},
	control.CmdRollback: {"wait", "to"},
	control.CmdReload:   {"wait"},
	control.CmdHistory:  {"json", "n"},
	control.CmdMetrics:  {},
	control.CmdStop:     {"wait"},
}

const ctlCommandList = "status, upgrade, rollback, reload, history, metrics or stop"

// ctlInvocation is a parsed `supervisor ctl` command line.
type ctlInvocation struct {
	path    string
	cmd     string
	asJSON  bool
	wait    bool
	to      int           // rollback: the generation; 0: the one before
	n       int           // history: records; 0: all
	timeout time.Duration // for the whole request
}

// request is what the invocation asks the supervisor.
func (inv *ctlInvocation) request() control.Request {
	req := control.Request{Cmd: inv.cmd, Wait: inv.wait, To: inv.to}
	if inv.cmd == control.CmdHistory {
		req.N = inv.n
		if inv.n == 0 {
			req.N = -1 // every record
		}
	}
	return req
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
	resp, err := control.Do(inv.path, inv.request(), inv.timeout)
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
	printAnswer(stdout, stderr, inv, resp)
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
	used, err := inv.parseFlags(rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("supervisor ctl %s: %v (see supervisor ctl --help)", cmd, err)
	}
	if !inv.wait && !used["timeout"] {
		inv.timeout = 10 * time.Second
	}
	return inv, nil
}

// parseFlags reads the command's flags into inv and checks them; it returns
// the flags given.
func (inv *ctlInvocation) parseFlags(rest []string) (map[string]bool, error) {
	fs := flag.NewFlagSet("ctl "+inv.cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&inv.path, "control", inv.path, "the control socket")
	fs.BoolVar(&inv.asJSON, "json", false, "JSON output")
	fs.BoolVar(&inv.wait, "wait", false, "wait for the upgrade's or the rollback's result")
	fs.IntVar(&inv.to, "to", 0, "rollback: the generation whose binary to go back to")
	fs.IntVar(&inv.n, "n", control.DefaultHistory, "history: how many records; 0: all")
	fs.DurationVar(&inv.timeout, "timeout", 2*time.Minute, "how long to wait for an answer")
	if err := fs.Parse(rest); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected %q", fs.Arg(0))
	}
	used := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { used[f.Name] = true })
	for name := range used {
		if name != "control" && name != "timeout" && !slices.Contains(ctlCommands[inv.cmd], name) {
			dash := "--"
			if len(name) == 1 {
				dash = "-"
			}
			return nil, fmt.Errorf("%s%s is not a flag of %s", dash, name, inv.cmd)
		}
	}
	switch {
	case inv.timeout <= 0:
		return nil, errors.New("--timeout must be positive, such as 2m")
	case used["to"] && inv.to <= 0:
		return nil, fmt.Errorf("--to %d: want a generation number, such as 2 (supervisor ctl status lists the held ones)", inv.to)
	case inv.n < 0:
		return nil, fmt.Errorf("-n %d: want a number of records, 0 for all", inv.n)
	}
	return used, nil
}

// printAnswer prints a successful answer.
func printAnswer(stdout, stderr io.Writer, inv *ctlInvocation, resp control.Response) {
	switch {
	case inv.cmd == control.CmdStatus && inv.asJSON:
		b, _ := json.Marshal(resp.Status)
		fmt.Fprintln(stdout, string(b))
	case inv.cmd == control.CmdStatus:
		printStatus(stdout, resp.Status)
	case inv.cmd == control.CmdHistory:
		printHistory(stdout, stderr, inv.asJSON, resp)
	case inv.cmd == control.CmdMetrics:
		fmt.Fprint(stdout, resp.Metrics)
	case inv.cmd == control.CmdUpgrade && inv.wait:
		fmt.Fprintf(stdout, "upgrade succeeded: generation %d is ready and serving\n", resp.Gen)
	case inv.cmd == control.CmdUpgrade:
		fmt.Fprintln(stdout, "upgrade requested (supervisor ctl status shows its result)")
	case inv.cmd == control.CmdRollback && inv.wait:
		fmt.Fprintf(stdout, "rollback succeeded: generation %d runs the older binary and serves\n", resp.Gen)
	case inv.cmd == control.CmdRollback:
		fmt.Fprintln(stdout, "rollback requested (supervisor ctl status shows its result)")
	case inv.cmd == control.CmdReload && inv.wait:
		fmt.Fprintf(stdout, "reload succeeded: every worker of generation %d reloaded%s\n", resp.Gen, versionNote(resp.Version))
	case inv.cmd == control.CmdReload:
		fmt.Fprintln(stdout, "reload requested: the workers were signalled (supervisor ctl status shows its result)")
	case inv.cmd == control.CmdStop && inv.wait:
		fmt.Fprintln(stdout, "stopped: every worker has drained")
	case inv.cmd == control.CmdStop:
		fmt.Fprintln(stdout, "stopping: the workers are draining")
	}
}

func versionNote(v string) string {
	if v == "" {
		return ""
	}
	return " (version " + v + ")"
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
			if _, ok := ctlCommands[a]; ok {
				return path, a, args[1:], nil
			}
			return "", "", nil, fmt.Errorf("unknown command %q: want %s", a, ctlCommandList)
		}
	}
	return "", "", nil, errors.New("no command: want " + ctlCommandList)
}
