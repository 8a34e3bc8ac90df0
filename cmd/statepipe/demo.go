package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

const demoHelp = `Usage: statepipe demo [flags]

Loads every file of Go's own source tree into an SQLite database through a
statepipe state machine, then shows what happened and queries the result:

  Start ─┬─ ParseGo ───┬─ Hash ─ Store ⇢ bulk INSERT ⇢ Committed
         └─ ReadOther ─┘

Go files are parsed (package, imports, functions, lines); other files take
the light route (size, lines); every file is hashed. Each top-level
directory of the tree is submitted through its own group, as separate
callers of one service would. Store parks files in a Batcher, which writes
them with multi-row INSERTs, one transaction per flush; Committed runs after
the write.

With --workers N, the same machine runs in N worker processes that share
the files through a log: NATS JetStream (an embedded server, on this
machine), or with --via kafka an in-process Kafka cluster and exactly-once
workers. The workers read, parse and hash; one collector in this process
writes the rows to SQLite in batches. Kill a worker (--kill-worker) and
its files go to another.

With --serve ADDR, a live dashboard of the run is served on ADDR: the stage
graph as run, laid out by Graphviz, with counts, rates and latencies, and
the throughput; it stays up after the run until Ctrl-C. Either way the
graph is also written as an SVG file next to the database.

Running it again replaces the previous data (in one transaction); a second
demo on a database that one is writing is refused. Ctrl-C
stops taking new files and commits those in flight; a second Ctrl-C leaves
what is not yet written. Either way the database holds whole batches only.

Flags:
`

type demoConfig struct {
	src        string
	db         string
	pipelines  int
	batch      int
	linger     time.Duration
	ordered    bool
	baseline   bool
	workers    int           // > 0: the distributed mode, with this many worker processes
	killWorker bool          // with workers: SIGKILL worker 1 a third of the way through
	via        string        // with workers: the log they share, "nats" or "kafka"
	tick       time.Duration // between plain progress lines
	serve      string        // --serve: the dashboard's address
	dash       *dashServer   // serving the dashboard, with --serve

	afterFlush func(id int64) // tests: called after each committed flush
}

// Bounds of the flags, so that a typo fails fast instead of at run time.
const (
	maxBatch  = 100_000
	maxLinger = time.Minute
)

// parseDemoFlags parses the demo's flags; --help prints to stdout.
func parseDemoFlags(args []string, stdout io.Writer) (demoConfig, error) {
	c := demoConfig{tick: time.Second}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by run
	fs.StringVar(&c.src, "src", "", "the tree `DIR` to load (default $(go env GOROOT)/src)")
	fs.StringVar(&c.db, "db", "statepipe-demo.db", "the SQLite database `FILE` to write;\nthe demo's data from a previous run is replaced")
	fs.IntVar(&c.pipelines, "pipelines", 0,
		fmt.Sprintf("`N` pipelines in parallel, each one worker per stage; 0 (the default)\nautoscales the workers between %d and %d, since reading files waits on the disk", autoscaleMin, autoscaleMax()))
	fs.IntVar(&c.batch, "batch", 500, "at most `N` rows per bulk INSERT: the Batcher's MaxItems")
	fs.DurationVar(&c.linger, "linger", 20*time.Millisecond, "a batch waits at most `D` after its first row for more:\nthe Batcher's MaxWait")
	fs.BoolVar(&c.ordered, "ordered", false, "release each group's results in submission order\n(a slow file holds back the ones submitted after it)")
	fs.BoolVar(&c.baseline, "baseline", false, "also run the same job the naive way (one goroutine,\none autocommit INSERT per row) into a second database,\nand compare")
	fs.IntVar(&c.workers, "workers", 0, "run the machine in `N` worker processes that share the\nfiles through a log (--via); one collector writes SQLite")
	fs.StringVar(&c.via, "via", "nats", "with --workers: the log the workers share, `nats` (an embedded\nNATS JetStream server) or kafka (an in-process Kafka cluster)")
	fs.BoolVar(&c.killWorker, "kill-worker", false, "with --workers: kill worker 1 (SIGKILL) a third of the way\nthrough, to see its files redelivered to the others")
	fs.StringVar(&c.serve, "serve", "", "serve a live dashboard of the run on `ADDR` (127.0.0.1:8080;\n127.0.0.1:0 picks a free port), and keep serving after\nthe run until Ctrl-C; no authentication: keep it internal")
	fs.Usage = func() {}
	pos, err := parseFlags(fs, "demo", args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, demoHelp)
		printFlags(stdout, fs)
		return c, err
	}
	if err != nil {
		return c, err
	}
	bad := func(format string, args ...any) (demoConfig, error) {
		return c, usageError{cmd: "demo", msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case len(pos) > 0:
		return bad("demo takes no arguments, got %q", pos[0])
	case c.pipelines < 0:
		return bad("--pipelines must be at least 1, or 0 (the default) to autoscale; got %d", c.pipelines)
	case c.batch < 1 || c.batch > maxBatch:
		return bad("--batch must be between 1 and %d, got %d", maxBatch, c.batch)
	case c.linger < 0 || c.linger > maxLinger:
		return bad("--linger must be between 0 and %v, got %v", maxLinger, c.linger)
	case c.db == "":
		return bad("--db must name a file")
	case c.workers < 0 || c.workers > maxWorkers:
		return bad("--workers must be between 1 and %d, or 0 (the default) to run in this process; got %d", maxWorkers, c.workers)
	case c.via != "nats" && c.via != "kafka":
		return bad("--via must be nats or kafka, got %q", c.via)
	case c.via == "kafka" && c.workers == 0:
		return bad("--via kafka needs --workers")
	case c.killWorker && c.workers < 2:
		return bad("--kill-worker needs --workers 2 or more")
	case c.workers > 0 && (c.baseline || c.ordered):
		return bad("--workers cannot be combined with --baseline or --ordered")
	}
	return c, nil
}

// printFlags prints the flags GNU style, with their defaults.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		left := "  --" + f.Name
		if name != "" {
			left += " " + name
		}
		lines := strings.Split(text, "\n")
		if !strings.Contains(text, "(default") && f.DefValue != "" && f.DefValue != "false" {
			lines[len(lines)-1] += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%-16s %s\n", left, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "%-16s %s\n", "", l)
		}
	})
}

func demoCommand(args []string, e env) error {
	cfg, err := parseDemoFlags(args, e.stdout)
	if err != nil {
		return err
	}
	if cfg.src == "" {
		if cfg.src, err = defaultSrc(); err != nil {
			return err
		}
	}
	return runDemo(e, cfg)
}

// defaultSrc finds Go's source tree: the go command's GOROOT, or the one
// this binary was built with.
func defaultSrc() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	root := strings.TrimSpace(string(out))
	if err != nil || root == "" {
		//lint:ignore SA1019 only a fallback when the go command is missing
		root = runtime.GOROOT()
	}
	if root == "" {
		return "", fmt.Errorf("cannot find Go's source tree: 'go env GOROOT' failed (%v); use --src", err)
	}
	return filepath.Join(root, "src"), nil
}

// tree is the result of walking the source tree: the files to load, by
// top-level directory.
type tree struct {
	root    string
	tops    []string            // top-level directories in walk order; "." holds the root's own files
	files   map[string][]string // slash paths relative to root, by top
	total   int
	goFiles int
	skipped []string // directories that could not be read
}

// walkTree lists the regular files under root. The walk comes first so
// that the progress bar knows the total.
func walkTree(root string) (*tree, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("cannot read --src: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("cannot read --src %s: not a directory", root)
	}
	t := &tree{root: root, files: make(map[string][]string)}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			t.skipped = append(t.skipped, p)
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		top := "."
		if i := strings.IndexByte(rel, '/'); i >= 0 {
			top = rel[:i]
		}
		if _, ok := t.files[top]; !ok {
			t.tops = append(t.tops, top)
		}
		t.files[top] = append(t.files[top], rel)
		t.total++
		if strings.HasSuffix(rel, ".go") {
			t.goFiles++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read --src %s: %w", root, err)
	}
	if t.total == 0 {
		return nil, fmt.Errorf("--src %s holds no files", root)
	}
	return t, nil
}

func runDemo(e env, cfg demoConfig) (err error) {
	// The progress reporter and the interruption notice share stderr.
	e.stderr = &lockedWriter{w: e.stderr}
	if cfg.serve != "" {
		if cfg.dash, err = startDashboard(cfg.serve, e.stderr); err != nil {
			return err
		}
		defer func() {
			if !cfg.dash.attached() {
				err = errors.Join(err, cfg.dash.close()) // the job never started: nothing to show
				return
			}
			err = errors.Join(err, cfg.dash.waitAndClose(e.stop, e.stderr))
		}()
	}
	t, err := walkTree(cfg.src)
	if err != nil {
		return err
	}
	for _, s := range t.skipped {
		fmt.Fprintf(e.stderr, "statepipe: skipped unreadable %s\n", s)
	}
	if cfg.workers > 0 {
		if cfg.via == "kafka" {
			return runKafka(e, cfg, t)
		}
		return runDistributed(e, cfg, t)
	}
	res, err := loadWithPipelines(e, cfg, t)
	if res != nil {
		printSummary(e.stdout, cfg, t, res)
	}
	if err != nil {
		return err
	}
	if res.interrupted {
		return fmt.Errorf("%w: %d of %d files committed to %s; the database is consistent",
			errInterrupted, res.rows, t.total, cfg.db)
	}
	if !cfg.baseline {
		return nil
	}
	base, err := loadBaseline(e, cfg, t)
	if base != nil {
		printComparison(e.stdout, res, base)
	}
	if err == nil && base.interrupted {
		err = fmt.Errorf("%w: baseline stopped after %d files", errInterrupted, base.rows)
	}
	return err
}
