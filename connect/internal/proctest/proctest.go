// Package proctest runs the worker processes of the connectors'
// multi-process tests: the test binary itself, started again with a
// worker's spec in an environment variable, so that a test can SIGKILL a
// worker and see what the others do.
package proctest

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Main is for TestMain: in a worker process (env is set) it runs worker
// with env's value and exits with its code; otherwise it returns.
func Main(env string, worker func(spec string) int) {
	if spec := os.Getenv(env); spec != "" {
		os.Exit(worker(spec))
	}
}

// Proc is a worker process started by a test.
type Proc struct {
	cmd   *exec.Cmd
	lines chan string // its stdout, line by line; closed at its end
}

// Start starts one worker per spec, with env set to it, logs each one's
// stderr through t under its name, and waits until each has printed
// "ready" on its stdout. The workers are killed at the end of the test if
// they are still running.
func Start(t testing.TB, env string, names, specs []string) []*Proc {
	t.Helper()
	ps := make([]*Proc, len(specs))
	for i, spec := range specs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), env+"="+spec)
		cmd.Stderr = &prefixWriter{t: t, prefix: names[i] + ": "}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &Proc{cmd: cmd, lines: make(chan string, 16)}
		go func() {
			defer close(p.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.lines <- sc.Text()
			}
		}()
		ps[i] = p
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
	}
	for i, p := range ps {
		select {
		case l := <-p.lines:
			if l != "ready" {
				t.Fatalf("%s: %q, want ready", names[i], l)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s not ready after 30s", names[i])
		}
	}
	return ps
}

// Stop ends the worker with SIGTERM, waits for it, and returns what it
// printed after "ready". A worker that exits with an error fails t.
func (p *Proc) Stop(t testing.TB) []string {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range p.lines {
		out = append(out, l)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	return out
}

// Kill ends the worker with SIGKILL: nothing it would do on its way out
// happens.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for range p.lines {
	}
	_ = p.cmd.Wait()
}

// CPU returns the user and system CPU the worker used, once it has been
// stopped or killed.
func (p *Proc) CPU() time.Duration {
	if st := p.cmd.ProcessState; st != nil {
		return st.UserTime() + st.SystemTime()
	}
	return 0
}

// prefixWriter logs a worker's stderr through the test.
type prefixWriter struct {
	t      testing.TB
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		p.t.Log(p.prefix + l)
	}
	return len(b), nil
}
