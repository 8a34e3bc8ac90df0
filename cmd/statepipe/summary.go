package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/statepipe/statepipe"
)

// printSummary tells what the run did: counts and speed, what each stage
// and the batcher did, and a query that shows the data is in the database.
func printSummary(w io.Writer, cfg demoConfig, t *tree, r *demoResult) {
	order := "unordered"
	if cfg.ordered {
		order = "ordered"
	}
	kv := newTable(w, 0)
	kv.row("")
	kv.row("statepipe demo: %s -> %s", t.root, r.db)
	kv.row("  files\t%d walked (%d Go, %d other) in %s, one per top-level directory",
		t.total, t.goFiles, t.total-t.goFiles, plural(len(t.tops), "group"))
	kv.row("  rows\t%d committed in %s; %d files failed", r.rows, plural(int(r.batches), "transaction"), r.failed)
	kv.row("  time\t%v, %.0f files/s", round(r.elapsed), r.rate())
	if sc := r.stats.Scaling; sc.Max > 0 {
		kv.row("  machine\t%d stages, workers autoscaled within %d..%d (%d now; %d steps up, %d undone, %d down); --batch %d, --linger %v, %s groups",
			len(r.stages), sc.Min, sc.Max, r.stats.Workers, sc.Changes[statepipe.ScaleUp], sc.Changes[statepipe.ScaleUndo],
			sc.Changes[statepipe.ScaleDown], cfg.batch, cfg.linger, order)
	} else {
		kv.row("  machine\t%d pipelines x %d stages = %d workers; --batch %d, --linger %v, %s groups",
			r.pipelines, len(r.stages), r.stats.Workers, cfg.batch, cfg.linger, order)
	}
	if r.interrupted {
		kv.row("  status\tINTERRUPTED: %d of %d files committed, in whole batches only", r.rows, t.total)
	}
	if r.firstErr != nil {
		kv.row("  first error\t%v", r.firstErr)
	}
	kv.flush()

	kv.row("")
	kv.row("stages (p.Stats())\t%8s %8s %10s %10s", "runs", "errors", "p50", "p99")
	for _, s := range r.stats.Stages {
		kv.row("  %s\t%8d %8d %10v %10v", s.Name, s.Runs, s.Errors, round(s.P50()), round(s.P99()))
	}
	kv.row("  queue time\t%s\t(from Submit until a worker picks the file up)", durations(r.stats.QueueTime))
	kv.row("  run time\t%s\t(from pick-up until out, time parked in a batch included)", durations(r.stats.RunTime))

	b := r.batch
	kv.row("")
	kv.row("batcher %q (b.Stats())", b.Name)
	var reasons []string
	for reason := statepipe.FlushSize; reason <= statepipe.FlushShutdown; reason++ {
		reasons = append(reasons, fmt.Sprintf("%s %d", reason, b.Flushes[reason]))
	}
	kv.row("  flushes\t%d by reason: %s", b.TotalFlushes(), strings.Join(reasons, ", "))
	kv.row("  fill\t%.1f rows per flush on average, %.0f%% of --batch %d", b.MeanFill, 100*b.MeanFill/float64(cfg.batch), cfg.batch)
	kv.row("  items\t%d flushed, %d failed, %d cancelled while parked", b.Items, b.Failed, b.Cancelled)
	kv.row("  flush time\t%s", durations(b.FlushTime))
	kv.row("  park time\t%s", durations(b.ParkTime))
	kv.row("")
	kv.row("stages discovered (p.Stages()): %s", strings.Join(r.stages, ", "))
	kv.flush()

	if r.svg != "" {
		fmt.Fprintf(w, "\nthe stage graph as run, drawn by Graphviz: %s\n", r.svg)
	} else if r.svgErr != nil {
		fmt.Fprintf(w, "\nthe stage graph as run could not be drawn: %v\n", r.svgErr)
	}
	fmt.Fprintf(w, "\nthe stage graph as run (p.Graph().Mermaid(); paste it into any Mermaid viewer):\n\n")
	for _, l := range strings.Split(strings.TrimSpace(r.graph.Mermaid()), "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}

	fmt.Fprintf(w, "\nthe packages with the most functions, read back from %s:\n\n", r.db)
	for _, l := range strings.Split(strings.ReplaceAll(topPackagesQuery, "?", "10"), "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintln(w)
	pk := newTable(w, 0)
	pk.row("  dir\tpackage\t%6s %7s %8s", "files", "funcs", "lines")
	for _, row := range r.top {
		pk.row("  %s\t%s\t%6d %7d %8d", row.Dir, row.Package, row.Files, row.Funcs, row.Lines)
	}
	if len(r.top) == 0 {
		pk.row("  (no Go packages)")
	}
	pk.flush()
}

// table lines up columns separated by tabs.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, flags uint) table {
	return table{tabwriter.NewWriter(w, 0, 0, 2, ' ', flags)}
}

func (t table) row(format string, args ...any) { fmt.Fprintf(t.tw, format+"\n", args...) }
func (t table) flush()                         { t.tw.Flush() }

// printComparison sets the demo beside the baseline.
func printComparison(w io.Writer, demo, base *demoResult) {
	fmt.Fprintf(w, "\nbaseline: the same job in one goroutine, one autocommit INSERT per row -> %s\n", base.db)
	fmt.Fprintf(w, "(the same SQLite settings for both: WAL, synchronous=NORMAL)\n\n")
	t := newTable(w, 0)
	t.row("  \t%10s %10s", "statepipe", "baseline")
	t.row("  time\t%10v %10v", round(demo.elapsed), round(base.elapsed))
	t.row("  files/s\t%10.0f %10.0f", demo.rate(), base.rate())
	t.row("  rows\t%10d %10d", demo.rows, base.rows)
	t.flush()
	if base.interrupted || base.elapsed <= 0 || demo.rate() <= 0 {
		return
	}
	fmt.Fprintf(w, "  speed-up: %.1fx (files/s, statepipe over baseline)\n", demo.rate()/base.rate())
}

func durations(d statepipe.Durations) string {
	if d.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("avg %v, max %v", round(d.Avg), round(d.Max))
}

// plural spells n things: 1 group, 5 groups.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
