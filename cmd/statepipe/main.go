// Command statepipe shows what the statepipe library does, on real data,
// and starts new pipelines.
//
//	statepipe demo [flags]        load Go's source tree into SQLite through a state machine
//	statepipe demo --workers N    the same in N processes sharing the files through NATS JetStream
//	statepipe new NAME [--dir D]  generate a ready-to-run pipeline package
//
// Run "statepipe demo --help" or "statepipe new --help" for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1   // the job failed
	exitUsage       = 2   // bad command line
	exitInterrupted = 130 // stopped by Ctrl-C (128 + SIGINT), what was written is committed
)

const usage = `statepipe runs the statepipe demo, or starts a new pipeline.

Usage:
  statepipe demo [flags]        load Go's source tree into an SQLite database
                                through a statepipe state machine, and show
                                what happened; with --workers N, in N worker
                                processes that share the files through an
                                embedded NATS JetStream server
  statepipe new NAME [--dir D]  generate a ready-to-run pipeline package
  statepipe help [COMMAND]      show this help, or a command's

Run "statepipe COMMAND --help" for a command's flags.
`

func main() { os.Exit(command(os.Args[1:])) }

// command runs args as the process's command line, with its streams and
// signals, and returns the exit code.
func command(args []string) int {
	stop, abort, release := interruptContexts()
	defer release()
	return run(args, env{
		stdout: os.Stdout,
		stderr: os.Stderr,
		stop:   stop,
		abort:  abort,
		tty:    isTerminal(os.Stderr),
	})
}

// env is what a command needs from the process: its output streams and
// the two stages of an interruption.
type env struct {
	stdout, stderr io.Writer
	// stop ends at the first Ctrl-C: stop taking new work, finish and
	// commit what is in flight.
	stop context.Context
	// abort ends at the second: what is in flight is abandoned (requests
	// parked in a batch leave it); what was committed stays.
	abort context.Context
	tty   bool // stderr is a terminal: draw a live progress bar
}

// run runs the command line args and returns the exit code.
func run(args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "demo":
		err = demoCommand(rest, e)
	case "new":
		err = newCommand(rest, e)
	case workerCommandName: // hidden: a worker process of demo --workers
		err = demoWorkerCommand(rest, e)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" {
			return run([]string{rest[0], "--help"}, e)
		}
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		err = usageError{cmd: "", msg: fmt.Sprintf("unknown command %q", cmd)}
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "statepipe: %s\n", ue.msg)
		if ue.cmd != "" {
			fmt.Fprintf(e.stderr, "Run 'statepipe %s --help' for usage.\n", ue.cmd)
		} else {
			fmt.Fprintf(e.stderr, "Run 'statepipe help' for usage.\n")
		}
		return exitUsage
	case errors.Is(err, errInterrupted):
		fmt.Fprintf(e.stderr, "statepipe: %v\n", err)
		return exitInterrupted
	default:
		fmt.Fprintf(e.stderr, "statepipe: %v\n", err)
		return exitFailed
	}
}

// usageError is a bad command line: the message, and the command whose
// help explains it.
type usageError struct{ cmd, msg string }

func (e usageError) Error() string { return e.msg }

// errInterrupted is wrapped by the error of a run stopped by Ctrl-C.
var errInterrupted = errors.New("interrupted")

// parseFlags parses args with fs, allowing flags after positional
// arguments (statepipe new NAME --dir D), and returns the positionals.
func parseFlags(fs *flag.FlagSet, cmd string, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{cmd: cmd, msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// interruptContexts returns stop, which ends at the first SIGINT or
// SIGTERM, and abort, which ends at the second; a third gets the default
// behaviour back (the process dies; SQLite's journal keeps the database
// consistent even then). release stops watching.
//
// One channel, registered once, counts the signals: a second
// signal.NotifyContext made after the first signal could miss a second
// signal that comes quickly.
func interruptContexts() (stop, abort context.Context, release func()) {
	stop, cancelStop := context.WithCancel(context.Background())
	abort, cancelAbort := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for n := 1; ; n++ {
			select {
			case <-sigs:
			case <-done:
				return
			}
			if n == 1 {
				cancelStop()
				continue
			}
			cancelAbort()
			signal.Stop(sigs)
			return
		}
	}()
	return stop, abort, func() {
		signal.Stop(sigs)
		close(done)
		cancelStop()
		cancelAbort()
	}
}
