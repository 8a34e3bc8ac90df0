package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// workerProc is a worker process of the distributed demo, through NATS or
// Kafka. It prints "ready" once it takes work and "report " and a JSON R
// when it is done; closing its stdin (we stop it, or die) asks it to
// drain and exit.
type workerProc[R any] struct {
	id     int
	cmd    *exec.Cmd
	stdin  io.Closer
	report chan R // its report, then closed; closed alone if it died first
}

// startWorkerProcs starts n worker processes, command(id) for ids 1..n,
// and waits until each is ready.
func startWorkerProcs[R any](n int, command func(id int) (*exec.Cmd, error)) ([]*workerProc[R], error) {
	var ws []*workerProc[R]
	fail := func(err error) ([]*workerProc[R], error) {
		stopWorkerProcs(ws, func(*workerProc[R]) (r R) { return r })
		return nil, err
	}
	for id := 1; id <= n; id++ {
		cmd, err := command(id)
		if err != nil {
			return fail(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return fail(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("cannot start worker %d: %w", id, err))
		}
		w := &workerProc[R]{id: id, cmd: cmd, stdin: stdin, report: make(chan R, 1)}
		ws = append(ws, w)
		ready := make(chan struct{})
		go w.read(stdout, ready) // ends when the worker's stdout closes
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			return fail(fmt.Errorf("worker %d not ready after 30s", id))
		}
	}
	return ws, nil
}

// read follows the worker's stdout until it closes.
func (w *workerProc[R]) read(stdout io.Reader, ready chan<- struct{}) {
	defer close(w.report)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			close(ready)
			continue
		}
		if js, ok := strings.CutPrefix(line, "report "); ok {
			var r R
			if json.Unmarshal([]byte(js), &r) == nil {
				w.report <- r
			}
		}
	}
}

// stopWorkerProcs asks every worker to drain and waits for their reports;
// lost makes the report of one that exited without one (killed).
func stopWorkerProcs[R any](ws []*workerProc[R], lost func(*workerProc[R]) R) []R {
	for _, w := range ws {
		w.stdin.Close()
	}
	reports := make([]R, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() {
			r, ok := <-w.report
			if !ok {
				r = lost(w)
			}
			reports[i] = r
			_ = w.cmd.Wait()
		})
	}
	wg.Wait()
	return reports
}

// watchRun polls a distributed run until every file is settled (settled
// reaches total), the user interrupts (interrupted), or the collector fails
// (its error). If onThird is not nil it runs once, when a third of the
// files are committed (--kill-worker).
func watchRun(e env, total int64, progress func() (committed, settled int64), collected <-chan error, onThird func(committed int64)) (interrupted bool, err error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			committed, settled := progress()
			if settled >= total {
				return false, nil
			}
			if onThird != nil && committed >= total/3 {
				onThird(committed)
				onThird = nil
			}
		case <-e.stop.Done():
			return true, nil
		case err := <-collected:
			if err == nil {
				err = errors.New("stopped before every file was in")
			}
			return false, err
		}
	}
}

// waitUpTo polls done every 10ms until it is true or d has passed.
func waitUpTo(d time.Duration, done func() bool) {
	for deadline := time.Now().Add(d); !done() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}
