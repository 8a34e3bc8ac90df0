package jetstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect/internal/proctest"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
)

// The test binary doubles as the worker of the multi-process tests: run
// with workerEnv set, it is a worker process instead (see workerMain).
const workerEnv = "STATEPIPE_JETSTREAM_WORKER"

func TestMain(m *testing.M) {
	proctest.Main(workerEnv, workerMain)
	os.Exit(m.Run())
}

// workerSpec configures a worker process, passed as JSON in workerEnv.
type workerSpec struct {
	URL         string
	MaxInFlight int
	MaxItems    int           // the Batcher's
	FlushSleep  time.Duration // each flush sleeps this long: a remote bulk call
	Work        int           // rounds of CPU work per request
	Gate        string        // if set, Run starts on the first message to this subject
	Plain       bool          // a plain nats.go consumer doing the same work, for a baseline
	Partitions  int           // if set, read the partitioned stream PARTS (see partitionedSpec) with WithKey
}

// workerMain is a worker process: it runs a Source on the consumer
// "workers" of JOBS with the tests' machine and a Sink to "results", until
// SIGTERM; then it drains and prints its stats as JSON on stdout.
func workerMain(specJSON string) int {
	var spec workerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	run := runWorker
	if spec.Plain {
		run = runPlain
	}
	if err := run(ctx, spec, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

func runWorker(ctx context.Context, spec workerSpec, out io.Writer) error {
	nc, err := nats.Connect(spec.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return err
	}
	m := newMachine(spec.MaxItems, spec.FlushSleep)
	m.work = spec.Work
	var opts []statepipe.Option
	if spec.Partitions > 0 {
		opts = append(opts, statepipe.WithKey(keyOf))
	}
	p, err := statepipe.New[Job](m, opts...)
	if err != nil {
		return err
	}
	defer p.Close()
	src := &spjs.Source[Job]{
		JetStream: js, Decode: decodeJob, MaxInFlight: spec.MaxInFlight,
		FetchWait: 200 * time.Millisecond,
		Sink:      &spjs.Sink[Job]{Subject: resultsSubj, Encode: encodeJob},
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if spec.Partitions > 0 {
		kv, err := js.KeyValue(ctx, membersBucket)
		if err != nil {
			return err
		}
		src.Partitions = partitionedSpec(spec.Partitions, kv)
	} else if src.Consumer, err = js.Consumer(ctx, jobsStream, consumerName); err != nil {
		return err
	}
	if err := waitGate(ctx, nc, spec, out); err != nil {
		return err
	}
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

// waitGate says the worker is ready and waits for the gate's signal.
func waitGate(ctx context.Context, nc *nats.Conn, spec workerSpec, out io.Writer) error {
	if spec.Gate != "" {
		gate, err := nc.SubscribeSync(spec.Gate)
		if err != nil {
			return err
		}
		if err := nc.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(out, "ready")
		if _, err := gate.NextMsgWithContext(ctx); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(out, "ready")
	}
	return nil
}

// The partitioned stream of the worker processes: PARTS, on parts.<n>,
// with members in membersBucket.
const (
	partsStream   = "PARTS"
	membersBucket = "members"
)

// partitionedSpec is the Partitions of the worker processes.
func partitionedSpec(count int, kv jetstream.KeyValue) *spjs.Partitions {
	return &spjs.Partitions{Stream: partsStream, Subject: "parts.%d", Count: count, Members: kv,
		Consumer: jetstream.ConsumerConfig{Durable: "ordered", AckWait: 30 * time.Second, MaxAckPending: 1000}}
}

// runPlain is the benchmarks' baseline: a hand-written nats.go consumer
// doing the work the Source and the tests' machine do for each message
// (decode, the CPU work, publish the result with a message ID, await the
// stream's ack, ack), in fetches of 100, without statepipe.
func runPlain(ctx context.Context, spec workerSpec, out io.Writer) error {
	nc, err := nats.Connect(spec.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return err
	}
	cons, err := js.Consumer(ctx, jobsStream, consumerName)
	if err != nil {
		return err
	}
	if err := waitGate(ctx, nc, spec, out); err != nil {
		return err
	}
	var done uint64
	type pending struct {
		msg jetstream.Msg
		ack jetstream.PubAckFuture
	}
	var batch []pending
	for ctx.Err() == nil {
		msgs, err := cons.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			continue
		}
		batch = batch[:0]
		for msg := range msgs.Messages() {
			j, err := decodeJob(msg.Data())
			if err != nil {
				_ = msg.Term()
				continue
			}
			if spec.Work > 0 {
				burn(j.ID, spec.Work)
			}
			body, _ := encodeJob(j)
			m := nats.NewMsg(resultsSubj)
			m.Data = body
			meta, _ := msg.Metadata()
			m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:%d", meta.Stream, meta.Sequence.Stream))
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				_ = msg.Nak()
				continue
			}
			batch = append(batch, pending{msg, f})
		}
		for _, p := range batch {
			select {
			case <-p.ack.Ok():
				_ = p.msg.Ack()
				done++
			case <-p.ack.Err():
				_ = p.msg.Nak()
			}
		}
	}
	_ = nc.Flush()
	fmt.Fprintf(out, "stats {\"Done\":%d}\n", done)
	return nil
}

// worker is a worker process started by a test.
type worker struct {
	*proctest.Proc
	cpu time.Duration // user and system CPU it used, once stopped
}

// startWorkers starts n worker processes and waits until each is ready.
func startWorkers(t testing.TB, n int, spec workerSpec) []*worker {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	names, specs := make([]string, n), make([]string, n)
	for i := range n {
		names[i], specs[i] = "worker "+strconv.Itoa(i), string(b)
	}
	ws := make([]*worker, n)
	for i, p := range proctest.Start(t, workerEnv, names, specs) {
		ws[i] = &worker{Proc: p}
	}
	return ws
}

// stop ends the worker with SIGTERM and returns its stats.
func (w *worker) stop(t testing.TB) spjs.Stats {
	t.Helper()
	var stats spjs.Stats
	for _, l := range w.Stop(t) {
		if js, ok := strings.CutPrefix(l, "stats "); ok {
			if err := json.Unmarshal([]byte(js), &stats); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.cpu = w.CPU()
	return stats
}

// kill ends the worker with SIGKILL: no drain, no acks.
func (w *worker) kill(t testing.TB) { w.Kill(t) }
