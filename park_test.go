package statepipe

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Parking through the internal hook that the Batcher uses, and what can
// still happen to a request once its stage has handed it over.

var errParked = errors.New("failed while parked")

// Park modes: what the resumer does with a parked request.
const (
	noPark     = iota // never parks: Start -> After
	parkNext          // resumed with Next = After
	parkFinish        // resumed with Next = nil, Data changed
	parkFail          // resumed with Err set (and Next set, which must not run)
	parkTwice         // resumed to After, which parks it again; then finished
	parkCancel        // its context is cancelled while parked; resumed with Next = After
	numParkModes
)

type parkJob struct {
	id, mode, v int
	cancel      context.CancelFunc
}

// parkM parks requests the way a Batcher does: it takes them from the
// worker (handOff) and keeps them in a channel; the test resumes them
// from other goroutines.
type parkM struct {
	after  Stage[parkJob]
	parked chan Request[parkJob]
}

func newParkM() *parkM {
	m := &parkM{parked: make(chan Request[parkJob], 1024)}
	m.after = m.After
	return m
}

func (m *parkM) Start(r Request[parkJob]) Request[parkJob] {
	r.Data.v++
	if r.Data.mode == noPark {
		r.Next = m.after
		return r
	}
	handOff(&r)
	m.parked <- r
	return r // ignored: the worker let go of r
}

func (m *parkM) After(r Request[parkJob]) Request[parkJob] {
	r.Data.v += 10
	if r.Data.mode == parkTwice && r.Data.v < 100 {
		r.Data.v += 100
		handOff(&r)
		m.parked <- r
		return Request[parkJob]{} // ignored: the worker let go of r
	}
	return r
}

func (m *parkM) Close() {}

// resume does to a parked request what its mode says, and resumes it.
func (m *parkM) resume(r Request[parkJob]) {
	switch r.Data.mode {
	case parkNext:
		r.Next = m.after
	case parkFinish:
		r.Next = nil
		r.Data.v += 1000
	case parkFail:
		r.Next = m.after
		r.Err = errParked
	case parkTwice:
		if r.Data.v < 100 {
			r.Next = m.after
		} else {
			r.Next = nil
			r.Data.v += 1000
		}
	case parkCancel:
		r.Data.cancel()
		r.Next = m.after
	}
	resumeParked(r)
}

// parkWant is the result of a request of the given mode.
func parkWant(mode int) (v int, err error) {
	switch mode {
	case noPark, parkNext:
		return 11, nil
	case parkFinish:
		return 1001, nil
	case parkFail:
		return 1, errParked
	case parkTwice:
		return 1111, nil
	case parkCancel:
		return 1, context.Canceled
	}
	panic("unknown mode")
}

func TestParkAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newParkM()
		p := mustNew[parkJob](t, m, WithWorkers(3), WithMaxInFlight(32))
		groups := []*Group[parkJob]{p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(7))}

		// The resumer: each parked request is resumed from its own
		// goroutine after a pause, so they resume out of order.
		resumerDone := make(chan struct{})
		var resumers sync.WaitGroup
		go func() {
			defer close(resumerDone)
			for r := range m.parked {
				resumers.Go(func() {
					time.Sleep(time.Duration(r.Data.id%7) * time.Millisecond)
					m.resume(r)
				})
			}
		}()

		const perGroup = 120
		results := make([][]Request[parkJob], len(groups))
		var wg sync.WaitGroup
		for gi, g := range groups {
			wg.Go(func() {
				for i := range perGroup {
					job := parkJob{id: gi*perGroup + i, mode: i % numParkModes}
					ctx := context.Background()
					if job.mode == parkCancel {
						ctx, job.cancel = context.WithCancel(ctx)
					}
					if err := g.Submit(ctx, job); err != nil {
						t.Errorf("Submit: %v", err)
					}
				}
				g.Close()
			})
			wg.Go(func() { results[gi] = drain(g) })
		}
		wg.Wait()
		p.Close()
		close(m.parked)
		<-resumerDone
		resumers.Wait()

		for gi, res := range results {
			if len(res) != perGroup {
				t.Errorf("group %d: %d results, want %d", gi, len(res), perGroup)
			}
			seen := map[int]bool{}
			for i, r := range res {
				id := r.Data.id
				if id/perGroup != gi {
					t.Errorf("group %d got request %d of another group", gi, id)
				}
				if seen[id] {
					t.Errorf("request %d came out twice", id)
				}
				seen[id] = true
				if gi == 1 && id != gi*perGroup+i {
					t.Errorf("ordered group: result %d is request %d", i, id)
				}
				v, err := parkWant(r.Data.mode)
				if r.Data.v != v || !errors.Is(r.Err, err) || (err == nil && r.Err != nil) {
					t.Errorf("request %d (mode %d): v %d Err %v, want %d %v", id, r.Data.mode, r.Data.v, r.Err, v, err)
				}
			}
		}
		s := p.Stats()
		total := uint64(len(groups) * perGroup)
		perMode := total / numParkModes
		if s.Submitted != total || s.InFlight != 0 || s.Failed != 2*perMode {
			t.Errorf("Stats: Submitted %d InFlight %d Failed %d, want %d 0 %d", s.Submitted, s.InFlight, s.Failed, total, 2*perMode)
		}
		if st := stageStats(t, s, "Start"); st.Runs != total || st.Errors != 0 {
			t.Errorf("Start: %+v, want %d runs and no error (parking is not an error)", st, total)
		}
		// After runs for NoPark, ParkNext and ParkTwice (once).
		if st := stageStats(t, s, "After"); st.Runs != 3*perMode || st.Errors != 0 {
			t.Errorf("After: %+v, want %d runs", st, 3*perMode)
		}
		if s.QueueTime.Count > total || s.RunTime.Count > total {
			t.Errorf("QueueTime.Count %d RunTime.Count %d, more than the %d requests (a resumed request is not queued again)",
				s.QueueTime.Count, s.RunTime.Count, total)
		}
	})
}

// Parked requests are inside the machine: they count in InFlight and
// against WithMaxInFlight, and Close waits for them.
func TestParkedCountsAndCloseWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newParkM()
		const bound = 4
		p := mustNew[parkJob](t, m, WithWorkers(2), WithMaxInFlight(bound))
		g, other := p.NewGroup(), p.NewGroup()
		for i := range bound {
			if err := g.Submit(context.Background(), parkJob{id: i, mode: parkFinish}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if len(m.parked) != bound {
			t.Fatalf("%d parked, want %d", len(m.parked), bound)
		}
		s := p.Stats()
		if s.InFlight != bound || s.Running != 0 || s.Submitted != bound {
			t.Errorf("with %d parked: InFlight %d Running %d Submitted %d, want %d 0 %d", bound, s.InFlight, s.Running, s.Submitted, bound, bound)
		}
		// The machine is full of parked requests: another group's
		// Submit waits until one of them comes out.
		extra := submitAsync(other, context.Background(), parkJob{id: bound, mode: parkFinish})
		synctest.Wait()
		if err, done := pollSubmit(extra); done {
			t.Fatalf("Submit returned %v with the machine full of parked requests", err)
		}
		m.resume(<-m.parked)
		synctest.Wait()
		if err, done := pollSubmit(extra); !done || err != nil {
			t.Fatalf("Submit after a parked request came out: returned %v, %v; want nil", done, err)
		}
		synctest.Wait()
		if len(m.parked) != bound {
			t.Fatalf("%d parked, want %d", len(m.parked), bound)
		}

		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while requests were parked")
		default:
		}
		if err := g.Submit(context.Background(), parkJob{mode: parkFinish}); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit during Close = %v, want ErrClosed", err)
		}
		if s := p.Stats(); s.InFlight != bound {
			t.Errorf("InFlight %d during Close, want %d parked", s.InFlight, bound)
		}
		// Resume them from other goroutines while Close waits.
		for range bound {
			r := <-m.parked
			go func() {
				time.Sleep(time.Millisecond)
				m.resume(r)
			}()
		}
		<-closed
		res := append(drain(g), drain(other)...)
		if len(res) != bound+1 {
			t.Fatalf("%d results, want %d", len(res), bound+1)
		}
		seen := map[int]bool{}
		for _, r := range res {
			if seen[r.Data.id] || r.Err != nil || r.Data.v != 1001 {
				t.Errorf("result %+v (duplicate %v)", r, seen[r.Data.id])
			}
			seen[r.Data.id] = true
		}
		if s := p.Stats(); s.InFlight != 0 || s.Completed != bound+1 {
			t.Errorf("after Close: InFlight %d Completed %d", s.InFlight, s.Completed)
		}
	})
}

// A stage hands its request to a parker and then something panics (the
// stage after handing it over, or a middleware after the stage returned).
// The parker owns the request: it will resume it, so the engine must not
// also deliver it with a PanicError, or it comes out twice.
func TestParkThenPanicComesOutOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newParkM()
		mw := func(stage string, r Request[parkJob], next Stage[parkJob]) Request[parkJob] {
			out := next(r)
			if stage == "Start" && r.Data.id == 1 {
				panic("middleware panics after the stage parked the request")
			}
			return out
		}
		p := mustNew[parkJob](t, m, WithWorkers(1), WithMiddleware(mw))
		g := p.NewGroup()
		if err := g.Submit(context.Background(), parkJob{id: 1, mode: parkFinish}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		parked := <-m.parked
		if r, ok, _ := tryRecv(g); ok {
			// Resuming it now would deliver it a second time and
			// corrupt the in-flight counts, so leave it parked.
			t.Errorf("request delivered (Err %v) while its parker still holds it: resuming it would deliver it twice", r.Err)
			g.Close()
			p.Close()
			return
		}
		m.resume(parked)
		g.Close()
		p.Close()
		if res := drain(g); len(res) != 1 {
			t.Errorf("%d results, want 1", len(res))
		}
	})
}

// A stage that panics after handing its request to a batcher used to fail
// the request and deliver it, and the flush delivered it again: twice out,
// and a crash on the closed Out.
func TestPanicAfterAddComesOutOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(markFlush, MaxWait(time.Hour))
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			out := parkThenAfter(m, r)
			if r.Data >= 0 {
				panic("stage panics after Add")
			}
			return out
		})
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		for i := range 4 {
			mustSubmit(t, g, context.Background(), i)
		}
		g.Close()
		got := exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), 0, 1, 2, 3)
		for id, r := range got {
			// The batcher owns the request once Add took it: the flush's
			// result stands, the panic cannot take it back.
			if r.Err != nil || r.Data != id+1100 {
				t.Errorf("request %d: Data %d, Err %v; want %d, nil (flushed, then After)", id, r.Data, r.Err, id+1100)
			}
		}
		p.Close()
	})
}

// A middleware that panics after next returned from a stage that parked
// its request delivered it twice, like a panicking stage.
func TestMiddlewarePanicAfterParkingComesOutOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw := func(stage string, r Request[int], next Stage[int]) Request[int] {
			out := next(r)
			if stage == "Start" {
				panic("middleware panics after next")
			}
			return out
		}
		b := NewBatcher(markFlush, MaxWait(time.Hour))
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithWorkers(2), WithMiddleware(mw))
		fourFlushedThenAfter(t, p)
	})
}
