package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/statepipe/statepipe"
	"github.com/statepipe/statepipe/connect/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The demo through Kafka (statepipe demo --workers N --via kafka) is
// demo --workers with a Kafka cluster in place of the NATS server:
//
//	this process (with an in-process kfake cluster)     worker processes
//	walk ─ produce ⇢ files topic ⇢ ─────────────────────▶ Source ─ Start ─ ParseGo|ReadOther ─ Hash ─ Sink
//	                                                                                              │
//	SQLite ◀─ Store ⇢ bulk INSERT ◀─ Source ◀ results topic (read committed) ◀── one transaction per poll
//
// The workers are exactly once (kafka.Source.TransactionalID): each
// commits its rows and its offsets in one transaction, so a worker killed
// in the middle of one leaves nothing the collector reads, and its files
// run again in the others. The files table's primary key would refuse a
// row twice; the count of rows equals the files walked.

// Topics and groups of the demo through Kafka.
const (
	kafkaFilesTopic     = "statepipe.demo.files"
	kafkaRowsTopic      = "statepipe.demo.results"
	kafkaDeadTopic      = "statepipe.demo.dead"
	kafkaWorkersGroup   = "statepipe-demo-workers"
	kafkaCollectorGroup = "statepipe-demo-collector"

	// kafkaWorkerEnv makes this program a worker of the demo through
	// Kafka, with the JSON of a kafkaWorkerSpec (see init).
	kafkaWorkerEnv = "STATEPIPE_KAFKA_DEMO_WORKER"

	// kafkaSession is the group session timeout: how soon a dead
	// worker's partitions move. A dead worker's open transaction holds
	// them until kafkaTxnTimeout has passed since it began.
	kafkaSession    = 3 * time.Second
	kafkaTxnTimeout = 5 * time.Second

	// kafkaWorkerInFlight bounds a worker's records, and so its
	// transactions: one per poll of at most this many.
	kafkaWorkerInFlight = 64
)

// kafkaWorkerSpec is what a worker of the demo through Kafka is told.
type kafkaWorkerSpec struct {
	Brokers   []string
	Src       string
	ID        int
	Pipelines int
}

// kafkaWorkerReport is what a worker prints when it ends.
type kafkaWorkerReport struct {
	ID    int
	Pid   int
	Stats kafka.Stats
	Lost  bool `json:"-"` // the worker ended without a report: killed
}

// A worker of the demo through Kafka is this program started again with
// kafkaWorkerEnv set: it runs its worker and exits before main.
func init() {
	if spec := os.Getenv(kafkaWorkerEnv); spec != "" {
		ctx := context.Background()
		if err := kafkaWorkerMain(ctx, spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "statepipe: kafka worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// kafkaClusterOpts are the in-process cluster's: a session timeout short
// enough for the demo.
func kafkaClusterOpts() []kfake.Opt {
	return []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}
}

// kafkaGroupOpts are the demo's group settings, for the workers and the
// collector.
func kafkaGroupOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SessionTimeout(kafkaSession), kgo.HeartbeatInterval(kafkaSession / 10),
		kgo.FetchMaxWait(100 * time.Millisecond),
	}
}

// runKafka is demo --workers N --via kafka: the job through an
// in-process Kafka cluster and N worker processes.
func runKafka(e env, cfg demoConfig, t *tree) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this program to start workers: %w", err)
	}
	ctx := context.Background()
	st, err := openStore(ctx, cfg.db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.reset(ctx, fmt.Sprintf("statepipe, %d workers via kafka", cfg.workers), t.root, t.total); err != nil {
		return fmt.Errorf("cannot prepare database %s: %w", cfg.db, err)
	}
	cluster, err := kfake.NewCluster(kafkaClusterOpts()...)
	if err != nil {
		return fmt.Errorf("cannot start the Kafka cluster: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(kafkaFilesTopic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		return err
	}
	defer cl.Close()
	partitions := int32(max(6, 2*cfg.workers))
	if err := kafka.EnsureTopics(ctx, kadm.NewClient(cl),
		kafka.Topic{Name: kafkaFilesTopic, Partitions: partitions},
		kafka.Topic{Name: kafkaRowsTopic, Partitions: 3},
		kafka.Topic{Name: kafkaDeadTopic, Partitions: 1},
	); err != nil {
		return err
	}

	var dead atomic.Int64
	countCtx, stopCounting := context.WithCancel(ctx)
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		countRecords(countCtx, brokers, kafkaDeadTopic, &dead)
	}()
	defer func() {
		stopCounting()
		<-counted
	}()

	// The collector: the demo's machine from Store on, fed by the
	// results the workers committed.
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
		cfg.dash.attach(p, fmt.Sprintf("statepipe demo --workers %d --via kafka: the collector", cfg.workers))
	}
	collector := &kafka.Source[File]{
		Brokers: brokers, Group: kafkaCollectorGroup, Topics: []string{kafkaRowsTopic},
		Opts:   append(kafkaGroupOpts(), kgo.FetchIsolationLevel(kgo.ReadCommitted())),
		Decode: decodeFile, MaxInFlight: inFlight, DeadLetter: kafkaDeadTopic,
		CommitInterval: 200 * time.Millisecond,
	}
	collectCtx, stopCollector := context.WithCancel(ctx)
	defer stopCollector()
	collected := make(chan error, 1)
	go func() { collected <- collector.Run(collectCtx, p) }()

	workers, err := startKafkaWorkers(e, exe, brokers, t.root, cfg)
	if err != nil {
		stopCollector()
		<-collected
		p.Close()
		return err
	}
	// The files go in once every worker has its partitions, so that they
	// share them from the start.
	if err := waitForGroup(ctx, kadm.NewClient(cl), kafkaWorkersGroup, len(workers)); err != nil {
		stopKafkaWorkers(workers)
		stopCollector()
		<-collected
		p.Close()
		return err
	}
	fmt.Fprintf(e.stderr, "statepipe: %d workers on an in-process Kafka cluster at %s share %d files over %d partitions\n",
		len(workers), strings.Join(brokers, ","), t.total, partitions)
	start := time.Now()
	if err := produceFiles(ctx, cl, t); err != nil {
		stopKafkaWorkers(workers)
		stopCollector()
		<-collected
		p.Close()
		return err
	}
	prog := startProgress(e.stderr, e.tty, cfg.tick, "demo", int64(t.total), func() int64 {
		return int64(collector.Stats().Done)
	})

	var onThird func(done int64)
	if cfg.killWorker {
		onThird = func(done int64) {
			_ = workers[0].cmd.Process.Kill()
			fmt.Fprintf(e.stderr, "\nstatepipe: killed worker 1 (SIGKILL) with %d of %d files committed; its open transaction is aborted and its partitions move to the others (after %v)\n",
				done, t.total, kafkaTxnTimeout)
		}
	}
	interrupted, err := watchRun(e, int64(t.total), func() (int64, int64) {
		done := int64(collector.Stats().Done)
		return done, done + dead.Load()
	}, collected, onThird)
	if err != nil {
		prog.finish()
		stopKafkaWorkers(workers)
		p.Close()
		return fmt.Errorf("collector: %w", err)
	}
	elapsed := time.Since(start)
	if !interrupted {
		prog.finishAt(elapsed)
	}
	reports := stopKafkaWorkers(workers)
	// The collector stores what the workers committed before they stopped.
	waitUpTo(10*time.Second, func() bool { s := collector.Stats(); return s.Lag == 0 || s.Done >= uint64(t.total) })
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
	printKafka(e.stdout, kafkaResult{
		cfg: cfg, tree: t, brokers: brokers, partitions: partitions, elapsed: elapsed, rows: rows, batches: batches,
		dead: dead.Load(), workers: reports, collector: collector.Stats(), batch: m.batch.Stats(), top: top,
	})
	if interrupted {
		return fmt.Errorf("%w: %d of %d files committed to %s; the database is consistent",
			errInterrupted, rows, t.total, cfg.db)
	}
	if rows != int64(t.total) {
		return fmt.Errorf("%d of %d files committed; %d dead letters", rows, t.total, dead.Load())
	}
	return nil
}

// waitForGroup waits until group is stable with n members, each with
// partitions.
func waitForGroup(ctx context.Context, adm *kadm.Client, group string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		gs, err := adm.DescribeGroups(ctx, group)
		if g, ok := gs[group]; err == nil && ok && g.State == "Stable" && len(g.Members) == n {
			all := true
			for _, m := range g.Members {
				if a, ok := m.Assigned.AsConsumer(); !ok || len(a.Topics) == 0 {
					all = false
				}
			}
			if all {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the %d workers did not all join group %s in 30s", n, group)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// produceFiles produces one record per file, its path and group, round
// robin over the partitions.
func produceFiles(ctx context.Context, cl *kgo.Client, t *tree) error {
	var failed atomic.Pointer[error]
	for _, top := range t.tops {
		for _, path := range t.files[top] {
			b, err := json.Marshal(File{Path: path, Top: top})
			if err != nil {
				return err
			}
			cl.Produce(ctx, &kgo.Record{Value: b}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			})
		}
	}
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := cl.Flush(fctx); err != nil {
		return fmt.Errorf("cannot produce the files: %w", err)
	}
	if err := failed.Load(); err != nil {
		return fmt.Errorf("cannot produce the files: %w", *err)
	}
	return nil
}

// countRecords counts the committed records of topic into n until ctx
// ends.
func countRecords(ctx context.Context, brokers []string, topic string, n *atomic.Int64) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		n.Add(int64(cl.PollFetches(ctx).NumRecords()))
	}
}

// kafkaWorkerMain is a worker process of the demo through Kafka: a Source
// in the workers' group runs the demo's machine up to Store, exactly
// once, and its Sink produces each file's row. It stops, draining, when
// stdin closes, and prints a report line.
func kafkaWorkerMain(ctx context.Context, specJSON string, stdin io.Reader, stdout io.Writer) error {
	var spec kafkaWorkerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("bad %s: %w", kafkaWorkerEnv, err)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // the parent closes our stdin to stop us, or dies
		_, _ = io.Copy(io.Discard, stdin)
		stop()
	}()
	m := newETL(spec.Src, nil, nil)
	p, err := statepipe.New[File](m,
		workerCount(spec.Pipelines), // 0 autoscales
		statepipe.WithMiddleware(func(stage string, r statepipe.Request[File], next statepipe.Stage[File]) statepipe.Request[File] {
			if stage == "Store" {
				return r // finished here; the Sink produces the row
			}
			return next(r)
		}))
	if err != nil {
		return err
	}
	source := &kafka.Source[File]{
		Brokers: spec.Brokers, Group: kafkaWorkersGroup, Topics: []string{kafkaFilesTopic},
		Opts:            append(kafkaGroupOpts(), kgo.TransactionTimeout(kafkaTxnTimeout)),
		Decode:          decodeFile,
		MaxInFlight:     kafkaWorkerInFlight,
		DeadLetter:      kafkaDeadTopic,
		Sink:            &kafka.Sink[File]{Topic: kafkaRowsTopic, Encode: encodeFile},
		TransactionalID: fmt.Sprintf("statepipe-demo-worker-%d", spec.ID),
	}
	fmt.Fprintln(stdout, "ready")
	err = source.Run(ctx, p)
	p.Close()
	b, jerr := json.Marshal(kafkaWorkerReport{ID: spec.ID, Pid: os.Getpid(), Stats: source.Stats()})
	if jerr == nil {
		fmt.Fprintf(stdout, "report %s\n", b)
	}
	return errors.Join(err, jerr)
}

// startKafkaWorkers starts the worker processes and waits until each is
// ready.
func startKafkaWorkers(e env, exe string, brokers []string, root string, cfg demoConfig) ([]*workerProc[kafkaWorkerReport], error) {
	pipelines := workerPipelines(cfg)
	// One writer for all: a worker's stderr is copied by a goroutine of
	// its own unless it is a file, and e.stderr need not be safe for
	// several writers.
	stderr := &lockedWriter{w: e.stderr}
	return startWorkerProcs[kafkaWorkerReport](cfg.workers, func(id int) (*exec.Cmd, error) {
		spec, err := json.Marshal(kafkaWorkerSpec{Brokers: brokers, Src: root, ID: id, Pipelines: pipelines})
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(exe, "-test.run=^$") // the flag is for a test binary; the program ignores it
		cmd.Env = append(os.Environ(), kafkaWorkerEnv+"="+string(spec))
		cmd.Stderr = stderr
		if f, ok := e.stderr.(*os.File); ok {
			cmd.Stderr = f // no copying
		}
		return cmd, nil
	})
}

// stopKafkaWorkers asks every worker to drain and waits for their
// reports.
func stopKafkaWorkers(ws []*workerProc[kafkaWorkerReport]) []kafkaWorkerReport {
	return stopWorkerProcs(ws, func(w *workerProc[kafkaWorkerReport]) kafkaWorkerReport {
		return kafkaWorkerReport{ID: w.id, Pid: w.cmd.Process.Pid, Lost: true}
	})
}

// kafkaResult is what demo --workers --via kafka did, for its summary.
type kafkaResult struct {
	cfg        demoConfig
	tree       *tree
	brokers    []string
	partitions int32
	elapsed    time.Duration
	rows       int64
	batches    int64
	dead       int64
	workers    []kafkaWorkerReport
	collector  kafka.Stats
	batch      statepipe.BatchStats
	top        []packageRow
}

func printKafka(w io.Writer, r kafkaResult) {
	kv := newTable(w, 0)
	kv.row("")
	kv.row("statepipe demo --workers %d --via kafka: %s -> %s", r.cfg.workers, r.tree.root, r.cfg.db)
	kv.row("  kafka\tan in-process cluster at %s, topics %s (%d partitions) -> %s, dead letters to %s",
		strings.Join(r.brokers, ","), kafkaFilesTopic, r.partitions, kafkaRowsTopic, kafkaDeadTopic)
	kv.row("  files\t%d walked (%d Go, %d other), one record each", r.tree.total, r.tree.goFiles, r.tree.total-r.tree.goFiles)
	kv.row("  rows\t%d committed by the collector in %s; %d dead letters", r.rows, plural(int(r.batches), "transaction"), r.dead)
	rate := 0.0
	if s := r.elapsed.Seconds(); s > 0 {
		rate = float64(r.rows) / s
	}
	kv.row("  time\t%v, %.0f files/s (producing included)", round(r.elapsed), rate)
	kv.flush()

	fmt.Fprintln(w)
	t := newTable(w, 0)
	t.row("  \tpid\t%8s %10s %8s %6s %10s %9s", "files", "partitions", "retried", "dead", "released", "aborted")
	for _, wr := range r.workers {
		s := wr.Stats
		if wr.Lost {
			t.row("  worker %d\t%d\t%8s   (killed: no report; its open transaction was aborted and its files ran in the others)", wr.ID, wr.Pid, "-")
			continue
		}
		t.row("  worker %d\t%d\t%8d %10d %8d %6d %10d %9d", wr.ID, wr.Pid, s.Done, s.Assigned, s.Retried, s.DeadLettered, s.Released, s.Aborted)
	}
	c := r.collector
	t.row("  collector\t%d\t%8d %10d %8d %6d %10d %9s", os.Getpid(), c.Done, c.Assigned, c.Retried, c.DeadLettered, c.Released, "-")
	t.flush()
	fmt.Fprintf(w, "\n  workers: files processed, their rows produced and their offsets committed in one transaction per poll;\n")
	fmt.Fprintf(w, "  collector: rows read committed and written to SQLite, %d flushes by reason: %s\n", r.batch.TotalFlushes(), flushReasons(r.batch))

	fmt.Fprintf(w, "\nthe packages with the most functions, read back from %s:\n\n", r.cfg.db)
	pk := newTable(w, 0)
	pk.row("  dir\tpackage\t%6s %7s %8s", "files", "funcs", "lines")
	for _, row := range r.top {
		pk.row("  %s\t%s\t%6d %7d %8d", row.Dir, row.Package, row.Files, row.Funcs, row.Lines)
	}
	pk.flush()
}
