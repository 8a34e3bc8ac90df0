package otel

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/statepipe/statepipe"
	"go.opentelemetry.io/otel/codes"
)

// TestEveryRequestStarted checks what the Observer relies on to close
// every span: the engine reports RequestStarted and RequestDone for every
// request, including one cancelled while it waits for a worker and one
// cancelled while parked.
func TestEveryRequestStarted(t *testing.T) {
	h := newHarness(t)
	parked := make(chan struct{}, 1)
	tap := newTap(statepipe.ObserverFunc(func(e statepipe.Event) {
		h.obs.Observe(e)
		if e.Kind == statepipe.Parked {
			parked <- struct{}{}
		}
	}))
	m := &holder{held: make(chan struct{}, 2), release: make(chan struct{})}
	m.hold = m.Hold
	m.batch = statepipe.NewBatcher(func(context.Context, []statepipe.Request[int]) error { return nil },
		statepipe.MaxWait(1<<62)) // flushes only when idle or closing
	p, err := statepipe.New(m, statepipe.WithObserver(tap), statepipe.WithWorkers(2))
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	submit := func(ctx context.Context, v int) {
		t.Helper()
		if err := g.Submit(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	bg := context.Background()
	var results []statepipe.Request[int]

	submit(bg, 0) // holds worker 1: the engine is never idle, so nothing flushes
	<-m.held
	parkCtx, cancelPark := context.WithCancel(bg)
	submit(parkCtx, 1) // parks
	<-parked
	cancelPark() // and comes out while parked
	results = append(results, <-g.Out())

	submit(bg, 0) // holds worker 2
	<-m.held
	queueCtx, cancelQueue := context.WithCancel(bg)
	submit(queueCtx, 2) // wait for a worker...
	submit(queueCtx, 3)
	cancelQueue() // ...and are cancelled before one picks them up
	close(m.release)
	g.Close()
	for r := range g.Out() {
		results = append(results, r)
	}
	p.Close()

	if len(results) != 5 {
		t.Fatalf("%d results, want 5", len(results))
	}
	for _, r := range results {
		if (r.Data != 0) != errors.Is(r.Err, context.Canceled) {
			t.Errorf("result %d: %v", r.Data, r.Err)
		}
	}
	checkClosed(t, h)
	if len(tap.kinds) != 5 {
		t.Errorf("events for %d requests, want 5", len(tap.kinds))
	}
	for id, kinds := range tap.kinds {
		if kinds[0] != statepipe.RequestStarted || kinds[len(kinds)-1] != statepipe.RequestDone {
			t.Errorf("request %d: events %v", id, kinds)
		}
	}
	spans := requestSpans(t, h)
	if len(spans) != 5 {
		t.Fatalf("%d request spans", len(spans))
	}
	// The requests were submitted one after another, so their ids rise in
	// submission order.
	wantEvents := [][]string{{"Start", "Hold"}, {"Start", EventParked, EventResumed, "exception"},
		{"Start", "Hold"}, {"exception"}, {"exception"}}
	ids := slices.Sorted(maps.Keys(spans))
	for i, id := range ids {
		if got, want := eventNames(spans[id]), wantEvents[i]; !slices.Equal(got, want) {
			t.Errorf("request %d (id %d): events %v, want %v", i, id, got, want)
		}
	}
}

// holder holds 0s in Hold until released, and parks the rest.
type holder struct {
	held, release chan struct{}
	hold          statepipe.Stage[int]
	batch         *statepipe.Batcher[int]
}

func (m *holder) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data == 0 {
		r.Next = m.hold
		return r
	}
	return m.batch.Add(r)
}

func (m *holder) Hold(r statepipe.Request[int]) statepipe.Request[int] {
	m.held <- struct{}{}
	<-m.release
	return r
}

func (m *holder) Close() {}

// TestSharedObserver checks that a request id started twice (an Observer
// wrongly shared by two Pipelines) leaves no span open.
func TestSharedObserver(t *testing.T) {
	h := newHarness(t)
	ev := statepipe.Event{Kind: statepipe.RequestStarted, Request: 1 << 32, Group: 1, Ctx: context.Background()}
	h.obs.Observe(ev)
	h.obs.Observe(ev)
	ev.Kind = statepipe.RequestDone
	h.obs.Observe(ev)
	checkClosed(t, h)
	spans := h.spansNamed(SpanRequest)
	if len(spans) != 2 || spans[0].Status().Code != codes.Error || spans[1].Status().Code != codes.Unset {
		t.Errorf("%d spans: %v", len(spans), spans)
	}
}

// TestNoGoroutineLeft runs the routed machine, with stage spans and
// without, in a synctest bubble: the test fails if any goroutine (of the
// engine, the SDK or the Observer) is left when it ends.
func TestNoGoroutineLeft(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithStageSpans()}} {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, opts...)
			if out := run(t, newRouted(statepipe.MaxWait(time.Second)), h.obs, context.Background(), routedInput); len(out) != len(routedInput) {
				t.Errorf("%d results", len(out))
			}
			checkClosed(t, h)
		})
	}
}
