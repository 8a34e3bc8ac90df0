package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/statepipe/statepipe"
	spjs "github.com/statepipe/statepipe/connect/jetstream"
)

// demoWorkerCommand is a worker process of demo --workers: a Source on the
// consumer "workers" of FILES runs the demo's machine up to Store, and its
// Sink publishes each file's row to RESULTS. It stops, draining, when its
// stdin closes or at Ctrl-C, and prints a report line for the parent.
func demoWorkerCommand(args []string, e env) error {
	var url, src string
	var id, pipelines int
	fs := flag.NewFlagSet(workerCommandName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&url, "nats", "", "the NATS server's URL")
	fs.StringVar(&src, "src", "", "the source tree")
	fs.IntVar(&id, "id", 0, "the worker's number")
	fs.IntVar(&pipelines, "pipelines", 0, "pipelines in this worker; 0 autoscales")
	if _, err := parseFlags(fs, workerCommandName, args); err != nil {
		return err
	}
	if url == "" || src == "" || pipelines < 0 {
		return usageError{cmd: "demo", msg: workerCommandName + " is started by demo --workers"}
	}
	ctx, stop := context.WithCancel(e.stop)
	defer stop()
	go func() { // the parent closes our stdin to stop us, or dies
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()

	nc, err := nats.Connect(url, nats.Name(fmt.Sprintf("statepipe demo worker %d", id)), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second)) // no publish waits for ever
	if err != nil {
		return err
	}
	cons, err := js.Consumer(ctx, filesStream, workersConsumer)
	if err != nil {
		return err
	}
	// The demo's machine, up to Store: the collector stores.
	m := newETL(src, nil, nil)
	p, err := statepipe.New[File](m,
		workerCount(pipelines),
		statepipe.WithMiddleware(func(stage string, r statepipe.Request[File], next statepipe.Stage[File]) statepipe.Request[File] {
			if stage == "Store" {
				return r // finished here; the Sink publishes the row
			}
			return next(r)
		}))
	if err != nil {
		return err
	}
	source := &spjs.Source[File]{
		Consumer: cons, JetStream: js, Decode: decodeFile, MaxInFlight: workerInFlight,
		DeadLetter: deadSubject, FetchWait: 200 * time.Millisecond,
		Sink: &spjs.Sink[File]{Subject: rowsSubject, Encode: encodeFile},
	}
	fmt.Fprintln(e.stdout, "ready")
	err = source.Run(ctx, p)
	p.Close()
	b, jerr := json.Marshal(workerReport{ID: id, Pid: os.Getpid(), Stats: source.Stats()})
	if jerr == nil {
		fmt.Fprintf(e.stdout, "report %s\n", b)
	}
	return errors.Join(err, jerr)
}

// distributedResult is what demo --workers did, for its summary.
type distributedResult struct {
	cfg       demoConfig
	tree      *tree
	url       string
	elapsed   time.Duration
	rows      int64
	batches   int64
	dead      int64
	workers   []workerReport
	collector spjs.Stats
	batch     statepipe.BatchStats
	top       []packageRow
	filesInfo *jetstream.ConsumerInfo
}

func printDistributed(w io.Writer, r distributedResult) {
	kv := newTable(w, 0)
	kv.row("")
	kv.row("statepipe demo --workers %d: %s -> %s", r.cfg.workers, r.tree.root, r.cfg.db)
	kv.row("  nats\tan embedded server at %s, streams %s -> %s, dead letters to %s", r.url, filesStream, rowsStream, deadStream)
	kv.row("  files\t%d walked (%d Go, %d other), one message each", r.tree.total, r.tree.goFiles, r.tree.total-r.tree.goFiles)
	kv.row("  rows\t%d committed by the collector in %s; %d dead letters", r.rows, plural(int(r.batches), "transaction"), r.dead)
	rate := 0.0
	if s := r.elapsed.Seconds(); s > 0 {
		rate = float64(r.rows) / s
	}
	kv.row("  time\t%v, %.0f files/s (publishing included)", round(r.elapsed), rate)
	kv.flush()

	fmt.Fprintln(w)
	t := newTable(w, 0)
	t.row("  \tpid\t%8s %12s %8s %6s %12s %10s", "files", "redelivered", "retried", "dead", "in-progress", "duplicates")
	var sum spjs.Stats
	for _, wr := range r.workers {
		s := wr.Stats
		if wr.Lost {
			t.row("  worker %d\t%d\t%8s   (killed: no report; the files it had not acked went to the others)", wr.ID, wr.Pid, "-")
			continue
		}
		t.row("  worker %d\t%d\t%8d %12d %8d %6d %12d %10d", wr.ID, wr.Pid, s.Done, s.Redelivered, s.Retried, s.DeadLettered, s.InProgress, s.Duplicates)
		sum.Done += s.Done
		sum.Redelivered += s.Redelivered
	}
	c := r.collector
	t.row("  collector\t%d\t%8d %12d %8d %6d %12d %10s", os.Getpid(), c.Done, c.Redelivered, c.Retried, c.DeadLettered, c.InProgress, "-")
	t.flush()
	fmt.Fprintf(w, "\n  workers: files each processed and published, acked after the results stream stored them;\n")
	fmt.Fprintf(w, "  collector: rows committed to SQLite, %d flushes by reason: %s\n", r.batch.TotalFlushes(), flushReasons(r.batch))
	if sum.Redelivered > 0 {
		fmt.Fprintf(w, "  %d redeliveries: files whose worker did not ack them in time; RESULTS kept one row per file\n", sum.Redelivered)
	}

	fmt.Fprintf(w, "\nthe packages with the most functions, read back from %s:\n\n", r.cfg.db)
	pk := newTable(w, 0)
	pk.row("  dir\tpackage\t%6s %7s %8s", "files", "funcs", "lines")
	for _, row := range r.top {
		pk.row("  %s\t%s\t%6d %7d %8d", row.Dir, row.Package, row.Files, row.Funcs, row.Lines)
	}
	pk.flush()
}

func flushReasons(b statepipe.BatchStats) string {
	var parts []string
	for reason := statepipe.FlushSize; reason <= statepipe.FlushShutdown; reason++ {
		if n := b.Flushes[reason]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", reason, n))
		}
	}
	return strings.Join(parts, ", ")
}
