package statepipe

import (
	"fmt"
	"testing"
)

// Autoscaling against fixed worker counts, in the same run (issue
// "Autoscaling"): W3 with per-item service calls, where the right count is
// the calls the service takes at once, and W2, CPU-bound, where it is the
// cores.

// w3PerItemItems keeps a per-item run short: each item is a 2ms call.
const w3PerItemItems = 5_000

// limitedService is W3's service that takes at most w3Calls() calls at
// once, as a real one would: more workers than that only queue for it.
type limitedService struct {
	bulkService
	slots chan struct{}
}

func newLimitedService() *limitedService {
	return &limitedService{slots: make(chan struct{}, w3Calls())}
}

func (s *limitedService) enrich(n int) {
	s.slots <- struct{}{}
	defer func() { <-s.slots }()
	s.bulkService.enrich(n)
}

// w3PerItemMachine calls the service once per item, in its stage.
type w3PerItemMachine struct{ svc *limitedService }

func (m *w3PerItemMachine) Start(r Request[item]) Request[item] {
	r.Data = validateItem(r.Data)
	m.svc.enrich(1)
	r.Data.n++
	return r
}
func (m *w3PerItemMachine) Close() {}

func BenchmarkW3PerItemAutoscale(b *testing.B) {
	run := func(b *testing.B, opt Option) {
		svc := newLimitedService()
		p, err := New[item](&w3PerItemMachine{svc: svc}, opt)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		perItem(b, w3PerItemItems, func() { submitAndCheckW3(b, p, w3PerItemItems) })
		b.ReportMetric(float64(w3PerItemItems)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
		b.ReportMetric(float64(p.Stats().Workers), "workers")
	}
	for _, n := range []int{2, 8, w3Calls(), 2 * w3Calls(), 64} {
		b.Run(fmt.Sprintf("fixed-%d", n), func(b *testing.B) { run(b, WithWorkers(n)) })
	}
	b.Run("autoscale-2-64", func(b *testing.B) { run(b, WithAutoscale(2, 64)) })
}

func BenchmarkW2Autoscale(b *testing.B) {
	burnLoops()
	run := func(b *testing.B, opts ...Option) {
		p, err := New[item](newW2Machine(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		benchStatepipeW1With(b, p, w2Items)
		reportIdeal(b)
		b.ReportMetric(float64(p.Stats().Workers), "workers")
	}
	b.Run("fixed-default", func(b *testing.B) { run(b) }) // P x 4 stages
	b.Run("autoscale-1-64", func(b *testing.B) { run(b, WithAutoscale(1, 64)) })
}
