package kafka_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	spk "github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The test binary doubles as the worker of the multi-process tests: run
// with workerEnv set, it is a worker process instead (see workerMain).
const workerEnv = "STATEPIPE_KAFKA_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

// workerSpec configures a worker process, passed as JSON in workerEnv.
type workerSpec struct {
	Addrs         []string
	Name          string
	MaxInFlight   int
	MaxItems      int           // the Batcher's
	FlushSleep    time.Duration // each flush sleeps this long: a remote bulk call
	MaxFlushes    int           // the Batcher's flushes at once (a Source only)
	Order         spk.Order
	Transactional bool // exactly once, with TransactionalID "tx-" + Name
	Work          int  // rounds of CPU work per record, in Start
	Plain         bool // a plain franz-go consumer loop doing the same work instead of a Source
}

// workerMain is a worker process: it runs a Source on the jobs topic with
// the tests' machine and a Sink to the results topic until SIGTERM; then
// it drains and prints its stats as JSON on stdout.
func workerMain() int {
	var spec workerSpec
	if err := json.Unmarshal([]byte(os.Getenv(workerEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runWorker(ctx, spec, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

func runWorker(ctx context.Context, spec workerSpec, out io.Writer) error {
	if spec.Plain {
		return runPlain(ctx, spec, out)
	}
	m := newMachine(spec.Name, spec.MaxItems, spec.FlushSleep)
	m.work = spec.Work
	if spec.MaxFlushes > 1 {
		m.bulk = statepipe.NewBatcher(m.flush, statepipe.MaxItems(spec.MaxItems), statepipe.MaxWait(2*time.Millisecond),
			statepipe.MaxFlushes(spec.MaxFlushes))
	}
	p, err := statepipe.New[Job](m)
	if err != nil {
		return err
	}
	defer p.Close()
	src := newSource(spec.Addrs)
	src.MaxInFlight = spec.MaxInFlight
	src.Order = spec.Order
	if spec.Transactional {
		src.TransactionalID = "tx-" + spec.Name
		src.Opts = append(src.Opts, kgo.TransactionTimeout(2*time.Second))
	}
	fmt.Fprintln(out, "ready")
	if err := src.Run(ctx, p); err != nil {
		return err
	}
	b, err := json.Marshal(src.Stats())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "stats %s\n", b)
	return nil
}

// worker is a worker process started by a test.
type worker struct {
	cmd   *exec.Cmd
	lines chan string // its stdout, line by line; closed at its end
}

// startWorkers starts n worker processes, waits until each is ready and
// the group has them all, each with partitions.
func startWorkers(t testing.TB, adm *kadm.Client, n int, spec workerSpec) []*worker {
	t.Helper()
	ws := make([]*worker, n)
	for i := range ws {
		spec.Name = "w" + strconv.Itoa(i)
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), workerEnv+"="+string(b))
		cmd.Stderr = &prefixWriter{t: t, prefix: spec.Name + ": "}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w := &worker{cmd: cmd, lines: make(chan string, 16)}
		go func() {
			defer close(w.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				w.lines <- sc.Text()
			}
		}()
		ws[i] = w
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
	}
	for i, w := range ws {
		select {
		case l := <-w.lines:
			if l != "ready" {
				t.Fatalf("worker %d: %q, want ready", i, l)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("worker %d not ready after 30s", i)
		}
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("a stable group of %d members with partitions", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return false
		}
		g := gs[group]
		if g.State != "Stable" || len(g.Members) != n {
			return false
		}
		for _, m := range g.Members {
			if ca, ok := m.Assigned.AsConsumer(); !ok || len(ca.Topics) == 0 {
				return false
			}
		}
		return true
	})
	return ws
}

// stop ends the worker with SIGTERM and returns its stats.
func (w *worker) stop(t testing.TB) spk.Stats {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var stats spk.Stats
	for l := range w.lines {
		if js, ok := strings.CutPrefix(l, "stats "); ok {
			if err := json.Unmarshal([]byte(js), &stats); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	return stats
}

// kill ends the worker with SIGKILL: no drain, no commits, no leaving the
// group.
func (w *worker) kill(t testing.TB) {
	t.Helper()
	if err := w.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for range w.lines {
	}
	_ = w.cmd.Wait()
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
