package otel_test

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/statepipe/statepipe"
	spotel "github.com/statepipe/statepipe/contrib/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// shop prices items in bulk: Start parks each item in a batcher whose one
// call prices the whole batch, and Total runs after it.
type shop struct {
	prices *statepipe.Batcher[int]
	total  statepipe.Stage[int]
}

func newShop() *shop {
	s := &shop{}
	s.total = s.Total
	s.prices = statepipe.NewBatcher(func(_ context.Context, batch []statepipe.Request[int]) error {
		for i := range batch {
			batch[i].Data *= 100 // one bulk call for the whole batch
		}
		return nil
	}, statepipe.BatchName("prices"))
	return s
}

func (s *shop) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = s.total // where to go on after the flush
	return s.prices.Add(r)
}

func (s *shop) Total(r statepipe.Request[int]) statepipe.Request[int] { r.Data += 5; return r }
func (s *shop) Close()                                                {}

func Example() {
	// In a program, these are the SDK providers with your exporters (or
	// leave the options out to use the global providers). Here they keep
	// the spans and metrics in memory.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	obs, err := spotel.NewObserver(spotel.WithTracerProvider(tp), spotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	p, err := statepipe.New[int](newShop(), statepipe.WithObserver(obs))
	if err != nil {
		panic(err)
	}
	g := p.NewGroup()

	// Requests submitted under a span get their request spans under it.
	ctx, checkout := tp.Tracer("example").Start(context.Background(), "checkout")
	for _, item := range []int{1, 2, 3} {
		if err := g.Submit(ctx, item); err != nil {
			panic(err)
		}
	}
	g.Close()
	for r := range g.Out() {
		_ = r // use the result
	}
	checkout.End()
	p.Close()

	var lines []string
	links := 0
	for _, s := range spans.Ended() {
		switch s.Name() {
		case spotel.SpanRequest:
			var events []string
			for _, e := range s.Events() {
				events = append(events, e.Name)
			}
			under := s.Parent().SpanID() == checkout.SpanContext().SpanID()
			lines = append(lines, fmt.Sprintf("%s (under checkout: %v): %v", s.Name(), under, events))
		case spotel.SpanFlush:
			links += len(s.Links())
		}
	}
	sort.Strings(lines)
	for _, l := range slices.Compact(lines) {
		fmt.Println(l)
	}
	fmt.Println("requests linked from flush spans:", links)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	var points []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name != spotel.MetricStageRuns && m.Name != spotel.MetricRequests {
			continue
		}
		for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
			points = append(points, fmt.Sprintf("%s{%s} %d", m.Name, attrs(dp.Attributes), dp.Value))
		}
	}
	sort.Strings(points)
	for _, pt := range points {
		fmt.Println(pt)
	}
	// Output:
	// statepipe.request (under checkout: true): [Start statepipe.parked statepipe.resumed Total]
	// requests linked from flush spans: 3
	// statepipe.requests{statepipe.outcome=ok} 3
	// statepipe.stage.runs{statepipe.stage=Start} 3
	// statepipe.stage.runs{statepipe.stage=Total} 3
}

func attrs(s attribute.Set) string {
	out := ""
	for _, kv := range s.ToSlice() {
		out += string(kv.Key) + "=" + kv.Value.Emit()
	}
	return out
}
