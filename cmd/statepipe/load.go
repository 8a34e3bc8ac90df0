package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statepipe/statepipe"
)

// demoResult is what one run did, for the summary.
type demoResult struct {
	db          string
	ok, failed  int64
	firstErr    error
	elapsed     time.Duration
	interrupted bool
	rows        int64 // rows in the database at the end
	batches     int64 // flushes recorded in the database

	stats     statepipe.Stats
	batch     statepipe.BatchStats
	stages    []string
	graph     statepipe.Graph
	pipelines int
	top       []packageRow
	svg       string // the graph's picture, written next to the database
	svgErr    error  // why it could not be
}

func (r *demoResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok+r.failed) / r.elapsed.Seconds()
}

// The demo's autoscaling bounds: a file read is I/O, so more workers than
// cores can help, up to what the disk gives.
const autoscaleMin = 2

func autoscaleMax() int { return 16 * runtime.GOMAXPROCS(0) }

// workerCount is the option for --pipelines: that many pipelines, or with
// 0, autoscaling. Reading and hashing files waits on the disk as much as
// it uses the CPU, so the worker count follows what raises throughput.
func workerCount(pipelines int) statepipe.Option {
	if pipelines > 0 {
		return statepipe.WithPipelines(pipelines)
	}
	return statepipe.WithAutoscale(autoscaleMin, autoscaleMax())
}

// loadWithPipelines is the demo proper: the tree through the state
// machine into cfg.db.
func loadWithPipelines(e env, cfg demoConfig, t *tree) (*demoResult, error) {
	st, err := openStore(context.Background(), cfg.db)
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			st.Close()
		}
	}()
	if err := st.reset(context.Background(), "statepipe", t.root, t.total); err != nil {
		return nil, fmt.Errorf("cannot prepare database %s: %w", cfg.db, err)
	}

	m := newETL(t.root, st, cfg.afterFlush, statepipe.MaxItems(cfg.batch), statepipe.MaxWait(cfg.linger), statepipe.BatchName("sqlite"))
	opts := []statepipe.Option{
		// Room for two full batches in flight, so that batches can fill.
		statepipe.WithMaxInFlight(max(1024, 2*cfg.batch)),
	}
	opts = append(opts, workerCount(cfg.pipelines))
	if cfg.ordered {
		opts = append(opts, statepipe.WithOrdered())
	}
	p, err := statepipe.New[File](m, opts...)
	if err != nil {
		return nil, err
	}

	if cfg.dash != nil {
		cfg.dash.attach(p, "statepipe demo: "+t.root)
	}
	res := &demoResult{db: cfg.db, pipelines: cfg.pipelines}
	var ok, failed atomic.Int64
	var errOnce sync.Once
	start := time.Now()
	prog := startProgress(e.stderr, e.tty, cfg.tick, "demo", int64(t.total), func() int64 { return ok.Load() + failed.Load() })

	// One group per top-level directory, each with its own submitter and
	// consumer, as independent callers of one service.
	groups := make([]*statepipe.Group[File], len(t.tops))
	for i := range t.tops {
		groups[i] = p.NewGroup()
	}
	// At the first Ctrl-C, closing the groups wakes a Submit blocked for
	// room; what was submitted still comes out.
	unwatch := context.AfterFunc(e.stop, func() {
		for _, g := range groups {
			g.Close()
		}
		nl := ""
		if e.tty {
			nl = "\n" // leave the bar's line
		}
		fmt.Fprintf(e.stderr, "%sstatepipe: stopping: committing the files in flight (Ctrl-C again to abandon them)\n", nl)
	})
	var wg sync.WaitGroup
	for i, top := range t.tops {
		g, paths := groups[i], t.files[top]
		wg.Go(func() {
			defer g.Close()
			for _, path := range paths {
				if e.stop.Err() != nil {
					return
				}
				// The request's context is abort: a second Ctrl-C ends
				// the requests in flight, a first one lets them finish.
				if err := g.Submit(e.abort, File{Path: path, Top: top}); err != nil {
					return
				}
			}
		})
		wg.Go(func() {
			for r := range g.Out() {
				// A file with a batch id is in the database, even if a
				// second Ctrl-C ended its context before Committed ran.
				if r.Data.Batch == 0 {
					failed.Add(1)
					errOnce.Do(func() {
						res.firstErr = fmt.Errorf("%s: %w", r.Data.Path, r.Err)
					})
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	unwatch()
	p.Close()
	res.elapsed = time.Since(start)
	prog.finishAt(res.elapsed)

	res.ok, res.failed = ok.Load(), failed.Load()
	res.stats, res.batch, res.stages, res.graph = p.Stats(), m.batch.Stats(), p.Stages(), p.Graph()
	res.svg = graphSVGPath(cfg.db)
	if err := writeGraphSVG(res.svg, res.graph.DOT()); err != nil {
		res.svg, res.svgErr = "", err
	}
	res.interrupted = e.stop.Err() != nil && res.ok < int64(t.total)
	status := "complete"
	if res.interrupted {
		status = "interrupted"
	}
	// What follows must happen after an interruption too: no stop context.
	ctx := context.Background()
	if err := st.finishRun(status); err != nil {
		return res, fmt.Errorf("cannot record the run in %s: %w", cfg.db, err)
	}
	if res.rows, res.batches, err = st.counts(ctx); err != nil {
		return res, fmt.Errorf("cannot read back %s: %w", cfg.db, err)
	}
	if res.top, err = st.topPackages(ctx, 10); err != nil {
		return res, fmt.Errorf("cannot query %s: %w", cfg.db, err)
	}
	closed = true
	if err := st.Close(); err != nil {
		return res, fmt.Errorf("cannot close %s: %w", cfg.db, err)
	}
	if res.failed > 0 && !res.interrupted {
		return res, fmt.Errorf("%d files failed; first: %w", res.failed, res.firstErr)
	}
	return res, nil
}

// loadBaseline does the same job the naive way: one goroutine, one file
// after the other, one autocommit INSERT per row.
func loadBaseline(e env, cfg demoConfig, t *tree) (*demoResult, error) {
	path := baselinePath(cfg.db)
	st, err := openStore(context.Background(), path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := st.reset(context.Background(), "baseline", t.root, t.total); err != nil {
		return nil, fmt.Errorf("cannot prepare database %s: %w", path, err)
	}
	res := &demoResult{db: path}
	var done atomic.Int64
	start := time.Now()
	prog := startProgress(e.stderr, e.tty, cfg.tick, "baseline", int64(t.total), done.Load)
	ctx := context.Background()
loop:
	for _, top := range t.tops {
		for _, rel := range t.files[top] {
			if e.stop.Err() != nil {
				break loop
			}
			f := inspect(t.root, File{Path: rel, Top: top})
			if err := st.insertOne(ctx, &f); err != nil {
				prog.finish()
				return nil, fmt.Errorf("baseline: %s: %w", rel, err)
			}
			done.Add(1)
		}
	}
	res.elapsed = time.Since(start)
	prog.finishAt(res.elapsed)
	res.ok = done.Load()
	res.interrupted = res.ok < int64(t.total)
	status := "complete"
	if res.interrupted {
		status = "interrupted"
	}
	if err := st.finishRun(status); err != nil {
		return res, err
	}
	res.rows, _, err = st.counts(ctx)
	return res, err
}

// baselinePath puts the baseline next to the demo's database:
// statepipe-demo.db becomes statepipe-demo-baseline.db.
func baselinePath(db string) string {
	ext := filepath.Ext(db)
	return strings.TrimSuffix(db, ext) + "-baseline" + ext
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
