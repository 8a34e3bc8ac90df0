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
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// requestSpans returns the request spans by request id, checking that
// there is one per id.
func requestSpans(t *testing.T, h *harness) map[uint64]sdktrace.ReadOnlySpan {
	t.Helper()
	byID := map[uint64]sdktrace.ReadOnlySpan{}
	for _, s := range h.spansNamed(SpanRequest) {
		id := uint64(attr(s, KeyRequestID).AsInt64())
		if _, dup := byID[id]; dup {
			t.Errorf("two request spans for request %d", id)
		}
		byID[id] = s
	}
	return byID
}

// checkClosed checks that every span started has ended and that the
// Observer keeps nothing.
func checkClosed(t *testing.T, h *harness) {
	t.Helper()
	if s, e := len(h.spans.Started()), len(h.spans.Ended()); s != e {
		t.Errorf("%d spans started, %d ended", s, e)
	}
	if n := h.obs.flights.len(); n != 0 {
		t.Errorf("%d requests still in flight in the Observer", n)
	}
}

// checkLinks checks that span links to exactly want, in order.
func checkLinks(t *testing.T, span sdktrace.ReadOnlySpan, want []trace.SpanContext) {
	t.Helper()
	links := span.Links()
	ok := len(links) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = links[i].SpanContext.Equal(want[i])
	}
	if !ok {
		var got []trace.SpanContext
		for _, l := range links {
			got = append(got, l.SpanContext)
		}
		t.Errorf("%s links %v, want %v", span.Name(), got, want)
	}
}

func TestRoutedMachine(t *testing.T) {
	h := newHarness(t)
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "submitter")
	tap := newTap(h.obs)
	m := newRouted()
	out := run(t, m, tap, ctx, routedInput)
	parent.End()
	if len(out) != len(routedInput) {
		t.Fatalf("%d results, want %d", len(out), len(routedInput))
	}
	checkClosed(t, h)

	// Every request was started and done exactly once, first and last:
	// with an Observer every request is timed, not one in 8.
	if len(tap.kinds) != len(routedInput) {
		t.Errorf("events for %d requests, want %d", len(tap.kinds), len(routedInput))
	}
	for id, kinds := range tap.kinds {
		if kinds[0] != statepipe.RequestStarted || kinds[len(kinds)-1] != statepipe.RequestDone ||
			slices.Index(kinds[1:], statepipe.RequestStarted) >= 0 || slices.Index(kinds[:len(kinds)-1], statepipe.RequestDone) >= 0 {
			t.Errorf("request %d: events %v", id, kinds)
		}
	}

	spans := requestSpans(t, h)
	if len(spans) != len(routedInput) {
		t.Fatalf("%d request spans, want %d", len(spans), len(routedInput))
	}
	psc := parent.SpanContext()
	index := inputOf(spans)
	for id, s := range spans {
		v := routedInput[index[id]]
		if s.Parent().SpanID() != psc.SpanID() || s.SpanContext().TraceID() != psc.TraceID() {
			t.Errorf("request %d: parent %v in trace %v, want the submitter's span %v", v, s.Parent().SpanID(), s.SpanContext().TraceID(), psc.SpanID())
		}
		if attr(s, KeyGroupID).AsInt64() != int64(tap.groups[id]) {
			t.Errorf("request %d: group attribute %v", v, attr(s, KeyGroupID))
		}
		var want []string
		var wantErr string
		switch {
		case v < 0:
			want, wantErr = []string{"Start", "exception"}, "negative"
		case v%5 == 0:
			want, wantErr = []string{"Start", "Boom", "exception"}, "panic in stage Boom"
		case v == 14:
			want, wantErr = []string{"Start", "Save", EventParked, EventResumed, "exception"}, "rejected"
		case v%2 == 0:
			want = []string{"Start", "Save", EventParked, EventResumed, "Finish"}
		default:
			want = []string{"Start", "Finish"}
		}
		if got := eventNames(s); !slices.Equal(got, want) {
			t.Errorf("request %d: events %v, want %v", v, got, want)
		}
		for _, e := range s.Events() {
			if e.Time.Before(s.StartTime()) || e.Time.After(s.EndTime()) {
				t.Errorf("request %d: event %s at %v, outside the span %v..%v", v, e.Name, e.Time, s.StartTime(), s.EndTime())
			}
			if e.Name == "Start" && v >= 0 && eventAttr(e, KeyError).Type() != attribute.INVALID {
				t.Errorf("request %d: Start event with an error", v)
			}
			if e.Name == EventParked || e.Name == EventResumed {
				if b := eventAttr(e, KeyBatcher).AsString(); b != "store" {
					t.Errorf("request %d: %s event batcher %q", v, e.Name, b)
				}
			}
		}
		if wantErr == "" {
			if s.Status().Code != codes.Unset {
				t.Errorf("request %d: status %v", v, s.Status())
			}
			continue
		}
		if s.Status().Code != codes.Error || !strings.Contains(s.Status().Description, wantErr) {
			t.Errorf("request %d: status %v, want an error with %q", v, s.Status(), wantErr)
		}
		exc := s.Events()[len(s.Events())-1]
		typ := eventAttr(exc, "exception.type").AsString()
		stack := eventAttr(exc, "exception.stacktrace").AsString()
		if v%5 == 0 {
			// The stack is the panicking stage's, not the Observer's.
			if typ != "*statepipe.PanicError" || !strings.Contains(stack, "Boom") {
				t.Errorf("panic of request %d: exception type %q, stack %q", v, typ, stack)
			}
		} else if stack != "" {
			t.Errorf("request %d: a stack for an error that is not a panic", v)
		}
	}

	// Flush spans link to exactly their members' request spans, and each
	// member's span links back.
	flushes := h.spansNamed(SpanFlush)
	if len(flushes) != len(tap.members) {
		t.Fatalf("%d flush spans, %d flush events", len(flushes), len(tap.members))
	}
	memberOf := map[trace.SpanID]trace.SpanID{} // request span -> its flush span
	for _, f := range flushes {
		if f.Parent().IsValid() {
			t.Errorf("flush span has a parent %v; want a root", f.Parent())
		}
		if attr(f, KeyBatcher).AsString() != "store" || attr(f, KeyBatchSize).AsInt64() != int64(len(f.Links())) {
			t.Errorf("flush span attributes %v, %d links", f.Attributes(), len(f.Links()))
		}
		for _, l := range f.Links() {
			if _, dup := memberOf[l.SpanContext.SpanID()]; dup {
				t.Errorf("request span %v linked from two flushes", l.SpanContext.SpanID())
			}
			memberOf[l.SpanContext.SpanID()] = f.SpanContext().SpanID()
		}
	}
	var flushed []int
	for _, members := range tap.members {
		var want []trace.SpanContext
		for _, id := range members {
			want = append(want, spans[id].SpanContext())
			flushed = append(flushed, routedInput[index[id]])
		}
		f, ok := memberOf[want[0].SpanID()]
		if !ok {
			t.Fatalf("no flush span links to member %d", members[0])
		}
		for _, fs := range flushes {
			if fs.SpanContext().SpanID() == f {
				checkLinks(t, fs, want)
			}
		}
		for _, id := range members {
			if l := spans[id].Links(); len(l) != 1 || l[0].SpanContext.SpanID() != f {
				t.Errorf("member %d links %v, want one to its flush %v", id, l, f)
			}
		}
	}
	slices.Sort(flushed)
	if !slices.Equal(flushed, []int{2, 4, 6, 8, 12, 14}) {
		t.Errorf("flushed %v", flushed)
	}

	// Metrics.
	data := h.collect(t)
	wantRuns := map[string]int64{"Start": 14, "Boom": 3, "Save": 6, "Finish": 8}
	if got := counts(t, data, MetricStageRuns, KeyStage); !maps.Equal(got, wantRuns) {
		t.Errorf("stage runs %v, want %v", got, wantRuns)
	}
	if got, want := counts(t, data, MetricStageErrors, KeyStage), map[string]int64{"Start": 2, "Boom": 3}; !maps.Equal(got, want) {
		t.Errorf("stage errors %v, want %v", got, want)
	}
	if n, _ := histCounts[float64](t, data, MetricStageDuration, KeyStage); !maps.Equal(n, map[string]uint64{"Start": 14, "Boom": 3, "Save": 6, "Finish": 8}) {
		t.Errorf("stage duration counts %v", n)
	}
	wantReq := map[string]int64{"ok": 8, "error": 6}
	if got := counts(t, data, MetricRequests, KeyOutcome); !maps.Equal(got, wantReq) {
		t.Errorf("requests %v, want %v", got, wantReq)
	}
	if n, _ := histCounts[float64](t, data, MetricRequestDuration, KeyOutcome); n["ok"] != 8 || n["error"] != 6 {
		t.Errorf("request duration counts %v", n)
	}
	// Flushes by reason agree with the flush spans and the batcher's own
	// statistics.
	spanReasons := map[string]int64{}
	for _, f := range flushes {
		spanReasons["store|"+attr(f, KeyFlushReason).AsString()]++
	}
	statReasons := map[string]int64{}
	for r, n := range m.store.Stats().Flushes {
		if n > 0 {
			statReasons["store|"+statepipe.FlushReason(r).String()] = int64(n)
		}
	}
	if got := counts(t, data, MetricFlushes, KeyBatcher, KeyFlushReason); !maps.Equal(got, spanReasons) || !maps.Equal(got, statReasons) {
		t.Errorf("flushes %v; flush spans %v; batcher stats %v", got, spanReasons, statReasons)
	}
	total := int64(0)
	n, sum := histCounts[int64](t, data, MetricBatchSize, KeyBatcher)
	for _, v := range sum {
		total += v
	}
	if total != 6 || n["store"] != uint64(len(flushes)) {
		t.Errorf("batch sizes: %d flushes adding up to %d requests; want %d adding up to 6", n["store"], total, len(flushes))
	}
	if n, _ := histCounts[float64](t, data, MetricFlushDuration, KeyBatcher); n["store"] != uint64(len(flushes)) {
		t.Errorf("flush durations: %v", n)
	}
}

func TestStageSpans(t *testing.T) {
	h := newHarness(t, WithStageSpans())
	out := run(t, newRouted(), h.obs, context.Background(), routedInput)
	if len(out) != len(routedInput) {
		t.Fatalf("%d results", len(out))
	}
	checkClosed(t, h)
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range h.spans.Ended() {
		if s.Name() != SpanRequest && s.Name() != SpanFlush {
			children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		}
	}
	spans := requestSpans(t, h)
	index := inputOf(spans)
	for id, s := range spans {
		v := routedInput[index[id]]
		if s.Parent().IsValid() {
			t.Errorf("request %d: parent %v, want a root span", v, s.Parent())
		}
		kids := children[s.SpanContext().SpanID()]
		slices.SortFunc(kids, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
		var names []string
		for _, k := range kids {
			names = append(names, k.Name())
			if attr(k, KeyStage).AsString() != k.Name() {
				t.Errorf("stage span %s: stage attribute %v", k.Name(), attr(k, KeyStage))
			}
			if k.StartTime().Before(s.StartTime()) || k.EndTime().After(s.EndTime()) {
				t.Errorf("request %d: stage span %s outside its request span", v, k.Name())
			}
			failed := k.Name() == "Boom" || v < 0
			if (k.Status().Code == codes.Error) != failed {
				t.Errorf("request %d: stage span %s status %v", v, k.Name(), k.Status())
			}
		}
		var want []string
		switch {
		case v < 0:
			want = []string{"Start"}
		case v%5 == 0:
			want = []string{"Start", "Boom"}
		case v == 14:
			want = []string{"Start", "Save"}
		case v%2 == 0:
			want = []string{"Start", "Save", "Finish"}
		default:
			want = []string{"Start", "Finish"}
		}
		if !slices.Equal(names, want) {
			t.Errorf("request %d: stage spans %v, want %v", v, names, want)
		}
		for _, e := range s.Events() {
			if e.Name != EventParked && e.Name != EventResumed && e.Name != "exception" {
				t.Errorf("request %d: event %s on the request span with stage spans on", v, e.Name)
			}
		}
	}
}

// barrier parks n requests at once in a batcher of n, so that exactly one
// flush, for size, serves them all: no worker is idle before the last one
// parks, so the batch cannot flush early.
type barrier struct {
	arrived sync.WaitGroup
	batch   *statepipe.Batcher[int]
}

func newBarrier(n int, flush func() error) *barrier {
	b := &barrier{}
	b.arrived.Add(n)
	b.batch = statepipe.NewBatcher(func(context.Context, []statepipe.Request[int]) error { return flush() },
		statepipe.MaxItems(n), statepipe.BatchName("bulk"))
	return b
}

func (b *barrier) Start(r statepipe.Request[int]) statepipe.Request[int] {
	b.arrived.Done()
	b.arrived.Wait()
	return b.batch.Add(r)
}

func (b *barrier) Close() {}

func TestFlushSpan(t *testing.T) {
	errBulk := errors.New("bulk call failed")
	for _, tc := range []struct {
		name    string
		fail    func() error
		wantErr string // in the flush's and the members' statuses
		panics  bool
	}{
		{"ok", func() error { return nil }, "", false},
		{"error", func() error { return errBulk }, "bulk call failed", false},
		{"panic", func() error { panic("bulk boom") }, "bulk boom", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 4
			h := newHarness(t)
			tap := newTap(h.obs)
			out := run(t, newBarrier(n, tc.fail), tap, context.Background(), []int{1, 2, 3, 4}, statepipe.WithWorkers(n))
			if len(out) != n {
				t.Fatalf("%d results", len(out))
			}
			checkClosed(t, h)
			flushes := h.spansNamed(SpanFlush)
			if len(flushes) != 1 || len(tap.members) != 1 {
				t.Fatalf("%d flush spans, %d flushes", len(flushes), len(tap.members))
			}
			f := flushes[0]
			if r := attr(f, KeyFlushReason).AsString(); r != "size" || attr(f, KeyBatchSize).AsInt64() != n || attr(f, KeyBatcher).AsString() != "bulk" {
				t.Errorf("flush attributes %v", f.Attributes())
			}
			spans := requestSpans(t, h)
			var want []trace.SpanContext
			for _, id := range tap.members[0] {
				want = append(want, spans[id].SpanContext())
			}
			if len(want) != n {
				t.Errorf("%d members, want %d", len(want), n)
			}
			checkLinks(t, f, want)
			for _, s := range spans {
				if s.Parent().IsValid() {
					t.Errorf("request span with parent %v; submitted without one", s.Parent())
				}
				if !f.StartTime().Before(s.EndTime()) || f.EndTime().After(s.EndTime()) {
					t.Errorf("flush %v..%v not within member %v..%v", f.StartTime(), f.EndTime(), s.StartTime(), s.EndTime())
				}
				if tc.wantErr == "" {
					if s.Status().Code != codes.Unset {
						t.Errorf("member status %v", s.Status())
					}
					continue
				}
				if s.Status().Code != codes.Error || !strings.Contains(s.Status().Description, tc.wantErr) {
					t.Errorf("member status %v, want an error with %q", s.Status(), tc.wantErr)
				}
				ev := s.Events()
				if res := ev[len(ev)-2]; res.Name != EventResumed || !strings.Contains(eventAttr(res, KeyError).AsString(), tc.wantErr) {
					t.Errorf("member events %v: want resumed with the error, then the exception", eventNames(s))
				}
			}
			if tc.wantErr == "" {
				if f.Status().Code != codes.Unset || len(f.Events()) != 0 {
					t.Errorf("flush status %v, events %v", f.Status(), eventNames(f))
				}
				return
			}
			if f.Status().Code != codes.Error || !strings.Contains(f.Status().Description, tc.wantErr) {
				t.Errorf("flush status %v, want an error with %q", f.Status(), tc.wantErr)
			}
			exc := f.Events()[0]
			stack := eventAttr(exc, "exception.stacktrace").AsString()
			if tc.panics != strings.Contains(stack, "newBarrier") {
				t.Errorf("flush exception stack %q; want the flush function's stack for a panic only", stack)
			}
		})
	}
}

type tenantKey struct{}

func TestRequestAttributes(t *testing.T) {
	h := newHarness(t, WithRequestAttributes(func(ctx context.Context) []attribute.KeyValue {
		if v, ok := ctx.Value(tenantKey{}).(string); ok {
			return []attribute.KeyValue{attribute.String("tenant", v)}
		}
		return nil
	}))
	ctx := context.WithValue(context.Background(), tenantKey{}, "acme")
	run(t, newRouted(), h.obs, ctx, []int{1, 3})
	for _, s := range h.spansNamed(SpanRequest) {
		if v := attr(s, "tenant").AsString(); v != "acme" {
			t.Errorf("tenant %q", v)
		}
	}
}

func TestNewObserverOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string // in the error; "" for none
	}{
		{"defaults", nil, ""},
		{"nil option", []Option{nil}, ""},
		{"stage spans", []Option{WithStageSpans()}, ""},
		{"nil tracer provider", []Option{WithTracerProvider(nil)}, "WithTracerProvider: nil provider"},
		{"nil meter provider", []Option{WithMeterProvider(nil)}, "WithMeterProvider: nil provider"},
		{"nil attributes", []Option{WithRequestAttributes(nil), WithMeterProvider(nil)}, "WithRequestAttributes: nil function; WithMeterProvider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs, err := NewObserver(tc.opts...)
			if tc.want == "" {
				if err != nil || obs == nil {
					t.Fatalf("NewObserver: %v", err)
				}
				return
			}
			if !errors.Is(err, statepipe.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewObserver: %v, want %v with %q", err, statepipe.ErrInvalidOption, tc.want)
			}
		})
	}
}
