package statepipe

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// --- W1 floor: the limit design running the same state machine ---------

// BenchmarkW1/limit-sm is limit's design (P goroutines, one input and one
// output channel of 256) running the W1 state machine itself: the cost of
// the Stage signature, a Request in and out of each method-value call,
// without any engine. The engine's own overhead is statepipe minus this.
func limitStateMachine(items int, sm StateMachine[item]) {
	in, out := make(chan Request[item], 256), make(chan Request[item], 256)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for r := range in {
				for r.Next != nil && r.Ctx.Err() == nil {
					stage := r.Next
					r.Next = nil
					r = stage(r)
				}
				out <- r
			}
		})
	}
	go func() {
		ctx, start := context.Background(), Stage[item](sm.Start)
		for range items {
			in <- Request[item]{Ctx: ctx, Next: start}
		}
		close(in)
		wg.Wait()
		close(out)
	}()
	for r := range out {
		if r.Data.n != 4 {
			panic("limit-sm baseline lost a stage")
		}
	}
}

// --- W2: CPU-bound stages ------------------------------------------------

const w2Items = 20_000

// burnLoops is calibrated so that burn takes about 20µs.
var burnLoops = sync.OnceValue(func() int {
	const trial = 1 << 20
	start := time.Now()
	burn(trial)
	return int(float64(trial) * float64(20*time.Microsecond) / float64(time.Since(start)))
})

var burnSink atomic.Uint64

// burn runs n rounds of xorshift; the result is kept so it is not elided.
func burn(n int) {
	x := uint64(88172645463325252)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	burnSink.Store(x)
}

func burnStage(it item) item { burn(burnLoops()); it.n++; return it }

type w2Machine struct{ b, c, d Stage[item] }

func newW2Machine() *w2Machine {
	m := &w2Machine{}
	m.b, m.c, m.d = m.B, m.C, m.D
	return m
}

func (m *w2Machine) Start(r Request[item]) Request[item] {
	r.Data = burnStage(r.Data)
	r.Next = m.b
	return r
}
func (m *w2Machine) B(r Request[item]) Request[item] {
	r.Data = burnStage(r.Data)
	r.Next = m.c
	return r
}
func (m *w2Machine) C(r Request[item]) Request[item] {
	r.Data = burnStage(r.Data)
	r.Next = m.d
	return r
}
func (m *w2Machine) D(r Request[item]) Request[item] { r.Data = burnStage(r.Data); return r }
func (m *w2Machine) Close()                          {}

func BenchmarkW2(b *testing.B) {
	burnLoops()
	stages := []func(item) item{burnStage, burnStage, burnStage, burnStage}
	b.Run("statepipe", func(b *testing.B) {
		p, err := New[item](newW2Machine())
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		benchStatepipeW1With(b, p, w2Items)
		reportIdeal(b)
	})
	b.Run("limit", func(b *testing.B) {
		perItem(b, w2Items, func() { limitPipeline(w2Items, stages) })
		reportIdeal(b)
	})
	b.Run("classic", func(b *testing.B) {
		perItem(b, w2Items, func() { classicPipeline(w2Items, stages) })
		reportIdeal(b)
	})
}

// reportIdeal reports the W2 ideal, 4 x burn / P per item, measured now.
func reportIdeal(b *testing.B) {
	start := time.Now()
	const n = 200
	for range n {
		burn(burnLoops())
	}
	one := float64(time.Since(start).Nanoseconds()) / n
	b.ReportMetric(4*one/float64(runtime.GOMAXPROCS(0)), "ideal-ns/item")
}

// --- W3: a remote service with a bulk API ----------------------------------

const (
	w3Items    = 50_000
	w3MaxBatch = 500
)

// bulkService is the fake remote service of W3: a call costs 2ms plus 2µs
// per item, and takes up to 500 items.
type bulkService struct{ calls atomic.Int64 }

func (s *bulkService) enrich(n int) {
	if n > w3MaxBatch {
		panic("bulk call over the service's limit")
	}
	s.calls.Add(1)
	time.Sleep(2*time.Millisecond + time.Duration(n)*2*time.Microsecond)
}

func validateItem(it item) item { it.n++; return it }

type w3Machine struct {
	svc    *bulkService
	enrich *Batcher[item]
}

func newW3Machine(svc *bulkService) *w3Machine {
	m := &w3Machine{svc: svc}
	m.enrich = NewBatcher(func(_ context.Context, batch []Request[item]) error {
		svc.enrich(len(batch))
		for i := range batch {
			batch[i].Data.n++
		}
		return nil
	}, MaxItems(w3MaxBatch), MaxWait(5*time.Millisecond), MaxFlushes(w3Calls()))
	return m
}

func (m *w3Machine) Start(r Request[item]) Request[item] {
	r.Data = validateItem(r.Data)
	return m.enrich.Add(r)
}
func (m *w3Machine) Close() {}

// w3Calls is the bound on service calls in flight for every way: P*8.
func w3Calls() int { return runtime.GOMAXPROCS(0) * 8 }

func BenchmarkW3(b *testing.B) {
	report := func(b *testing.B, svc *bulkService) {
		b.ReportMetric(float64(svc.calls.Load())/float64(b.N), "calls/op")
		b.ReportMetric(float64(w3Items)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
	}
	b.Run("statepipe-batched", func(b *testing.B) {
		svc := &bulkService{}
		// Room for every call in flight and as much again gathering.
		p, err := New[item](newW3Machine(svc), WithMaxInFlight(2*w3Calls()*w3MaxBatch))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		perItem(b, w3Items, func() { submitAndCheckW3(b, p, w3Items) })
		report(b, svc)
	})
	b.Run("per-item", func(b *testing.B) {
		svc := &bulkService{}
		perItem(b, w3Items, func() {
			in, out := make(chan item, 256), make(chan item, 256)
			var wg sync.WaitGroup
			for range w3Calls() {
				wg.Go(func() {
					for it := range in {
						it = validateItem(it)
						svc.enrich(1)
						it.n++
						out <- it
					}
				})
			}
			go func() {
				for range w3Items {
					in <- item{}
				}
				close(in)
				wg.Wait()
				close(out)
			}()
			checkW3Results(out)
		})
		report(b, svc)
	})
	b.Run("classic-batched", func(b *testing.B) {
		svc := &bulkService{}
		perItem(b, w3Items, func() { classicBatched(svc) })
		report(b, svc)
	})
}

// submitAndCheckW3 submits n W3 items to a new group of p and checks that
// each came out validated and enriched.
func submitAndCheckW3(b *testing.B, p *Pipelines[item], n int) {
	g := p.NewGroup()
	go func() {
		defer g.Close()
		for range n {
			_ = g.Submit(context.Background(), item{})
		}
	}()
	for r := range g.Out() {
		if r.Err != nil || r.Data.n != 2 {
			b.Fatalf("bad result %+v", r)
		}
	}
}

// checkW3Results receives every enriched item, as statepipe's consumer
// does from Out, so that every way does the whole job.
func checkW3Results(out <-chan item) {
	n := 0
	for it := range out {
		if it.n != 2 {
			panic("W3 baseline lost a stage")
		}
		n++
	}
	if n != w3Items {
		panic("W3 baseline lost items")
	}
}

// classicBatched is a hand-rolled batcher in a classic pipeline: validate
// lanes feed one gatherer that cuts batches of 500 (or after 5ms), P*8
// callers serve them, and the enriched items go out to a consumer.
func classicBatched(svc *bulkService) {
	in, valid, out := make(chan item, 256), make(chan item, 256), make(chan item, 256)
	batches := make(chan []item, w3Calls())
	var lanes, callers sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		lanes.Go(func() {
			for it := range in {
				valid <- validateItem(it)
			}
		})
	}
	go func() {
		lanes.Wait()
		close(valid)
	}()
	go handBatcher(valid, batches, w3MaxBatch, 5*time.Millisecond)
	for range w3Calls() {
		callers.Go(func() {
			for batch := range batches {
				svc.enrich(len(batch))
				for _, it := range batch {
					it.n++
					out <- it
				}
			}
		})
	}
	go func() {
		for range w3Items {
			in <- item{}
		}
		close(in)
		callers.Wait()
		close(out)
	}()
	checkW3Results(out)
}

// handBatcher is the hand-rolled batcher of the classic baselines (W3,
// W7): it cuts batches of up to max items from in, or what has come when
// wait has passed since a batch's first item, sends them on out, and
// closes out once in is closed and drained.
func handBatcher[E any](in <-chan E, out chan<- []E, max int, wait time.Duration) {
	defer close(out)
	var batch []E
	tick := time.NewTimer(time.Hour)
	tick.Stop()
	for {
		select {
		case it, ok := <-in:
			if !ok {
				if len(batch) > 0 {
					out <- batch
				}
				return
			}
			if len(batch) == 0 {
				tick.Reset(wait)
				// Sized once: a hand-written batcher knows its limit.
				batch = make([]E, 0, max)
			}
			if batch = append(batch, it); len(batch) == max {
				// Stop this batch's linger, so that it does not cut the
				// next one short (Stop drops a pending tick).
				tick.Stop()
				out <- batch
				batch = nil
			}
		case <-tick.C:
			if len(batch) > 0 {
				out <- batch
				batch = nil
			}
		}
	}
}

// --- W4: many groups --------------------------------------------------------

const (
	w4Groups     = 1000
	w4PerGroup   = 100
	w4Submitters = 8
)

func BenchmarkW4(b *testing.B) {
	// default: each group's output buffer has the default bound, 1,024
	// requests, allocated with the group. bounded-groups: groups of 100
	// requests given a bound to match, as the docs advise for many groups.
	b.Run("default", func(b *testing.B) { benchW4(b) })
	b.Run("bounded-groups", func(b *testing.B) { benchW4(b, MaxInFlight(128)) })
}

func benchW4(b *testing.B, opts ...GroupOption) {
	p, err := New[item](newW1Machine())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	perItem(b, w4Groups*w4PerGroup, func() {
		var submitters, drainers sync.WaitGroup
		next := atomic.Int64{}
		for range w4Submitters {
			submitters.Go(func() {
				for next.Add(1) <= w4Groups {
					g := p.NewGroup(opts...)
					drainers.Go(func() {
						for r := range g.Out() {
							if r.Data.n != 4 {
								panic("W4 lost a stage")
							}
						}
					})
					for range w4PerGroup {
						_ = g.Submit(context.Background(), item{})
					}
					g.Close()
				}
			})
		}
		submitters.Wait()
		drainers.Wait()
	})
}

// --- W5: a lone request through a batch stage --------------------------------

func BenchmarkW5(b *testing.B) {
	const items = 200
	m := newBSM(MaxItems(500), MaxWait(50*time.Millisecond))
	p, err := New[int](m)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	g := p.NewGroup()
	defer g.Close()
	lat := make([]time.Duration, 0, items*b.N)
	b.ResetTimer()
	for range b.N {
		for i := range items {
			start := time.Now()
			if err := g.Submit(context.Background(), i); err != nil {
				b.Fatal(err)
			}
			<-g.Out()
			lat = append(lat, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
