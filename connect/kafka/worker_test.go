package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect/internal/proctest"
	spk "github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The test binary doubles as the worker of the multi-process tests: run
// with workerEnv set, it is a worker process instead (see workerMain).
const workerEnv = "STATEPIPE_KAFKA_WORKER"

func TestMain(m *testing.M) {
	proctest.Main(workerEnv, workerMain)
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
func workerMain(js string) int {
	var spec workerSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
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

// startWorkers starts n worker processes, waits until each is ready and
// the group has them all, each with partitions.
func startWorkers(t testing.TB, adm *kadm.Client, n int, spec workerSpec) []*proctest.Proc {
	t.Helper()
	names, specs := make([]string, n), make([]string, n)
	for i := range n {
		spec.Name = "w" + strconv.Itoa(i)
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		names[i], specs[i] = spec.Name, string(b)
	}
	ws := proctest.Start(t, workerEnv, names, specs)
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

// stopWorker ends w with SIGTERM and returns its stats.
func stopWorker(t testing.TB, w *proctest.Proc) spk.Stats {
	t.Helper()
	var stats spk.Stats
	for _, l := range w.Stop(t) {
		if js, ok := strings.CutPrefix(l, "stats "); ok {
			if err := json.Unmarshal([]byte(js), &stats); err != nil {
				t.Fatal(err)
			}
		}
	}
	return stats
}
