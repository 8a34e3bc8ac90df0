package statepipe

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// recorder keeps the events of each request, in order.
type recorder struct {
	mu      sync.Mutex
	byReq   map[uint64][]Event
	flushes []Event
}

func (r *recorder) Observe(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Kind == BatchFlushed {
		e.Members = slices.Clone(e.Members)
		r.flushes = append(r.flushes, e)
		return
	}
	r.byReq[e.Request] = append(r.byReq[e.Request], e)
}

func TestObserverSeesEveryEvent(t *testing.T) {
	rec := &recorder{byReq: map[uint64][]Event{}}
	runRoutes(t, WithObserver(rec))
	if len(rec.byReq) != 14 {
		t.Fatalf("events for %d requests, want 14", len(rec.byReq))
	}
	flushed := map[uint64]bool{}
	for _, f := range rec.flushes {
		if f.Batch != "store" || f.Size != len(f.Members) || f.Err != nil {
			t.Errorf("flush event %+v", f)
		}
		for _, id := range f.Members {
			flushed[id] = true
		}
	}
	if len(flushed) != 4 {
		t.Errorf("%d requests flushed, want 4", len(flushed))
	}
	for id, evs := range rec.byReq {
		var kinds []EventKind
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
		}
		if kinds[0] != RequestStarted || kinds[len(kinds)-1] != RequestDone {
			t.Errorf("request %d: events %v, want RequestStarted first and RequestDone last", id, kinds)
		}
		last := evs[len(evs)-1]
		switch {
		case last.Err != nil:
			// a negative number: Start failed it
			if !slices.Equal(kinds, []EventKind{RequestStarted, StageDone, RequestDone}) || evs[1].Stage != "Start" || evs[1].Err == nil {
				t.Errorf("failed request %d: %v", id, evs)
			}
		case flushed[id]:
			want := []EventKind{RequestStarted, StageDone, StageDone, Parked, Resumed, StageDone, RequestDone}
			if !slices.Equal(kinds, want) || evs[3].Batch != "store" || evs[5].Stage != "Finish" {
				t.Errorf("parked request %d: %v, want %v", id, kinds, want)
			}
		default:
			if !slices.Equal(kinds, []EventKind{RequestStarted, StageDone, StageDone, RequestDone}) {
				t.Errorf("request %d: %v", id, kinds)
			}
		}
	}
}

func TestObserverPanicAndNoAllocation(t *testing.T) {
	var mu sync.Mutex
	var panics []error
	obs := ObserverFunc(func(e Event) {
		// A type assertion, not errors.As: As takes its target's address,
		// which would allocate here and be counted against the engine.
		if _, ok := e.Err.(*PanicError); e.Kind == StageDone && ok {
			mu.Lock()
			panics = append(panics, e.Err)
			mu.Unlock()
		}
	})
	p, err := New[int](panicky{}, WithObserver(obs), WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	g := p.NewGroup()
	ctx := context.Background()
	roundTrip := func(v int) Request[int] {
		if err := g.Submit(ctx, v); err != nil {
			t.Fatal(err)
		}
		return <-g.Out()
	}
	if r := roundTrip(-1); r.Err == nil {
		t.Fatal("the panic did not fail the request")
	}
	if len(panics) != 1 {
		t.Fatalf("observer saw %d panics, want 1", len(panics))
	}
	roundTrip(1) // warm up
	if allocs := testing.AllocsPerRun(200, func() { roundTrip(1) }); allocs > 0 {
		t.Errorf("%v allocations per request with an observer, want 0", allocs)
	}
}

type panicky struct{}

func (panicky) Start(r Request[int]) Request[int] {
	if r.Data < 0 {
		panic("negative")
	}
	return r
}
func (panicky) Close() {}

// A nil observer, also a nil ObserverFunc (which used to pass New and
// crash the process at the first request), is a configuration error.
func TestObserverOptionValidation(t *testing.T) {
	for name, o := range map[string]Observer{"nil": nil, "nil ObserverFunc": ObserverFunc(nil)} {
		if _, err := New[int](panicky{}, WithObserver(o)); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("WithObserver(%s): %v, want ErrInvalidOption", name, err)
		}
	}
}

// A panic in Observe is the observer's bug: it is recovered, its event
// dropped, logged once and counted, and the requests go on untouched. A
// panicking observer used to crash the process.
func TestPanickingObserverIsRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		obs := ObserverFunc(func(e Event) {
			if e.Kind == StageDone {
				panic("observer bug")
			}
		})
		p := mustNew[int](t, newChainM(), WithObserver(obs), WithWorkers(2),
			WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		res := p.Do(context.Background(), 1, 2, 3)
		for i, r := range res {
			if r.Err != nil || r.Data != chainOut(i+1) {
				t.Errorf("request %d: %+v", i+1, r)
			}
		}
		p.Close()
		if n := p.Stats().ObserverPanics; n != 9 { // three stages, three requests
			t.Errorf("ObserverPanics = %d, want 9", n)
		}
		if n := strings.Count(logs.String(), "observer panicked"); n != 1 {
			t.Errorf("logged %d observer panics, want the first only:\n%s", n, logs.String())
		}
	})
}

// Request.ID is the id observer events carry, so stage code can find its
// own trace or log records.
func TestRequestIDMatchesEvents(t *testing.T) {
	var mu sync.Mutex
	fromEvents := map[uint64]bool{}
	obs := ObserverFunc(func(e Event) {
		if e.Kind == RequestDone {
			mu.Lock()
			fromEvents[e.Request] = true
			mu.Unlock()
		}
	})
	p, err := New[int](panicky{}, WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	go submitNThenClose(t, g, 50)
	fromOut := map[uint64]bool{}
	for r := range g.Out() {
		if r.ID() == 0 || fromOut[r.ID()] {
			t.Fatalf("request %d: id %d is zero or repeated", r.Data, r.ID())
		}
		fromOut[r.ID()] = true
	}
	p.Close()
	if len(fromOut) != 50 || !maps.Equal(fromOut, fromEvents) {
		t.Errorf("ids from Out %v differ from the events' %v", fromOut, fromEvents)
	}
	if (Request[int]{}).ID() != 0 {
		t.Error("a Request no Pipelines admitted has an id")
	}
}

// flushCtxObserver gives each flush a context with a value, and checks it
// comes back on the BatchFlushed event.
type flushCtxObserver struct {
	mu       sync.Mutex
	started  int
	finished int
	bad      []string
}

type flushMark struct{}

func (o *flushCtxObserver) FlushStarting(ctx context.Context, batch string, reason FlushReason, members []uint64) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started++
	if batch != "store" || len(members) == 0 {
		o.bad = append(o.bad, "FlushStarting without a batch name or members")
	}
	return context.WithValue(ctx, flushMark{}, o.started)
}

func (o *flushCtxObserver) Observe(e Event) {
	if e.Kind != BatchFlushed {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished++
	if e.Ctx.Value(flushMark{}) == nil {
		o.bad = append(o.bad, "BatchFlushed without the context FlushStarting gave")
	}
}

func TestFlushObserverGivesTheFlushContext(t *testing.T) {
	obs := &flushCtxObserver{}
	m := newRouteMachine()
	var inFlush []any
	m.bulk = NewBatcher(func(ctx context.Context, b []Request[int]) error {
		inFlush = append(inFlush, ctx.Value(flushMark{}))
		return nil
	}, BatchName("store"), MaxWait(time.Millisecond))
	p, err := New[int](m, WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	submitN(t, g, 12)
	g.Close()
	for range g.Out() {
	}
	p.Close()
	if obs.started == 0 || obs.started != obs.finished || len(obs.bad) > 0 {
		t.Errorf("%d flushes started, %d finished; problems: %v", obs.started, obs.finished, obs.bad)
	}
	for i, v := range inFlush {
		if v == nil {
			t.Errorf("flush %d ran without the observer's context", i)
		}
	}
}

// parkThenWork parks every request, then goes on working in the stage,
// as a stage that ends a trace span after Add does.
type parkThenWork struct {
	bulk *Batcher[int]
	work time.Duration
}

func (m *parkThenWork) Start(r Request[int]) Request[int] {
	out := m.bulk.Add(r)
	time.Sleep(m.work)
	return out
}
func (m *parkThenWork) Close() {}

// With an Observer, the worker reported the stage that parked a request
// with the request's record, which the batch may already have flushed and
// recycled: a data race, and a nil dereference that killed the process
// (found by review).
func TestObserverOfAParkedRequestDoesNotTouchItsRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &parkThenWork{work: time.Millisecond}
		m.bulk = NewBatcher(func(context.Context, []Request[int]) error { return nil }, MaxItems(1))
		var parked atomic.Int64
		obs := ObserverFunc(func(e Event) {
			if e.Kind == Parked && e.Batch == "batch" {
				parked.Add(1)
			}
		})
		p := mustNew[int](t, m, WithWorkers(4), WithObserver(obs))
		items := make([]int, 50)
		for i, r := range p.Do(context.Background(), items...) {
			if r.Err != nil {
				t.Errorf("request %d: %v", i, r.Err)
			}
		}
		p.Close()
		if parked.Load() != 50 {
			t.Errorf("%d Parked events naming the batcher, want 50", parked.Load())
		}
	})
}
