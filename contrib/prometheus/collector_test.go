package prometheus_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/statepipe/statepipe"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newRegistered starts the test machine with opts and registers its
// collector, labelled pipeline="test", in a fresh registry.
func newRegistered(t *testing.T, opts ...statepipe.Option) (*statepipe.Pipelines[job], *prometheus.Registry) {
	t.Helper()
	p, err := statepipe.New[job](newMachine(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	reg := prometheus.NewRegistry()
	if err := reg.Register(spprom.NewCollector(p, spprom.WithConstLabels(prometheus.Labels{"pipeline": "test"}))); err != nil {
		t.Fatal(err)
	}
	return p, reg
}

// runSequential submits jobs 0..n-1 one at a time, each after the previous
// one came out, so that every batch is a lone request: the store batcher
// flushes for size (MaxItems 1), the audit batcher because nothing else
// could join (idle).
func runSequential(t *testing.T, p *statepipe.Pipelines[job], n int) {
	t.Helper()
	g := p.NewGroup()
	for i := range n {
		if err := g.Submit(context.Background(), job{n: i}); err != nil {
			t.Fatal(err)
		}
		<-g.Out()
	}
	g.Close()
	for range g.Out() {
	}
}

// nothing is a no-op observer: with an Observer set, the engine times
// every stage run, so the histograms' counts are exact.
var nothing = statepipe.ObserverFunc(func(statepipe.Event) {})

func TestCollectorExactCounts(t *testing.T) {
	const n = 40
	p, reg := newRegistered(t, statepipe.WithWorkers(4), statepipe.WithObserver(nothing))
	runSequential(t, p, n)
	p.Close() // Stats is exact once closed

	e := expect(n)
	want := fmt.Sprintf(`
# HELP statepipe_requests_submitted_total Requests accepted by Submit.
# TYPE statepipe_requests_submitted_total counter
statepipe_requests_submitted_total{pipeline="test"} %d
# HELP statepipe_requests_completed_total Requests that came out with no error.
# TYPE statepipe_requests_completed_total counter
statepipe_requests_completed_total{pipeline="test"} %d
# HELP statepipe_requests_failed_total Requests that came out with an error.
# TYPE statepipe_requests_failed_total counter
statepipe_requests_failed_total{pipeline="test"} %d
# HELP statepipe_requests_in_flight Requests inside the machine: queued, running or parked.
# TYPE statepipe_requests_in_flight gauge
statepipe_requests_in_flight{pipeline="test"} 0
# HELP statepipe_requests_parked Requests held by batchers.
# TYPE statepipe_requests_parked gauge
statepipe_requests_parked{pipeline="test"} 0
# HELP statepipe_workers Worker goroutines.
# TYPE statepipe_workers gauge
statepipe_workers{pipeline="test"} 4
# HELP statepipe_stage_runs_total Calls of the stage.
# TYPE statepipe_stage_runs_total counter
statepipe_stage_runs_total{pipeline="test",stage="Audit"} %[4]d
statepipe_stage_runs_total{pipeline="test",stage="Fix"} %[5]d
statepipe_stage_runs_total{pipeline="test",stage="Start"} %[6]d
statepipe_stage_runs_total{pipeline="test",stage="Store"} %[4]d
# HELP statepipe_stage_errors_total Calls of the stage that ended with the request's error set, panics included.
# TYPE statepipe_stage_errors_total counter
statepipe_stage_errors_total{pipeline="test",stage="Audit"} 0
statepipe_stage_errors_total{pipeline="test",stage="Fix"} %[7]d
statepipe_stage_errors_total{pipeline="test",stage="Start"} 0
statepipe_stage_errors_total{pipeline="test",stage="Store"} 0
# HELP statepipe_batch_flushes_total Flush calls of the batcher, by what triggered them.
# TYPE statepipe_batch_flushes_total counter
statepipe_batch_flushes_total{batcher="audit",pipeline="test",reason="bytes"} 0
statepipe_batch_flushes_total{batcher="audit",pipeline="test",reason="idle"} %[4]d
statepipe_batch_flushes_total{batcher="audit",pipeline="test",reason="linger"} 0
statepipe_batch_flushes_total{batcher="audit",pipeline="test",reason="shutdown"} 0
statepipe_batch_flushes_total{batcher="audit",pipeline="test",reason="size"} 0
statepipe_batch_flushes_total{batcher="store",pipeline="test",reason="bytes"} 0
statepipe_batch_flushes_total{batcher="store",pipeline="test",reason="idle"} 0
statepipe_batch_flushes_total{batcher="store",pipeline="test",reason="linger"} 0
statepipe_batch_flushes_total{batcher="store",pipeline="test",reason="shutdown"} 0
statepipe_batch_flushes_total{batcher="store",pipeline="test",reason="size"} %[4]d
# HELP statepipe_batch_items_total Requests flushed by the batcher.
# TYPE statepipe_batch_items_total counter
statepipe_batch_items_total{batcher="audit",pipeline="test"} %[4]d
statepipe_batch_items_total{batcher="store",pipeline="test"} %[4]d
# HELP statepipe_batch_items_failed_total Requests failed by a flush: by its error, or their own.
# TYPE statepipe_batch_items_failed_total counter
statepipe_batch_items_failed_total{batcher="audit",pipeline="test"} %[8]d
statepipe_batch_items_failed_total{batcher="store",pipeline="test"} 0
# HELP statepipe_batch_items_cancelled_total Requests whose context ended while parked in the batcher.
# TYPE statepipe_batch_items_cancelled_total counter
statepipe_batch_items_cancelled_total{batcher="audit",pipeline="test"} 0
statepipe_batch_items_cancelled_total{batcher="store",pipeline="test"} 0
# HELP statepipe_batch_items_parked Requests parked in the batcher now.
# TYPE statepipe_batch_items_parked gauge
statepipe_batch_items_parked{batcher="audit",pipeline="test"} 0
statepipe_batch_items_parked{batcher="store",pipeline="test"} 0
`, e.submitted, e.completed, e.failed, e.store, e.fix, e.start, e.fixErrors, e.auditFailed)
	names := []string{
		"statepipe_requests_submitted_total", "statepipe_requests_completed_total", "statepipe_requests_failed_total",
		"statepipe_requests_in_flight", "statepipe_requests_parked", "statepipe_workers",
		"statepipe_stage_runs_total", "statepipe_stage_errors_total",
		"statepipe_batch_flushes_total", "statepipe_batch_items_total", "statepipe_batch_items_failed_total",
		"statepipe_batch_items_cancelled_total", "statepipe_batch_items_parked",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	families := gather(t, reg)
	runs := map[string]uint64{"Start": e.start, "Fix": e.fix, "Store": e.store, "Audit": e.store}
	hist := families["statepipe_stage_duration_seconds"]
	if hist == nil || hist.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("statepipe_stage_duration_seconds: %v, want a histogram", hist)
	}
	bounds := statepipe.BucketBounds()
	for _, m := range hist.GetMetric() {
		stage := label(m, "stage")
		h := m.GetHistogram()
		t.Run(stage, func(t *testing.T) {
			// With an Observer every run is timed: the count is the runs.
			if h.GetSampleCount() != runs[stage] {
				t.Errorf("count %d, want %d (every run, with an Observer)", h.GetSampleCount(), runs[stage])
			}
			if h.GetSampleSum() <= 0 {
				t.Errorf("sum %v, want > 0", h.GetSampleSum())
			}
			checkBuckets(t, h, bounds)
		})
	}
	if len(hist.GetMetric()) != len(runs) {
		t.Errorf("%d stage histograms, want %d", len(hist.GetMetric()), len(runs))
	}

	// With an Observer every request is timed too; park and flush times
	// are taken for every request and flush.
	for _, c := range []struct {
		name, batcher string
		count         uint64
	}{
		{"statepipe_queue_duration_seconds", "", e.submitted},
		{"statepipe_run_duration_seconds", "", e.submitted},
		{"statepipe_batch_flush_duration_seconds", "store", e.store},
		{"statepipe_batch_flush_duration_seconds", "audit", e.store},
		{"statepipe_batch_park_duration_seconds", "store", e.store},
		{"statepipe_batch_park_duration_seconds", "audit", e.store},
	} {
		t.Run(c.name+"/"+c.batcher, func(t *testing.T) {
			f := families[c.name]
			if f.GetType() != dto.MetricType_SUMMARY {
				t.Fatalf("type %v, want summary", f.GetType())
			}
			for _, m := range f.GetMetric() {
				if label(m, "batcher") != c.batcher {
					continue
				}
				s := m.GetSummary()
				if s.GetSampleCount() != c.count || s.GetSampleSum() <= 0 || len(s.GetQuantile()) != 0 {
					t.Errorf("count %d, sum %v, %d quantiles; want %d, > 0, none",
						s.GetSampleCount(), s.GetSampleSum(), len(s.GetQuantile()), c.count)
				}
				return
			}
			t.Errorf("no series with batcher=%q", c.batcher)
		})
	}
}

// checkBuckets checks that the buckets are the core's bounds in seconds,
// with cumulative counts that end at or below the sample count.
func checkBuckets(t *testing.T, h *dto.Histogram, bounds []time.Duration) {
	t.Helper()
	b := h.GetBucket()
	if len(b) != len(bounds) {
		t.Fatalf("%d buckets, want %d", len(b), len(bounds))
	}
	var prev uint64
	for i, bk := range b {
		if want := bounds[i].Seconds(); bk.GetUpperBound() != want {
			t.Errorf("bucket %d: le %v, want %v", i, bk.GetUpperBound(), want)
		}
		if bk.GetCumulativeCount() < prev {
			t.Errorf("bucket %d (le %v): %d after %d, not cumulative", i, bk.GetUpperBound(), bk.GetCumulativeCount(), prev)
		}
		prev = bk.GetCumulativeCount()
	}
	if prev > h.GetSampleCount() {
		t.Errorf("last bucket %d above the count %d (the +Inf bucket)", prev, h.GetSampleCount())
	}
	if prev == 0 && h.GetSampleCount() > 0 {
		t.Errorf("every one of %d runs above %v", h.GetSampleCount(), bounds[len(bounds)-1])
	}
}

func TestCollectorLint(t *testing.T) {
	p, reg := newRegistered(t, statepipe.WithAutoscale(1, 4)) // so that worker_changes_total is there
	runSequential(t, p, 20)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	// Every family of the package documentation is there.
	families := gather(t, reg)
	for _, name := range documented {
		if families["statepipe_"+name] == nil {
			t.Errorf("statepipe_%s missing", name)
		}
	}
	if len(families) != len(documented) {
		t.Errorf("%d families, want the %d documented", len(families), len(documented))
	}
}

// documented are the metric names of the table in doc.go.
var documented = []string{
	"requests_submitted_total", "requests_completed_total", "requests_failed_total",
	"requests_in_flight", "requests_queued", "requests_running", "requests_parked", "requests_buffered",
	"requests_retrying", "keys", "keys_waiting", "key_waiting_requests", "key_longest_wait_seconds",
	"workers", "worker_changes_total", "groups", "queue_duration_seconds", "run_duration_seconds",
	"stage_runs_total", "stage_errors_total", "stage_retries_total", "stage_duration_seconds",
	"batch_flushes_total", "batch_items_total", "batch_items_failed_total", "batch_items_cancelled_total",
	"batch_items_parked", "batch_items_retried_total", "batch_flush_duration_seconds", "batch_park_duration_seconds",
}

// TestCollectorUnderLoad scrapes while several groups push jobs through
// the machine, and checks that no counter ever goes down between scrapes
// and that the final figures are exact.
func TestCollectorUnderLoad(t *testing.T) {
	const groups, perGroup = 4, 500
	p, reg := newRegistered(t, statepipe.WithWorkers(8), statepipe.WithMaxInFlight(64))

	done := make(chan struct{})
	var scrapes sync.WaitGroup
	scrapes.Go(func() {
		last := map[string]float64{}
		for {
			for k, v := range counters(t, reg) {
				if v < last[k] {
					t.Errorf("%s went down from %v to %v", k, last[k], v)
				}
				last[k] = v
			}
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	var wg sync.WaitGroup
	for gi := range groups {
		g := p.NewGroup()
		wg.Go(func() {
			for i := range perGroup {
				if err := g.Submit(context.Background(), job{n: gi*perGroup + i}); err != nil {
					t.Error(err)
				}
			}
			g.Close()
		})
		wg.Go(func() {
			for range g.Out() {
			}
		})
	}
	wg.Wait()
	close(done)
	scrapes.Wait()
	p.Close()

	e := expect(groups * perGroup)
	got := counters(t, reg)
	for k, want := range map[string]uint64{
		"statepipe_requests_submitted_total":                           e.submitted,
		"statepipe_requests_completed_total":                           e.completed,
		"statepipe_requests_failed_total":                              e.failed,
		`statepipe_stage_runs_total{stage="Start"}`:                    e.start,
		`statepipe_stage_runs_total{stage="Fix"}`:                      e.fix,
		`statepipe_stage_errors_total{stage="Fix"}`:                    e.fixErrors,
		`statepipe_stage_runs_total{stage="Store"}`:                    e.store,
		`statepipe_batch_items_total{batcher="store"}`:                 e.store,
		`statepipe_batch_items_total{batcher="audit"}`:                 e.store,
		`statepipe_batch_items_failed_total{batcher="audit"}`:          e.auditFailed,
		`statepipe_batch_flushes_total{batcher="store",reason="size"}`: e.store,
	} {
		if got[k] != float64(want) {
			t.Errorf("%s = %v, want %d", k, got[k], want)
		}
	}
	// The audit batcher's flushes, whatever their reasons, add up to the
	// batcher's own count; it never lingers (an hour) and has no byte
	// bound. It may fill: all 64 requests in flight can be in it.
	var auditFlushes float64
	for _, r := range []string{"size", "bytes", "linger", "idle", "shutdown"} {
		auditFlushes += got[`statepipe_batch_flushes_total{batcher="audit",reason="`+r+`"}`]
	}
	for _, r := range []string{"bytes", "linger"} {
		if v := got[`statepipe_batch_flushes_total{batcher="audit",reason="`+r+`"}`]; v != 0 {
			t.Errorf("audit flushed %v times for %s", v, r)
		}
	}
	if auditFlushes < 1 || auditFlushes > float64(e.store) {
		t.Errorf("audit flushed %v times, want 1..%d", auditFlushes, e.store)
	}
	// Without an Observer, one request in 32 is timed.
	families := gather(t, reg)
	for _, m := range families["statepipe_stage_duration_seconds"].GetMetric() {
		h := m.GetHistogram()
		if stage := label(m, "stage"); stage == "Start" && (h.GetSampleCount() == 0 || h.GetSampleCount() >= e.start) {
			t.Errorf("Start: %d runs timed, want some of %d", h.GetSampleCount(), e.start)
		}
		checkBuckets(t, h, statepipe.BucketBounds())
	}
}

// gather returns the registry's families by name.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// counters returns every counter, and the _count and _sum of every
// histogram and summary, keyed name{labels}, leaving out pipeline.
func counters(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range gather(t, g) {
		for _, m := range mf.GetMetric() {
			key := name + labelString(m)
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
				out[key+"_sum"] = m.GetHistogram().GetSampleSum()
				for _, b := range m.GetHistogram().GetBucket() {
					out[fmt.Sprintf("%s_bucket%g", key, b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
			case dto.MetricType_SUMMARY:
				out[key+"_count"] = float64(m.GetSummary().GetSampleCount())
				out[key+"_sum"] = m.GetSummary().GetSampleSum()
			}
		}
	}
	return out
}

func labelString(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		if l.GetName() != "pipeline" {
			parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
