package prometheus_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/statepipe/statepipe"
	spprom "github.com/statepipe/statepipe/contrib/prometheus"
	"github.com/statepipe/statepipe/internal/benchkit"
)

// W1 of shared/bench/WORKLOADS.md, as the core's bench_test.go runs it:
// four stages each add one to an int field; a million items through one
// group.
const w1Items = 1_000_000

type item struct{ n int }

func addOne(it item) item { it.n++; return it }

// w1Machine names its next stages with values made once (zero allocation).
type w1Machine struct{ b, c, d statepipe.Stage[item] }

func newW1Machine() *w1Machine {
	m := &w1Machine{}
	m.b, m.c, m.d = m.B, m.C, m.D
	return m
}

func (m *w1Machine) Start(r statepipe.Request[item]) statepipe.Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.b
	return r
}
func (m *w1Machine) B(r statepipe.Request[item]) statepipe.Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.c
	return r
}
func (m *w1Machine) C(r statepipe.Request[item]) statepipe.Request[item] {
	r.Data = addOne(r.Data)
	r.Next = m.d
	return r
}
func (m *w1Machine) D(r statepipe.Request[item]) statepipe.Request[item] {
	r.Data = addOne(r.Data)
	return r
}
func (m *w1Machine) Close() {}

// BenchmarkW1 runs W1 with no collector, and with the collector
// registered and scraped through promhttp every 100ms during the run (the
// scrape renders the whole exposition, as for a Prometheus server). The
// figure to compare is ns/item; the target is at most 10% slower. Run the
// variants alternately, several times, and compare medians: on a shared
// machine one run says little.
func BenchmarkW1(b *testing.B) {
	b.Run("no-collector", func(b *testing.B) {
		p := newW1(b)
		perItem(b, w1Items, func() { runW1(b, p) })
	})
	// The control: the same 100ms ticker goroutine, doing nothing. On a
	// small machine a timer alone moves W1 (the runtime then parks idle
	// threads in the network poller with a timeout); collector against
	// control is the collector's own cost.
	b.Run("ticker-100ms", func(b *testing.B) {
		p := newW1(b)
		ticks := every(b, 100*time.Millisecond, func() {})
		perItem(b, w1Items, func() { runW1(b, p) })
		b.ReportMetric(float64(ticks())/float64(b.N), "scrapes/op")
	})
	b.Run("collector-scraped-100ms", func(b *testing.B) {
		p := newW1(b)
		reg := prometheus.NewRegistry()
		reg.MustRegister(spprom.NewCollector(p))
		scrapes := every(b, 100*time.Millisecond, scraper(b, reg))
		perItem(b, w1Items, func() { runW1(b, p) })
		b.ReportMetric(float64(scrapes())/float64(b.N), "scrapes/op")
	})
}

func newW1(b *testing.B) *statepipe.Pipelines[item] {
	p, err := statepipe.New[item](newW1Machine())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// runW1 sends w1Items through a new group and checks them.
func runW1(b *testing.B, p *statepipe.Pipelines[item]) {
	g := p.NewGroup()
	go func() {
		ctx := context.Background()
		for range w1Items {
			if err := g.Submit(ctx, item{}); err != nil {
				panic(err)
			}
		}
		g.Close()
	}()
	for r := range g.Out() {
		if r.Data.n != 4 {
			b.Fatalf("item came out with %d, want 4", r.Data.n)
		}
	}
}

// scraper returns a function that renders reg's exposition through
// promhttp, as a Prometheus server's scrape does, and throws it away.
func scraper(b *testing.B, reg *prometheus.Registry) func() {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError})
	req, err := http.NewRequest(http.MethodGet, "/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	return func() { h.ServeHTTP(discard{}, req) }
}

// every calls f every d until the benchmark ends, on its own goroutine,
// and returns a function that stops it and says how many calls it made.
func every(b *testing.B, d time.Duration, f func()) (stop func() int64) {
	done := make(chan struct{})
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
				n.Add(1)
			}
		}
	})
	var once sync.Once
	stop = func() int64 {
		once.Do(func() { close(done); wg.Wait() })
		return n.Load()
	}
	b.Cleanup(func() { stop() })
	return stop
}

// discard is a ResponseWriter that throws the exposition away.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}

// perItem reports ns/item, allocs/item and B/item for items processed b.N
// times.
func perItem(b *testing.B, items int, run func()) { benchkit.PerItem(b, items, run) }

// BenchmarkScrape measures one scrape of a W1 Pipelines that has run: the
// collector's Stats call and the rendering of the exposition. Its cost
// divided by the scrape interval bounds what scraping takes from the
// machine.
func BenchmarkScrape(b *testing.B) {
	p := newW1(b)
	runW1(b, p)
	reg := prometheus.NewRegistry()
	reg.MustRegister(spprom.NewCollector(p))
	scrape := scraper(b, reg)
	b.ReportAllocs()
	for b.Loop() {
		scrape()
	}
}
