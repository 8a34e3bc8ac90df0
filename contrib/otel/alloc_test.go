package otel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/statepipe/statepipe"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// setups are the providers the cost is measured with.
var setups = []struct {
	name string
	opts func() []Option
}{
	{"noop", func() []Option {
		return []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider())}
	}},
	{"sdk-metrics", func() []Option { // metrics only: the SDK meter, no tracing
		return []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(sdkMeter())}
	}},
	{"sdk-unsampled", func() []Option {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
		return []Option{WithTracerProvider(tp), WithMeterProvider(sdkMeter())}
	}},
	{"sdk-sampled", func() []Option {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discard{}))
		return []Option{WithTracerProvider(tp), WithMeterProvider(sdkMeter())}
	}},
	{"sdk-sampled-stage-spans", func() []Option {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discard{}))
		return []Option{WithTracerProvider(tp), WithMeterProvider(sdkMeter()), WithStageSpans()}
	}},
}

func sdkMeter() *sdkmetric.MeterProvider {
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
}

// discard is a span processor that drops every span, so that spans are
// recorded (sampled) without being kept.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// events are one of each kind, for request 1 (open from the start) and,
// for the start and the end of a request, request 2.
var (
	bg       = context.Background()
	evStart  = statepipe.Event{Kind: statepipe.RequestStarted, Request: 2, Group: 0, Ctx: bg, Duration: time.Microsecond}
	evDone   = statepipe.Event{Kind: statepipe.RequestDone, Request: 2, Group: 0, Ctx: bg, Duration: time.Millisecond}
	evStage  = statepipe.Event{Kind: statepipe.StageDone, Request: 1, Ctx: bg, Stage: "Validate", Duration: time.Microsecond}
	evFailed = statepipe.Event{Kind: statepipe.StageDone, Request: 1, Ctx: bg, Stage: "Validate", Duration: time.Microsecond, Err: errors.New("invalid")}
	evPark   = statepipe.Event{Kind: statepipe.Parked, Request: 1, Ctx: bg, Stage: "Store", Batch: "store"}
	evResume = statepipe.Event{Kind: statepipe.Resumed, Request: 1, Ctx: bg, Batch: "store"}
	evFlush  = statepipe.Event{Kind: statepipe.BatchFlushed, Ctx: bg, Batch: "store", Reason: statepipe.FlushSize,
		Size: 1, Members: []uint64{1}, Duration: time.Millisecond}
)

type eventCase struct {
	name   string
	events []statepipe.Event
}

var eventCases = []eventCase{
	{"StageDone", []statepipe.Event{evStage}},
	{"StageDone-error", []statepipe.Event{evFailed}},
	{"Parked", []statepipe.Event{evPark}},
	{"Resumed", []statepipe.Event{evResume}},
	{"Started+Done", []statepipe.Event{evStart, evDone}},
	{"BatchFlushed-1", []statepipe.Event{evFlush}},
}

func newObserverFor(t testing.TB, opts []Option) *Observer {
	obs, err := NewObserver(opts...)
	if err != nil {
		t.Fatal(err)
	}
	obs.Observe(statepipe.Event{Kind: statepipe.RequestStarted, Request: 1, Ctx: bg})
	for _, c := range eventCases { // fill the caches and the maps
		for _, e := range c.events {
			obs.Observe(e)
		}
	}
	return obs
}

// TestAllocsPerEvent measures what Observe allocates per event (go test -v
// shows the figures), and holds the metrics path to zero: where no span
// records, stage, park and resume events allocate nothing, with the SDK's
// meter as with a no-op one.
func TestAllocsPerEvent(t *testing.T) {
	for _, s := range setups {
		obs := newObserverFor(t, s.opts())
		line := fmt.Sprintf("%-24s", s.name)
		for _, c := range eventCases {
			allocs := testing.AllocsPerRun(1000, func() {
				for _, e := range c.events {
					obs.Observe(e)
				}
			})
			line += fmt.Sprintf(" %s=%.0f", c.name, allocs)
			metricsOnly := s.name == "noop" || s.name == "sdk-metrics" || s.name == "sdk-unsampled"
			if metricsOnly && allocs != 0 && (strings.HasPrefix(c.name, "StageDone") || c.name == "Parked" || c.name == "Resumed") {
				t.Errorf("%s: %s allocates %.0f times per event", s.name, c.name, allocs)
			}
		}
		t.Log(line)
	}
}

func BenchmarkObserve(b *testing.B) {
	for _, s := range setups {
		for _, c := range eventCases {
			b.Run(s.name+"/"+c.name, func(b *testing.B) {
				obs := newObserverFor(b, s.opts())
				b.ReportAllocs()
				for b.Loop() {
					for _, e := range c.events {
						obs.Observe(e)
					}
				}
			})
		}
	}
}

// BenchmarkPipeline runs requests through a three-stage machine without an
// Observer and with this one, to show what the Observer costs per request
// (three stage events, a start and an end).
func BenchmarkPipeline(b *testing.B) {
	cases := []struct {
		name string
		obs  func() statepipe.Observer
	}{
		{"none", func() statepipe.Observer { return nil }},
		{"engine-only", func() statepipe.Observer { return statepipe.ObserverFunc(func(statepipe.Event) {}) }},
	}
	for _, s := range setups {
		cases = append(cases, struct {
			name string
			obs  func() statepipe.Observer
		}{s.name, func() statepipe.Observer {
			obs, err := NewObserver(s.opts()...)
			if err != nil {
				b.Fatal(err)
			}
			return obs
		}})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var opts []statepipe.Option
			if o := c.obs(); o != nil {
				opts = append(opts, statepipe.WithObserver(o))
			}
			p, err := statepipe.New(newChain(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			g := p.NewGroup()
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				defer g.Close()
				for i := range b.N {
					if err := g.Submit(bg, i); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			n := 0
			for range g.Out() {
				n++
			}
			b.StopTimer()
			p.Close()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/item")
		})
	}
}

// chain is a machine of three stages that do almost nothing.
type chain struct{ b, c statepipe.Stage[int] }

func newChain() *chain {
	m := &chain{}
	m.b, m.c = m.B, m.C
	return m
}

func (m *chain) Start(r statepipe.Request[int]) statepipe.Request[int] { r.Next = m.b; return r }
func (m *chain) B(r statepipe.Request[int]) statepipe.Request[int]     { r.Next = m.c; return r }
func (m *chain) C(r statepipe.Request[int]) statepipe.Request[int]     { r.Data++; return r }
func (m *chain) Close()                                                {}
