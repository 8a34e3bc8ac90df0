package prometheus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/statepipe/statepipe"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
)

// flaky fails every odd item's Start once with a marked error, and every
// item whose n is a multiple of 3 once in its flush.
type flaky struct {
	bulk *statepipe.Batcher[int]
	hold chan struct{} // item -1 waits for it in Start
}

func newFlaky() *flaky {
	f := &flaky{hold: make(chan struct{})}
	f.bulk = statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[int]) error {
		for i := range batch {
			if batch[i].Data%3 == 0 && batch[i].Attempt() == 1 {
				batch[i].Err = statepipe.Retry(errors.New("429"))
			}
		}
		return nil
	}, statepipe.BatchName("bulk"), statepipe.MaxItems(8))
	return f
}

func (f *flaky) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data < 0 {
		<-f.hold
		return r
	}
	if r.Data%2 == 1 && r.Attempt() == 1 {
		r.Err = statepipe.Retry(errors.New("busy"))
		return r
	}
	return f.bulk.Add(r)
}

func (f *flaky) Close() {}

func TestCollectorExportsRetriesAndKeys(t *testing.T) {
	f := newFlaky()
	p, err := statepipe.New[int](f, statepipe.WithWorkers(4),
		statepipe.WithKey(func(n int) int { return max(n, -1) }), // the negative ones share a key
		statepipe.WithRetry(statepipe.Backoff{Initial: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(spprom.NewCollector(p))

	// Two requests of one key: the second waits for the first, held.
	g := p.NewGroup()
	for _, n := range []int{-1, -2} {
		if err := g.Submit(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return p.Stats().Keys.Requests == 1 })
	c := gauges(t, reg)
	if c["statepipe_keys"] != 1 || c["statepipe_keys_waiting"] != 1 || c["statepipe_key_waiting_requests"] != 1 {
		t.Errorf("key gauges %v, %v, %v: want 1, 1, 1", c["statepipe_keys"], c["statepipe_keys_waiting"], c["statepipe_key_waiting_requests"])
	}
	close(f.hold)
	<-g.Out()
	<-g.Out()

	const n = 30
	for i := range n {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	for r := range g.Out() {
		if r.Err != nil {
			t.Errorf("item %d: %v", r.Data, r.Err)
		}
	}
	c = counters(t, reg)
	if got := c[`statepipe_stage_retries_total{stage="Start"}`]; got != n/2 {
		t.Errorf("stage retries %v, want %d", got, n/2)
	}
	if got := c[`statepipe_batch_items_retried_total{batcher="bulk"}`]; got != n/3 {
		t.Errorf("batch retries %v, want %d", got, n/3)
	}
	if c := gauges(t, reg); c["statepipe_requests_retrying"] != 0 || c["statepipe_keys"] != 0 {
		t.Errorf("after the load: %v retrying, %v keys; want 0", c["statepipe_requests_retrying"], c["statepipe_keys"])
	}
}

// gauges returns every gauge, keyed by name, leaving out labels.
func gauges(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range gather(t, g) {
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				out[name] += g.GetValue()
			}
		}
	}
	return out
}

// waitFor polls cond for up to ten seconds: the engine's own state, not a
// timing, decides.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
