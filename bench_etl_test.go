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

// --- W7: mixed ETL -------------------------------------------------------------
//
// Parse (~2µs CPU); 30% of items go to a fix stage (~5µs CPU); a bulk
// lookup on a fake service (1ms + 1µs per item, at most 200 items a call,
// at most 8 calls in flight); a final stage. Throughput and per-item
// latency, from Submit to receipt on Out, against the classic pipeline
// with a hand-rolled batcher. The clock starts before Submit (before the
// send on the baseline's input channel), so time blocked by backpressure
// counts: the latency is what a producer feeding as fast as it can sees.

const (
	w7Items    = 100_000
	w7MaxBatch = 200
	w7MaxCalls = 8
	w7MaxWait  = 2 * time.Millisecond
)

// w7LoopsPerUS is burn's rounds per microsecond on this machine: the best
// of a few trials, so that a preempted trial does not inflate the stages.
var w7LoopsPerUS = sync.OnceValue(func() float64 {
	const trial = 1 << 20
	best := time.Duration(1 << 62)
	for range 5 {
		start := time.Now()
		burn(trial)
		best = min(best, time.Since(start))
	}
	return float64(trial) * float64(time.Microsecond) / float64(best)
})

func w7ParseLoops() int { return int(2 * w7LoopsPerUS()) }
func w7FixLoops() int   { return int(5 * w7LoopsPerUS()) }

// w7Item is one record. Every field is a function of id, so results can be
// checked; start is stamped just before Submit for the latency.
type w7Item struct {
	id     int
	parsed int
	fixed  bool
	value  int
	done   bool
	start  time.Time
}

// w7NeedsFix picks 30% of items, deterministically.
func w7NeedsFix(id int) bool { return id%10 < 3 }

// w7Value is what the fake service returns for id.
func w7Value(id int) int { return id*7 + 1 }

func w7Parse(it *w7Item) { burn(w7ParseLoops()); it.parsed = it.id + 1 }
func w7Fix(it *w7Item)   { burn(w7FixLoops()); it.fixed = true }
func w7Final(it *w7Item) { it.done = true }

// w7Service is the fake bulk lookup. It counts calls and fails loudly if a
// caller breaks its limits, so that every way is held to them.
type w7Service struct {
	calls    atomic.Int64
	inFlight atomic.Int64
}

func (s *w7Service) lookup(n int) {
	if n > w7MaxBatch || n < 1 {
		panic("W7 bulk call with a bad size")
	}
	if s.inFlight.Add(1) > w7MaxCalls {
		panic("W7 too many bulk calls in flight")
	}
	s.calls.Add(1)
	time.Sleep(time.Millisecond + time.Duration(n)*time.Microsecond)
	s.inFlight.Add(-1)
}

// w7Machine: Start parses and routes to Fix or straight to the lookup;
// both park in the batcher, which resumes each item at Final.
type w7Machine struct {
	fix, final Stage[w7Item]
	bulk       *Batcher[w7Item]
}

func newW7Machine(svc *w7Service) *w7Machine {
	m := &w7Machine{}
	m.fix, m.final = m.Fix, m.Final
	m.bulk = NewBatcher(func(_ context.Context, batch []Request[w7Item]) error {
		svc.lookup(len(batch))
		for i := range batch {
			batch[i].Data.value = w7Value(batch[i].Data.id)
		}
		return nil
	}, MaxItems(w7MaxBatch), MaxFlushes(w7MaxCalls), MaxWait(w7MaxWait))
	return m
}

func (m *w7Machine) Start(r Request[w7Item]) Request[w7Item] {
	w7Parse(&r.Data)
	if w7NeedsFix(r.Data.id) {
		r.Next = m.fix
		return r
	}
	r.Next = m.final
	return m.bulk.Add(r)
}

func (m *w7Machine) Fix(r Request[w7Item]) Request[w7Item] {
	w7Fix(&r.Data)
	r.Next = m.final
	return m.bulk.Add(r)
}

func (m *w7Machine) Final(r Request[w7Item]) Request[w7Item] { w7Final(&r.Data); return r }
func (m *w7Machine) Close()                                  {}

func BenchmarkW7(b *testing.B) {
	w7LoopsPerUS()
	b.Run("statepipe", func(b *testing.B) { w7Statepipe(b) })
	// Room for every flush in flight and as many batches gathering, plus
	// the default for the CPU stages.
	b.Run("statepipe-inflight", func(b *testing.B) {
		w7Statepipe(b, WithMaxInFlight(w7MaxBatch*w7MaxCalls*2+1024))
	})
	b.Run("classic", func(b *testing.B) {
		svc := &w7Service{}
		w7Bench(b, svc, func(lat []time.Duration) { w7Classic(svc, lat) })
	})
}

func w7Statepipe(b *testing.B, opts ...Option) {
	svc := &w7Service{}
	p, err := New[w7Item](newW7Machine(svc), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	w7Bench(b, svc, func(lat []time.Duration) {
		g := p.NewGroup()
		go func() {
			defer g.Close()
			ctx := context.Background()
			for i := range w7Items {
				if err := g.Submit(ctx, w7Item{id: i, start: time.Now()}); err != nil {
					panic(err)
				}
			}
		}()
		for r := range g.Out() {
			if r.Err != nil {
				panic(r.Err)
			}
			w7Record(lat, r.Data)
		}
	})
}

// w7Bench runs run b.N times, each into its own slice of a latency buffer
// allocated up front, then checks every item came out and reports items/s,
// latency percentiles and service calls.
func w7Bench(b *testing.B, svc *w7Service, run func(lat []time.Duration)) {
	lat := make([]time.Duration, w7Items*b.N)
	i := 0
	perItem(b, w7Items, func() {
		run(lat[i*w7Items : (i+1)*w7Items])
		i++
	})
	for _, d := range lat {
		if d == 0 {
			panic("W7 lost an item")
		}
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(float64(w7Items)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(svc.calls.Load())/float64(b.N), "calls/op")
}

// w7Record checks a result and stores its latency at its id; a slot
// already set is a duplicate.
func w7Record(lat []time.Duration, it w7Item) {
	d := max(time.Since(it.start), 1) // 0 marks a slot not yet filled
	if it.id < 0 || it.id >= len(lat) || lat[it.id] != 0 {
		panic("W7 item out of range or duplicated")
	}
	if it.parsed != it.id+1 || it.fixed != w7NeedsFix(it.id) || it.value != w7Value(it.id) || !it.done {
		panic("W7 item with wrong data")
	}
	lat[it.id] = d
}

// w7Classic is the textbook pipeline for W7: per lane over P lanes, a parse
// goroutine and a fix goroutine (which passes items that need no fix); one
// gatherer cuts batches of 200 (or after 2ms) for 8 callers; P final
// goroutines; one output channel to the consumer, which records latency.
func w7Classic(svc *w7Service, lat []time.Duration) {
	lanes := runtime.GOMAXPROCS(0)
	in, toBulk := make(chan w7Item, 256), make(chan w7Item, 256)
	looked, out := make(chan w7Item, 256), make(chan w7Item, 256)
	batches := make(chan []w7Item, w7MaxCalls)
	var fixers, callers, finals sync.WaitGroup
	for range lanes {
		parsed := make(chan w7Item)
		go func() {
			defer close(parsed)
			for it := range in {
				w7Parse(&it)
				parsed <- it
			}
		}()
		fixers.Go(func() {
			for it := range parsed {
				if w7NeedsFix(it.id) {
					w7Fix(&it)
				}
				toBulk <- it
			}
		})
	}
	go func() {
		fixers.Wait()
		close(toBulk)
	}()
	go handBatcher(toBulk, batches, w7MaxBatch, w7MaxWait)
	for range w7MaxCalls {
		callers.Go(func() {
			for batch := range batches {
				svc.lookup(len(batch))
				for _, it := range batch {
					it.value = w7Value(it.id)
					looked <- it
				}
			}
		})
	}
	go func() {
		callers.Wait()
		close(looked)
	}()
	for range lanes {
		finals.Go(func() {
			for it := range looked {
				w7Final(&it)
				out <- it
			}
		})
	}
	go func() {
		finals.Wait()
		close(out)
	}()
	go func() {
		defer close(in)
		for i := range w7Items {
			in <- w7Item{id: i, start: time.Now()}
		}
	}()
	for it := range out {
		w7Record(lat, it)
	}
}
