package otel

import (
	"context"
	"testing"

	"github.com/statepipe/statepipe"
)

// bulkCall is a machine whose flush starts a span of its own, as a
// traced bulk client would, under the context flush is given.
type bulkCall struct {
	barrier
	h *harness
}

func newBulkCall(h *harness, n int) *bulkCall {
	m := &bulkCall{h: h}
	m.arrived.Add(n)
	m.batch = statepipe.NewBatcher(func(ctx context.Context, _ []statepipe.Request[int]) error {
		_, span := h.tp.Tracer("bulk-client").Start(ctx, "bulk.insert")
		span.End()
		return nil
	}, statepipe.MaxItems(n), statepipe.BatchName("bulk"))
	return m
}

// The flush span is the parent of what flush does: FlushStarting starts it
// before the call and hands flush its context.
func TestFlushSpanIsParentOfTheBulkCall(t *testing.T) {
	h := newHarness(t)
	const n = 4
	run(t, newBulkCall(h, n), h.obs, context.Background(), []int{1, 2, 3, 4}, statepipe.WithWorkers(n))
	flushes, calls := h.spansNamed(SpanFlush), h.spansNamed("bulk.insert")
	if len(flushes) != 1 || len(calls) != 1 {
		t.Fatalf("%d flush spans and %d bulk calls, want 1 and 1", len(flushes), len(calls))
	}
	if got, want := calls[0].Parent().SpanID(), flushes[0].SpanContext().SpanID(); got != want {
		t.Errorf("bulk call's parent %v, want the flush span %v", got, want)
	}
	if f := flushes[0]; f.StartTime().After(calls[0].StartTime()) || f.EndTime().Before(calls[0].EndTime()) {
		t.Error("the flush span does not cover the bulk call")
	}
	if len(flushes[0].Links()) != n {
		t.Errorf("flush span has %d links, want %d", len(flushes[0].Links()), n)
	}
}

// opaque wraps an Observer without forwarding FlushStarting: flush spans
// are then made when the flush ends, back-dated, still linked.
type opaque struct{ next statepipe.Observer }

func (o opaque) Observe(e statepipe.Event) { o.next.Observe(e) }

func TestFlushSpanWithoutFlushStarting(t *testing.T) {
	h := newHarness(t)
	const n = 4
	run(t, newBarrier(n, func() error { return nil }), opaque{h.obs}, context.Background(), []int{1, 2, 3, 4}, statepipe.WithWorkers(n))
	flushes := h.spansNamed(SpanFlush)
	if len(flushes) != 1 || len(flushes[0].Links()) != n {
		t.Fatalf("%d flush spans (links: %v), want 1 with %d links", len(flushes), flushes, n)
	}
	checkClosed(t, h)
}
