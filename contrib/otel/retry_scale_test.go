package otel

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
)

// retrier fails Start once for even items, and each item's first flush.
type retrier struct {
	bulk *statepipe.Batcher[int]
}

func newRetrier() *retrier {
	return &retrier{bulk: statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[int]) error {
		for i := range batch {
			if batch[i].Attempt() == 1 {
				batch[i].Err = statepipe.Retry(errors.New("429"))
			}
		}
		return nil
	}, statepipe.BatchName("bulk"), statepipe.MaxItems(4))}
}

func (m *retrier) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data%2 == 0 && r.Attempt() == 1 {
		r.Err = statepipe.Retry(errors.New("busy"))
		return r
	}
	return m.bulk.Add(r)
}

func (m *retrier) Close() {}

func TestRetriesAreCountedAndNotedOnTheSpan(t *testing.T) {
	h := newHarness(t)
	in := []int{1, 2, 3, 4, 5, 6}
	out := run(t, newRetrier(), h.obs, context.Background(), in,
		statepipe.WithRetry(statepipe.Backoff{Initial: time.Millisecond}))
	for _, r := range out {
		if r.Err != nil {
			t.Fatalf("item %d: %v", r.Data, r.Err)
		}
	}
	retries := counts(t, h.collect(t), MetricRetries, KeyStage, KeyBatcher)
	if retries["Start|"] != 3 || retries["|bulk"] != 6 {
		t.Errorf("retries %v: want 3 of stage Start and 6 of batcher bulk", retries)
	}
	spans := h.spansNamed(SpanRequest)
	if len(spans) != len(in) {
		t.Fatalf("%d request spans, want %d", len(spans), len(in))
	}
	for _, s := range spans {
		n := 0
		for _, e := range s.Events() {
			if e.Name != EventRetry {
				continue
			}
			n++
			if eventAttr(e, KeyAttempt).AsInt64() != 1 || eventAttr(e, KeyError).AsString() == "" {
				t.Errorf("retry event %v: want attempt 1 and the error", e.Attributes)
			}
		}
		if id := attr(s, KeyRequestID).AsInt64(); n < 1 || n > 2 {
			t.Errorf("request %d: %d retry events, want 1 or 2", id, n)
		}
	}
}

// sleeper waits in its stage, as a network call would: autoscaling grows.
type sleeper struct{}

func (sleeper) Start(r statepipe.Request[int]) statepipe.Request[int] {
	time.Sleep(time.Millisecond)
	return r
}
func (sleeper) Close() {}

func TestAutoscalingIsMeasured(t *testing.T) {
	h := newHarness(t)
	in := make([]int, 3000)
	run(t, sleeper{}, h.obs, context.Background(), in, statepipe.WithAutoscale(1, 16))
	data := h.collect(t)
	changes := counts(t, data, MetricWorkerChanges, KeyScaleReason)
	if changes["up"] == 0 {
		t.Errorf("worker changes %v: want steps up", changes)
	}
	if _, ok := data[MetricWorkers]; !ok {
		t.Errorf("no %s gauge", MetricWorkers)
	}
}
