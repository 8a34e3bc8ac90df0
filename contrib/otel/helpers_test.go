package otel

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/statepipe/statepipe"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// harness is an Observer recording to in-memory SDK exporters.
type harness struct {
	obs    *Observer
	spans  *tracetest.SpanRecorder // synchronous: a span is in Ended() when End returns
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
}

func newHarness(t testing.TB, opts ...Option) *harness {
	t.Helper()
	h := &harness{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans),
		sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	obs, err := NewObserver(append([]Option{WithTracerProvider(h.tp), WithMeterProvider(mp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.obs = obs
	return h
}

// collect reads the metrics: name -> the data.
func (h *harness) collect(t testing.TB) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// counts returns a counter's values by the value of key ("a|b" for two keys).
func counts(t testing.TB, data map[string]metricdata.Aggregation, name string, keys ...attribute.Key) map[string]int64 {
	t.Helper()
	sum, ok := data[name].(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("metric %s: %T, want an int64 sum", name, data[name])
	}
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		out[label(dp.Attributes, keys)] += dp.Value
	}
	return out
}

func label(set attribute.Set, keys []attribute.Key) string {
	var parts []string
	for _, k := range keys {
		v, _ := set.Value(k)
		parts = append(parts, v.Emit())
	}
	return strings.Join(parts, "|")
}

// histCounts returns a histogram's count and sum by the value of key.
func histCounts[N int64 | float64](t testing.TB, data map[string]metricdata.Aggregation, name string, keys ...attribute.Key) (n map[string]uint64, sum map[string]N) {
	t.Helper()
	h, ok := data[name].(metricdata.Histogram[N])
	if !ok {
		t.Fatalf("metric %s: %T", name, data[name])
	}
	n, sum = map[string]uint64{}, map[string]N{}
	for _, dp := range h.DataPoints {
		l := label(dp.Attributes, keys)
		n[l] += dp.Count
		sum[l] += dp.Sum
	}
	return n, sum
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func eventAttr(e sdktrace.Event, k attribute.Key) attribute.Value {
	for _, kv := range e.Attributes {
		if kv.Key == k {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func eventNames(s sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, e := range s.Events() {
		names = append(names, e.Name)
	}
	return names
}

// spansNamed returns the ended spans named name.
func (h *harness) spansNamed(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// tap records the raw events next to the Observer under test: each
// request's kinds in order, and each flush's members.
type tap struct {
	next statepipe.Observer

	mu      sync.Mutex
	kinds   map[uint64][]statepipe.EventKind
	groups  map[uint64]uint64 // request id -> group id
	members [][]uint64
}

func newTap(next statepipe.Observer) *tap {
	return &tap{next: next, kinds: map[uint64][]statepipe.EventKind{}, groups: map[uint64]uint64{}}
}

// inputOf maps each request id of spans to its index in the input, for
// requests submitted one after another by one goroutine: ids rise in
// submission order.
func inputOf[S any](spans map[uint64]S) map[uint64]int {
	index := map[uint64]int{}
	for i, id := range slices.Sorted(maps.Keys(spans)) {
		index[id] = i
	}
	return index
}

// FlushStarting forwards to the observer tapped, as a wrapper must for
// flush spans to be the parents of what flush does.
func (t *tap) FlushStarting(ctx context.Context, batch string, reason statepipe.FlushReason, members []uint64) context.Context {
	if fo, ok := t.next.(statepipe.FlushObserver); ok {
		return fo.FlushStarting(ctx, batch, reason, members)
	}
	return ctx
}

func (t *tap) Observe(e statepipe.Event) {
	t.mu.Lock()
	if e.Kind == statepipe.BatchFlushed {
		t.members = append(t.members, slices.Clone(e.Members))
	} else {
		t.kinds[e.Request] = append(t.kinds[e.Request], e.Kind)
		t.groups[e.Request] = e.Group
	}
	t.mu.Unlock()
	t.next.Observe(e)
}

// routed is a machine with every kind of route: negative numbers fail in
// Start, multiples of 5 panic in Boom, other even numbers park in the
// "store" batcher (which rejects 14) and then run Finish, and odd numbers
// go straight to Finish.
type routed struct {
	store              *statepipe.Batcher[int]
	save, finish, boom statepipe.Stage[int]
}

var (
	errNegative = errors.New("negative")
	errRejected = errors.New("rejected by the store")
)

func newRouted(opts ...statepipe.BatchOption) *routed {
	m := &routed{}
	m.save, m.finish, m.boom = m.Save, m.Finish, m.Boom
	m.store = statepipe.NewBatcher(m.flush, append([]statepipe.BatchOption{statepipe.BatchName("store")}, opts...)...)
	return m
}

func (m *routed) Start(r statepipe.Request[int]) statepipe.Request[int] {
	switch {
	case r.Data < 0:
		r.Err = errNegative
	case r.Data%5 == 0:
		r.Next = m.boom
	case r.Data%2 == 0:
		r.Next = m.save
	default:
		r.Next = m.finish
	}
	return r
}

func (m *routed) Save(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = m.finish
	return m.store.Add(r)
}

func (m *routed) Finish(r statepipe.Request[int]) statepipe.Request[int] {
	r.Data *= 10
	return r
}

func (m *routed) Boom(r statepipe.Request[int]) statepipe.Request[int] {
	panic("boom")
}

func (m *routed) flush(_ context.Context, batch []statepipe.Request[int]) error {
	for i := range batch {
		if batch[i].Data == 14 {
			batch[i].Err = errRejected
		}
	}
	return nil
}

func (m *routed) Close() {}

// routedInput and what it does: see routed.
var routedInput = []int{-2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15}

// run submits in under ctx to a Pipelines observed by obs, collects every
// result and closes.
func run(t testing.TB, sm statepipe.StateMachine[int], obs statepipe.Observer, ctx context.Context, in []int, opts ...statepipe.Option) []statepipe.Request[int] {
	t.Helper()
	p, err := statepipe.New(sm, append([]statepipe.Option{statepipe.WithObserver(obs)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	go func() {
		defer g.Close()
		for _, v := range in {
			if err := g.Submit(ctx, v); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var out []statepipe.Request[int]
	for r := range g.Out() {
		out = append(out, r)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}
