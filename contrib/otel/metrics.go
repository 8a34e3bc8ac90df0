package otel

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/statepipe/statepipe"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// instruments are created once, by NewObserver.
type instruments struct {
	requests        metric.Int64Counter
	requestDuration metric.Float64Histogram
	stageRuns       metric.Int64Counter
	stageErrors     metric.Int64Counter
	stageDuration   metric.Float64Histogram
	flushes         metric.Int64Counter
	flushDuration   metric.Float64Histogram
	batchSize       metric.Int64Histogram
	retries         metric.Int64Counter
	workers         metric.Int64Gauge
	workerChanges   metric.Int64Counter
	scaleReasons    [3]attrSet // up, undo, down

	ok, failed attrSet // outcome attribute sets, built once
}

// attrSet is an attribute set ready to pass to instruments. The option
// slices are built once too: a variadic call that builds its slice on the
// spot allocates it, because the instrument is an interface and the
// compiler must assume the slice escapes.
type attrSet struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func newAttrSet(kvs ...attribute.KeyValue) attrSet {
	opt := metric.WithAttributeSet(attribute.NewSet(kvs...))
	return attrSet{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}}
}

// durationBounds suit stages of a microsecond to requests of seconds; the
// SDK's default buckets are made for milliseconds.
var durationBounds = []float64{
	1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

var sizeBounds = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}

func newInstruments(m metric.Meter) (instruments, error) {
	var in instruments
	var errs [11]error
	in.requests, errs[0] = m.Int64Counter(MetricRequests, metric.WithUnit("{request}"),
		metric.WithDescription("Requests that left the machine, by outcome."))
	in.requestDuration, errs[1] = m.Float64Histogram(MetricRequestDuration, metric.WithUnit("s"),
		metric.WithDescription("Time from Submit to leaving the machine, by outcome."),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	in.stageRuns, errs[2] = m.Int64Counter(MetricStageRuns, metric.WithUnit("{run}"),
		metric.WithDescription("Stage runs, by stage."))
	in.stageErrors, errs[3] = m.Int64Counter(MetricStageErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Stage runs that failed their request (an error or a panic), by stage."))
	in.stageDuration, errs[4] = m.Float64Histogram(MetricStageDuration, metric.WithUnit("s"),
		metric.WithDescription("Run time of a stage, by stage."),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	in.flushes, errs[5] = m.Int64Counter(MetricFlushes, metric.WithUnit("{flush}"),
		metric.WithDescription("Batch flushes, by batcher and reason."))
	in.flushDuration, errs[6] = m.Float64Histogram(MetricFlushDuration, metric.WithUnit("s"),
		metric.WithDescription("Run time of a batcher's flush function, by batcher and reason."),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	in.batchSize, errs[7] = m.Int64Histogram(MetricBatchSize, metric.WithUnit("{request}"),
		metric.WithDescription("Requests per flush, by batcher and reason."),
		metric.WithExplicitBucketBoundaries(sizeBounds...))
	in.retries, errs[8] = m.Int64Counter(MetricRetries, metric.WithUnit("{retry}"),
		metric.WithDescription("Runs of a stage, or flushes of a request, that failed with an error marked by statepipe.Retry and run again after a backoff, by stage or batcher."))
	in.workers, errs[9] = m.Int64Gauge(MetricWorkers, metric.WithUnit("{worker}"),
		metric.WithDescription("Worker goroutines, as autoscaling (statepipe.WithAutoscale) last set them."))
	in.workerChanges, errs[10] = m.Int64Counter(MetricWorkerChanges, metric.WithUnit("{change}"),
		metric.WithDescription("Changes of the worker count by autoscaling, by reason: up, undo (a step up that did not raise throughput), down."))
	for i, r := range []statepipe.ScaleReason{statepipe.ScaleUp, statepipe.ScaleUndo, statepipe.ScaleDown} {
		in.scaleReasons[i] = newAttrSet(KeyScaleReason.String(r.String()))
	}
	in.ok = newAttrSet(KeyOutcome.String("ok"))
	in.failed = newAttrSet(KeyOutcome.String("error"))
	return in, errors.Join(errs[:]...)
}

// nameAttrs are the attributes of one stage (or batcher), built on its first event.
type nameAttrs struct {
	attrSet
	kv attribute.KeyValue
}

func newNameAttrs(stage string) nameAttrs {
	kv := KeyStage.String(stage)
	return nameAttrs{attrSet: newAttrSet(kv), kv: kv}
}

type flushKey struct {
	batch  string
	reason statepipe.FlushReason
}

// flushAttrs are the attributes of one batcher and flush reason.
type flushAttrs struct {
	attrSet
	batcher, reason attribute.KeyValue
}

func newFlushAttrs(k flushKey) flushAttrs {
	b, r := KeyBatcher.String(k.batch), KeyFlushReason.String(k.reason.String())
	return flushAttrs{attrSet: newAttrSet(b, r), batcher: b, reason: r}
}

// maxCached bounds a cache: beyond it (thousands of distinct batcher
// names, say), values are built for each event instead of kept.
const maxCached = 1024

// cache keeps values built from a key, for lookups that neither lock nor
// allocate: readers load a map that is never changed, and a miss copies it.
// Keys are stage and batcher names, a small set fixed early in a run.
type cache[K comparable, V any] struct {
	m     atomic.Pointer[map[K]V]
	mu    sync.Mutex // serializes misses
	build func(K) V
}

func newCache[K comparable, V any](build func(K) V) *cache[K, V] {
	c := &cache[K, V]{build: build}
	c.m.Store(&map[K]V{})
	return c
}

func (c *cache[K, V]) get(k K) V {
	if v, ok := (*c.m.Load())[k]; ok {
		return v
	}
	return c.miss(k)
}

func (c *cache[K, V]) miss(k K) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if v, ok := old[k]; ok {
		return v
	}
	v := c.build(k)
	if len(old) >= maxCached {
		return v
	}
	m := make(map[K]V, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[k] = v
	c.m.Store(&m)
	return v
}
