package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
	"github.com/statepipe/statepipe/connect/jetstream/embedded"
)

// The distributed demo (statepipe demo --workers N):
//
//	this process                         worker processes (statepipe demo-worker)
//	walk ─ publish ⇢ FILES ⇢ ───────────▶ Source ─ Start ─ ParseGo|ReadOther ─ Hash ─ Sink
//	                                                                                   │
//	SQLite ◀─ Store ⇢ bulk INSERT ◀─ Source ◀ RESULTS (one row per file, de-duplicated) ◀┘
//
// The workers run the demo's machine up to Store; the collector, in this
// process, runs the same machine from Store on: its Batcher writes the rows
// in multi-row INSERTs, one transaction per flush. SQLite is one file with
// one writer, so one collector writes it; the workers need nothing but the
// NATS server and the source tree, so they could run on other machines.
// Every message is acked only after its work is stored (the row published
// to RESULTS for a file, the row committed for a result), so a worker that
// dies loses nothing: its files are redelivered to the others, and the
// results stream keeps one row per file (Nats-Msg-Id).

// Subjects, streams and consumers of the distributed demo.
const (
	filesStream     = "FILES"
	filesSubject    = "statepipe.demo.files"
	rowsStream      = "RESULTS"
	rowsSubject     = "statepipe.demo.results"
	deadStream      = "DEAD"
	deadSubject     = "statepipe.demo.dead"
	workersConsumer = "workers"
	collectConsumer = "collector"

	workerCommandName = "demo-worker"
	maxWorkers        = 64
	workerInFlight    = 256 // per worker process

	// workerAckWait is how soon a dead worker's files go to another; a
	// live worker reports slow files in progress every third of it.
	workerAckWait = 3 * time.Second
)

// workerReport is what a worker process prints when it ends.
type workerReport struct {
	ID    int
	Pid   int
	Stats spjs.Stats
	Lost  bool `json:"-"` // the worker ended without a report: killed
}

func runDistributed(e env, cfg demoConfig, t *tree) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this program to start workers: %w", err)
	}
	st, err := openStore(context.Background(), cfg.db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.reset(context.Background(), fmt.Sprintf("statepipe, %d workers", cfg.workers), t.root, t.total); err != nil {
		return fmt.Errorf("cannot prepare database %s: %w", cfg.db, err)
	}

	storeDir, err := os.MkdirTemp("", "statepipe-nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(storeDir)
	url, shutdown, err := embedded.Start(storeDir)
	if err != nil {
		return err
	}
	defer shutdown()
	nc, err := nats.Connect(url, nats.Name("statepipe demo"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second)) // no publish waits for ever
	if err != nil {
		return err
	}
	ctx := context.Background()
	files, results, err := setUpStreams(ctx, js, cfg.workers)
	if err != nil {
		return err
	}

	start := time.Now()
	if err := publishFiles(ctx, js, t); err != nil {
		return err
	}

	// The collector: the demo's machine from Store on, fed by RESULTS.
	// Results trickle in from the network, so the collector's workers are
	// idle between them: without NoIdleFlush most transactions would hold
	// a row or two.
	m := newETL(t.root, st, cfg.afterFlush, statepipe.MaxItems(cfg.batch), statepipe.MaxWait(cfg.linger),
		statepipe.BatchName("sqlite"), statepipe.NoIdleFlush())
	inFlight := max(1024, 2*cfg.batch)
	p, err := statepipe.New[File](m,
		workerCount(cfg.pipelines),
		statepipe.WithMaxInFlight(inFlight),
		statepipe.WithMiddleware(func(stage string, r statepipe.Request[File], next statepipe.Stage[File]) statepipe.Request[File] {
			if stage == "Start" {
				r.Next = m.store // a worker did the rest
				return r
			}
			return next(r)
		}))
	if err != nil {
		return err
	}
	if cfg.dash != nil {
		cfg.dash.attach(p, fmt.Sprintf("statepipe demo --workers %d: the collector", cfg.workers))
	}
	collector := &spjs.Source[File]{
		Consumer: results, JetStream: js, Decode: decodeFile, MaxInFlight: inFlight, DeadLetter: deadSubject,
		FetchWait: 200 * time.Millisecond,
	}
	collectCtx, stopCollector := context.WithCancel(ctx)
	defer stopCollector()
	collected := make(chan error, 1)
	go func() { collected <- collector.Run(collectCtx, p) }()

	workers, err := startDemoWorkers(e, exe, url, t.root, cfg)
	if err != nil {
		stopCollector()
		<-collected
		p.Close()
		return err
	}
	fmt.Fprintf(e.stderr, "statepipe: %d workers on %s share %d files\n", len(workers), url, t.total)
	dead := func() int64 { return int64(streamLen(js, deadStream)) }
	prog := startProgress(e.stderr, e.tty, cfg.tick, "demo", int64(t.total), func() int64 {
		return int64(collector.Stats().Done)
	})

	// Wait until every file is a committed row or a dead letter, or for
	// Ctrl-C.
	var onThird func(done int64)
	if cfg.killWorker {
		onThird = func(done int64) {
			_ = workers[0].cmd.Process.Kill()
			fmt.Fprintf(e.stderr, "\nstatepipe: killed worker 1 (SIGKILL) with %d of %d files committed; its files go to the others after AckWait (%v)\n",
				done, t.total, workerAckWait)
		}
	}
	interrupted, err := watchRun(e, int64(t.total), func() (int64, int64) {
		done := int64(collector.Stats().Done)
		return done, done + dead()
	}, collected, onThird)
	if err != nil {
		prog.finish()
		stopWorkers(workers)
		p.Close()
		return fmt.Errorf("collector: %w", err)
	}
	elapsed := time.Since(start)
	if !interrupted {
		// Every file is in: the last progress line now, with the time of
		// the summary, not after the workers have stopped.
		prog.finishAt(elapsed)
	}
	reports := stopWorkers(workers)
	// The collector stores what the workers published before they stopped.
	var published uint64
	for _, r := range reports {
		published += r.Stats.Published - r.Stats.Duplicates
	}
	waitUpTo(10*time.Second, func() bool { s := collector.Stats(); return s.Done+s.DeadLettered >= published })
	stopCollector()
	cerr := <-collected
	p.Close()
	prog.finish()
	if cerr != nil {
		return fmt.Errorf("collector: %w", cerr)
	}

	rows, batches, top, err := st.recordRun(ctx, cfg.db, interrupted)
	if err != nil {
		return err
	}
	info, _ := files.Info(ctx)
	printDistributed(e.stdout, distributedResult{
		cfg: cfg, tree: t, url: url, elapsed: elapsed, rows: rows, batches: batches, dead: dead(),
		workers: reports, collector: collector.Stats(), batch: m.batch.Stats(), top: top, filesInfo: info,
	})
	if interrupted {
		return fmt.Errorf("%w: %d of %d files committed to %s; the database is consistent",
			errInterrupted, rows, t.total, cfg.db)
	}
	if rows != int64(t.total) {
		return fmt.Errorf("%d of %d files committed; %d dead letters", rows, t.total, dead())
	}
	return nil
}

// setUpStreams makes the demo's streams and consumers on a new server.
func setUpStreams(ctx context.Context, js jetstream.JetStream, workers int) (files, results jetstream.Consumer, err error) {
	for _, sc := range []jetstream.StreamConfig{
		{Name: filesStream, Subjects: []string{filesSubject}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage},
		// One row per file: a redelivered file's row is dropped as a duplicate.
		{Name: rowsStream, Subjects: []string{rowsSubject}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
			Duplicates: 30 * time.Minute},
		{Name: deadStream, Subjects: []string{deadSubject}, Storage: jetstream.FileStorage},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, nil, fmt.Errorf("cannot create stream %s: %w", sc.Name, err)
		}
	}
	cc := jetstream.ConsumerConfig{
		Durable:       workersConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       workerAckWait,
		MaxDeliver:    5,
		MaxAckPending: workers * workerInFlight,
	}
	if files, err = js.CreateOrUpdateConsumer(ctx, filesStream, cc); err != nil {
		return nil, nil, fmt.Errorf("cannot create consumer: %w", err)
	}
	cc.Durable, cc.MaxAckPending = collectConsumer, 100_000
	if results, err = js.CreateOrUpdateConsumer(ctx, rowsStream, cc); err != nil {
		return nil, nil, fmt.Errorf("cannot create consumer: %w", err)
	}
	return files, results, nil
}

// publishFiles publishes one message per file: its path and group.
func publishFiles(ctx context.Context, js jetstream.JetStream, t *tree) error {
	for _, top := range t.tops {
		for _, path := range t.files[top] {
			b, err := json.Marshal(File{Path: path, Top: top})
			if err != nil {
				return err
			}
			if _, err := js.PublishAsync(filesSubject, b); err != nil {
				return fmt.Errorf("cannot publish the files: %w", err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(time.Minute):
		return errors.New("cannot publish the files: no ack from the server in a minute")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func decodeFile(b []byte) (File, error) {
	var f File
	err := json.Unmarshal(b, &f)
	if err == nil && f.Path == "" {
		err = errors.New("no path")
	}
	return f, err
}

func encodeFile(f File) ([]byte, error) { return json.Marshal(f) }

// startDemoWorkers starts the worker processes and waits until each is
// ready.
func startDemoWorkers(e env, exe, url, root string, cfg demoConfig) ([]*workerProc[workerReport], error) {
	pipelines := workerPipelines(cfg)
	return startWorkerProcs[workerReport](cfg.workers, func(id int) (*exec.Cmd, error) {
		cmd := exec.Command(exe, workerCommandName, "--nats", url, "--src", root,
			"--id", fmt.Sprint(id), "--pipelines", fmt.Sprint(pipelines))
		cmd.Stderr = e.stderr
		return cmd, nil
	})
}

// workerPipelines is --pipelines shared among the workers; 0 autoscales
// each, as in one process.
func workerPipelines(cfg demoConfig) int {
	if cfg.pipelines > 0 {
		return max(1, cfg.pipelines/cfg.workers)
	}
	return 0
}

// stopWorkers asks every worker to drain and waits for their reports.
func stopWorkers(ws []*workerProc[workerReport]) []workerReport {
	return stopWorkerProcs(ws, func(w *workerProc[workerReport]) workerReport {
		return workerReport{ID: w.id, Pid: w.cmd.Process.Pid, Lost: true}
	})
}

// streamLen returns the messages a stream holds, or 0 if it cannot tell.
func streamLen(js jetstream.JetStream, name string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	return s.CachedInfo().State.Msgs
}
