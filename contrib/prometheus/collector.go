package prometheus

import (
	"errors"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/statepipe/statepipe"
)

// The collector's own labels.
const (
	labelStage   = "stage"
	labelBatcher = "batcher"
	labelReason  = "reason"
)

// NewCollector returns a [prometheus.Collector] that exports p's
// statistics, as listed in the package documentation. Register it in a
// registry; every scrape calls [statepipe.Pipelines.Stats] once, and
// nothing else: the collector adds no work to the requests themselves.
// Collect takes about 40µs for four stages and two batchers (Stats about
// 4µs of it, holding each worker's statistics lock for a moment); a whole
// scrape, rendered by promhttp, about 150µs (BenchmarkScrape).
//
// The collector is checked: Describe lists every descriptor, so Register
// reports bad options (an invalid namespace or label, a label the
// collector uses itself, a nil p) and clashes with metrics already
// registered, such as a second collector without distinct
// [WithConstLabels]. It stays valid after p is closed, reporting the
// final figures.
func NewCollector[T any](p *statepipe.Pipelines[T], opts ...Option) prometheus.Collector {
	cfg := validate(opts)
	var stats func() statepipe.Stats
	if p == nil {
		cfg.problems = append(cfg.problems, "nil Pipelines")
	} else {
		stats = p.Stats
	}
	return newCollector(stats, cfg)
}

// collector is not generic: all it needs of the Pipelines is Stats.
type collector struct {
	stats  func() statepipe.Stats
	err    error              // a configuration problem, reported by Register
	d      descs              // one per metric family
	bounds []float64          // upper bounds of the latency buckets, in seconds
	mu     sync.Mutex         // serialises scrapes, guards high
	high   map[series]float64 // the highest value sent, for the counters that need it
}

// descs are the collector's metric families.
type descs struct {
	submitted, completed, failed                             *prometheus.Desc
	inFlight, queued, running, parked, buffered              *prometheus.Desc
	retrying                                                 *prometheus.Desc
	keys, keysWaiting, keyWaiters, keyLongestWait            *prometheus.Desc
	workers, groups, workerChanges                           *prometheus.Desc
	queueTime, runTime                                       *prometheus.Desc
	stageRuns, stageErrors, stageRetries, stageLatency       *prometheus.Desc
	flushes, items, itemsFailed, itemsCancelled, itemsParked *prometheus.Desc
	itemsRetried                                             *prometheus.Desc
	flushTime, parkTime                                      *prometheus.Desc
}

func (d *descs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.submitted, d.completed, d.failed,
		d.inFlight, d.queued, d.running, d.parked, d.buffered,
		d.retrying,
		d.keys, d.keysWaiting, d.keyWaiters, d.keyLongestWait,
		d.workers, d.groups, d.workerChanges,
		d.queueTime, d.runTime,
		d.stageRuns, d.stageErrors, d.stageRetries, d.stageLatency,
		d.flushes, d.items, d.itemsFailed, d.itemsCancelled, d.itemsParked,
		d.itemsRetried,
		d.flushTime, d.parkTime,
	}
}

func newCollector(stats func() statepipe.Stats, cfg config) *collector {
	c := &collector{stats: stats, high: map[series]float64{}}
	if len(cfg.problems) > 0 {
		c.err = errors.New("statepipe/prometheus: NewCollector: " + strings.Join(cfg.problems, "; "))
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(cfg.namespace, "", name), help, labels, cfg.constLabels)
	}
	c.d = descs{
		submitted: desc("requests_submitted_total", "Requests accepted by Submit."),
		completed: desc("requests_completed_total", "Requests that came out with no error."),
		failed:    desc("requests_failed_total", "Requests that came out with an error."),
		inFlight:  desc("requests_in_flight", "Requests inside the machine: queued, running or parked."),
		queued:    desc("requests_queued", "Requests waiting for a worker."),
		running:   desc("requests_running", "Requests on a worker now."),
		parked:    desc("requests_parked", "Requests held by batchers."),
		buffered:  desc("requests_buffered", "Results in open groups' outputs, not yet received."),
		retrying:  desc("requests_retrying", "Requests waiting out a retry's backoff."),

		keys:           desc("keys", "Keys with a request inside the machine (WithKey)."),
		keysWaiting:    desc("keys_waiting", "Keys with requests waiting for their turn."),
		keyWaiters:     desc("key_waiting_requests", "Requests waiting for their key's turn."),
		keyLongestWait: desc("key_longest_wait_seconds", "How long the longest waiting request has waited for its key."),

		workers:       desc("workers", "Worker goroutines."),
		workerChanges: desc("worker_changes_total", "Changes of the worker count by autoscaling, by reason: up, undo (a step up that did not raise throughput), down.", labelReason),
		groups:        desc("groups", "Open groups."),
		queueTime:     desc("queue_duration_seconds", "Time from Submit until a worker picks the request up, over sampled requests."),
		runTime:       desc("run_duration_seconds", "Time from pick-up until the request is out, parked time included, over sampled requests."),

		stageRuns:    desc("stage_runs_total", "Calls of the stage.", labelStage),
		stageErrors:  desc("stage_errors_total", "Calls of the stage that ended with the request's error set, panics included.", labelStage),
		stageRetries: desc("stage_retries_total", "Calls of the stage that failed with a marked error and were retried after a backoff.", labelStage),
		stageLatency: desc("stage_duration_seconds", "Duration of the stage's timed calls.", labelStage),

		flushes:        desc("batch_flushes_total", "Flush calls of the batcher, by what triggered them.", labelBatcher, labelReason),
		items:          desc("batch_items_total", "Requests flushed by the batcher.", labelBatcher),
		itemsFailed:    desc("batch_items_failed_total", "Requests failed by a flush: by its error, or their own.", labelBatcher),
		itemsCancelled: desc("batch_items_cancelled_total", "Requests whose context ended while parked in the batcher.", labelBatcher),
		itemsParked:    desc("batch_items_parked", "Requests parked in the batcher now.", labelBatcher),
		itemsRetried:   desc("batch_items_retried_total", "Requests a flush failed with a marked error that rejoined the batcher after a backoff.", labelBatcher),
		flushTime:      desc("batch_flush_duration_seconds", "Duration of the batcher's flush calls.", labelBatcher),
		parkTime:       desc("batch_park_duration_seconds", "Time from Add until the request's flush ended, or its context did.", labelBatcher),
	}
	for _, b := range statepipe.BucketBounds() {
		c.bounds = append(c.bounds, b.Seconds())
	}
	return c
}

// Describe sends the descriptor of every metric family.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	if c.err != nil {
		ch <- prometheus.NewInvalidDesc(c.err)
		return
	}
	for _, d := range c.d.all() {
		ch <- d
	}
}

// Collect takes one snapshot of the statistics and sends every metric.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(c.err), c.err)
		return
	}
	s := c.stats()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := emitter{ch: ch}
	d := &c.d

	// Stats derives Submitted from the published Completed and Failed,
	// which trail by up to 64 requests per worker, and the live InFlight:
	// while requests finish between publications it can dip. A counter
	// must not, or rate() sees a reset.
	e.counter(d.submitted, c.rising(series{d.submitted, ""}, float64(s.Submitted)))
	e.counter(d.completed, float64(s.Completed))
	e.counter(d.failed, float64(s.Failed))
	e.gauge(d.inFlight, float64(s.InFlight))
	e.gauge(d.queued, float64(s.Queued))
	e.gauge(d.running, float64(s.Running))
	e.gauge(d.parked, float64(s.Parked))
	buffered := 0
	for _, g := range s.Groups {
		buffered += g.Buffered
	}
	e.gauge(d.buffered, float64(buffered))
	e.gauge(d.retrying, float64(s.Retrying))
	e.gauge(d.keys, float64(s.Keys.Keys))
	e.gauge(d.keysWaiting, float64(s.Keys.Waiting))
	e.gauge(d.keyWaiters, float64(s.Keys.Requests))
	e.gauge(d.keyLongestWait, s.Keys.LongestWait.Seconds())
	e.gauge(d.workers, float64(s.Workers))
	if s.Scaling.Max > 0 {
		for r := statepipe.ScaleUp; r <= statepipe.ScaleDown; r++ {
			e.counter(d.workerChanges, float64(s.Scaling.Changes[r]), r.String())
		}
	}
	e.gauge(d.groups, float64(len(s.Groups)))
	c.summary(&e, d.queueTime, "", timingOf(s.QueueTime))
	c.summary(&e, d.runTime, "", timingOf(s.RunTime))

	for _, st := range mergeStages(s.Stages) {
		e.counter(d.stageRuns, float64(st.Runs), st.Name)
		e.counter(d.stageErrors, float64(st.Errors), st.Name)
		e.counter(d.stageRetries, float64(st.Retries), st.Name)
		e.histogram(d.stageLatency, c.bounds, &st.Latency, st.Name)
	}

	for _, b := range mergeBatchers(s.Batchers) {
		for r, n := range b.flushes { // every reason, zeros included
			e.counter(d.flushes, float64(n), b.name, statepipe.FlushReason(r).String())
		}
		e.counter(d.items, float64(b.items), b.name)
		e.counter(d.itemsFailed, float64(b.failed), b.name)
		e.counter(d.itemsCancelled, float64(b.cancelled), b.name)
		e.gauge(d.itemsParked, float64(b.parked), b.name)
		e.counter(d.itemsRetried, float64(b.retried), b.name)
		c.summary(&e, d.flushTime, b.name, b.flushTime)
		c.summary(&e, d.parkTime, b.name, b.parkTime)
	}
}

// series names one metric for rising: its family and its label value.
type series struct {
	desc  *prometheus.Desc
	label string
}

// rising returns v, or the highest value sent for k if that is higher,
// and remembers it. c.mu is held.
func (c *collector) rising(k series, v float64) float64 {
	if h, ok := c.high[k]; ok && h > v {
		return h
	}
	c.high[k] = v
	return v
}

// summary sends a summary with a count and a sum and no quantiles. The
// sum is rebuilt from Durations' Avg and Count: Avg is rounded down to the
// nanosecond, so the rebuilt sum can dip by less than Count nanoseconds
// when the true sum grows by less; rising keeps it from going back.
func (c *collector) summary(e *emitter, d *prometheus.Desc, label string, t timing) {
	sum := c.rising(series{d, label}, t.sumNs/1e9)
	var labels []string
	if label != "" {
		labels = []string{label}
	}
	e.send(prometheus.NewConstSummary(d, t.count, sum, nil, labels...))
}

// timing is a count and total of durations, the part of
// statepipe.Durations that adds up across batchers and over time.
type timing struct {
	count uint64
	sumNs float64
}

func timingOf(d statepipe.Durations) timing {
	return timing{count: d.Count, sumNs: float64(d.Avg) * float64(d.Count)}
}

func (t *timing) add(o timing) {
	t.count += o.count
	t.sumNs += o.sumNs
}

// emitter sends metrics; a metric that cannot be made is sent as an
// invalid metric, which fails the scrape with its error, rather than a
// panic inside the registry.
type emitter struct{ ch chan<- prometheus.Metric }

func (e *emitter) send(m prometheus.Metric, err error) {
	if err != nil {
		e.ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(err), err)
		return
	}
	e.ch <- m
}

func (e *emitter) counter(d *prometheus.Desc, v float64, labels ...string) {
	e.send(prometheus.NewConstMetric(d, prometheus.CounterValue, v, labels...))
}

func (e *emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	e.send(prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...))
}

// histogram sends h as a Prometheus histogram: the buckets become
// cumulative, the last (unbounded) one is the +Inf bucket, that is Count.
func (e *emitter) histogram(d *prometheus.Desc, bounds []float64, h *statepipe.Histogram, labels ...string) {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, le := range bounds {
		cum += h.Counts[i]
		buckets[le] = cum
	}
	e.send(prometheus.NewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets, labels...))
}

// mergeStages adds up stages that share a name, so that each name is one
// series; Stats lists each stage once, so this normally returns s.
func mergeStages(s []statepipe.StageStats) []statepipe.StageStats {
	seen := make(map[string]int, len(s))
	out := s[:0:0]
	for _, st := range s {
		i, ok := seen[st.Name]
		if !ok {
			seen[st.Name] = len(out)
			out = append(out, st)
			continue
		}
		m := &out[i]
		m.Runs += st.Runs
		m.Errors += st.Errors
		m.Retries += st.Retries
		for j, n := range st.Latency.Counts {
			m.Latency.Counts[j] += n
		}
		m.Latency.Count += st.Latency.Count
		m.Latency.Sum += st.Latency.Sum
	}
	return out
}

// batcher is what the collector exports of one batcher name.
type batcher struct {
	name                     string
	flushes                  [len(statepipe.BatchStats{}.Flushes)]uint64
	items, failed, cancelled uint64
	retried                  uint64
	parked                   int
	flushTime, parkTime      timing
}

// mergeBatchers adds up batchers that share a name (BatchName defaults to
// "batch"), so that each name is one set of series.
func mergeBatchers(s []statepipe.BatchStats) []batcher {
	seen := make(map[string]int, len(s))
	out := make([]batcher, 0, len(s))
	for _, bs := range s {
		i, ok := seen[bs.Name]
		if !ok {
			i = len(out)
			seen[bs.Name] = i
			out = append(out, batcher{name: bs.Name})
		}
		b := &out[i]
		for r, n := range bs.Flushes {
			b.flushes[r] += n
		}
		b.items += bs.Items
		b.failed += bs.Failed
		b.cancelled += bs.Cancelled
		b.retried += bs.Retries
		b.parked += bs.Parked
		b.flushTime.add(timingOf(bs.FlushTime))
		b.parkTime.add(timingOf(bs.ParkTime))
	}
	return out
}
