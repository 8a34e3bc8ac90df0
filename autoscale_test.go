package statepipe

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// ioM is a one-stage machine whose stage waits: on a sleep (a network
// call), and, if cores is set, while holding one of its tokens, as a stage
// that needs a CPU would (more workers than cores get no more done).
type ioM struct {
	wait  time.Duration
	cores chan struct{}
	runs  atomic.Int64
}

func (m *ioM) Start(r Request[int]) Request[int] {
	if m.cores != nil {
		m.cores <- struct{}{}
		defer func() { <-m.cores }()
	}
	time.Sleep(m.wait)
	m.runs.Add(1)
	return r
}

func (m *ioM) Close() {}

// runItems submits n items to a new group of p and reads them all; it
// returns how long that took and the most workers seen meanwhile.
func runItems(t *testing.T, p *Pipelines[int], n int) (took time.Duration, peak int) {
	t.Helper()
	g := p.NewGroup()
	var maxSeen atomic.Int64
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			raiseMax(&maxSeen, int64(p.Stats().Workers))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	t0 := time.Now()
	go submitNThenClose(t, g, n)
	if got := len(drainWithin(t, g, time.Hour)); got != n {
		t.Fatalf("%d results, want %d", got, n)
	}
	took = time.Since(t0)
	close(stop)
	watch.Wait()
	return took, int(maxSeen.Load())
}

// A machine that waits on I/O gets the workers it needs: from 2 to at
// least 32, within 2x the time of a fixed 64, and back to a handful once
// the load stops.
func TestAutoscaleGrowsForStagesThatWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 20_000
		fixed := mustNew[int](t, &ioM{wait: time.Millisecond}, WithWorkers(64))
		base, _ := runItems(t, fixed, n)
		fixed.Close()

		m := &ioM{wait: time.Millisecond}
		p := mustNew[int](t, m, WithAutoscale(2, 64))
		if w := p.Stats().Workers; w != 2 {
			t.Fatalf("started with %d workers, want min 2", w)
		}
		took, peak := runItems(t, p, n)
		t.Logf("fixed 64: %v; autoscale: %v, peak %d workers", base, took, peak)
		if took > 2*base {
			t.Errorf("autoscale took %v, over 2x fixed 64's %v", took, base)
		}
		if peak < 32 {
			t.Errorf("peak %d workers, want at least 32", peak)
		}
		time.Sleep(2 * time.Second) // no load
		s := p.Stats()
		if s.Workers > 4 {
			t.Errorf("%d workers 2s after the load stopped, want a handful", s.Workers)
		}
		if s.Scaling.Changes[ScaleUp] == 0 || s.Scaling.Changes[ScaleDown] == 0 || s.Scaling.Last != ScaleDown {
			t.Errorf("scaling stats %+v: want ups, downs, the last down", s.Scaling)
		}
		if s.Scaling.Min != 2 || s.Scaling.Max != 64 {
			t.Errorf("bounds %d..%d, want 2..64", s.Scaling.Min, s.Scaling.Max)
		}
		p.Close()
		// The workers that left kept their counts.
		if st := stageStats(t, p.Stats(), "Start"); st.Runs != n || m.runs.Load() != n {
			t.Errorf("Start: %d runs counted, %d made; want %d", st.Runs, m.runs.Load(), n)
		}
	})
}

// Stages bound by two "cores": more than two workers do no more, so the
// count stays where it is and a step up is undone.
func TestAutoscaleDoesNotGrowPastWhatRaisesThroughput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &ioM{wait: time.Millisecond, cores: make(chan struct{}, 2)}
		p := mustNew[int](t, m, WithAutoscale(2, 64))
		_, peak := runItems(t, p, 5_000)
		s := p.Stats()
		p.Close()
		if peak > 4 || s.Workers > 3 {
			t.Errorf("peak %d, now %d workers: want at most 4 (one step tried), 2 or 3 after", peak, s.Workers)
		}
		if s.Scaling.Changes[ScaleUndo] == 0 {
			t.Errorf("scaling stats %+v: want a step up undone", s.Scaling)
		}
	})
}

// Requests parked in a batcher do not wait for a worker: they are no
// reason to grow.
func TestAutoscaleIgnoresParkedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(markFlush, MaxItems(1000), MaxWait(time.Second), NoIdleFlush())
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithAutoscale(1, 16))
		g := p.NewGroup()
		submitN(t, g, 500)
		time.Sleep(900 * time.Millisecond)
		if s := p.Stats(); s.Workers != 1 || s.Parked != 500 {
			t.Errorf("%d workers with %d parked, want 1 and 500", s.Workers, s.Parked)
		}
		g.Close()
		drainWithin(t, g, time.Hour)
		p.Close()
	})
}

func TestAutoscaleReportsChangesToTheObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var sizes []int
		obs := ObserverFunc(func(e Event) {
			if e.Kind == WorkersScaled {
				mu.Lock()
				sizes = append(sizes, e.Size)
				mu.Unlock()
				if e.Scale != ScaleUp && e.Scale != ScaleDown && e.Scale != ScaleUndo {
					t.Errorf("WorkersScaled with reason %v", e.Scale)
				}
			}
		})
		p := mustNew[int](t, &ioM{wait: time.Millisecond}, WithAutoscale(1, 8), WithObserver(obs))
		runItems(t, p, 2000)
		time.Sleep(time.Second)
		p.Close()
		if len(sizes) < 2 || sizes[0] != 2 || sizes[len(sizes)-1] != 1 {
			t.Errorf("worker counts reported %v: want 2 first (doubling from 1) and 1 last", sizes)
		}
		if WorkersScaled.String() != "WorkersScaled" || ScaleUndo.String() != "undo" {
			t.Error("names of WorkersScaled or ScaleUndo")
		}
	})
}

func TestWithAutoscaleRejectsBadBounds(t *testing.T) {
	for name, opts := range map[string][]Option{
		"min 0":            {WithAutoscale(0, 4)},
		"max below min":    {WithAutoscale(4, 2)},
		"max too large":    {WithAutoscale(1, maxWorkers+1)},
		"with WithWorkers": {WithAutoscale(1, 4), WithWorkers(2)},
		"with Pipelines":   {WithPipelines(2), WithAutoscale(1, 4)},
	} {
		_, err := New[int](&ioM{}, opts...)
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: New returned %v, want ErrInvalidOption", name, err)
		}
	}
}

// Close while the controller is changing the count leaves no goroutine
// behind (the bubble would report one) and loses no request.
func TestCloseDuringAutoscaling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, &ioM{wait: time.Millisecond}, WithAutoscale(1, 32))
		g := p.NewGroup()
		errc := make(chan error, 1)
		go func() {
			for i := range 5000 {
				if err := g.Submit(context.Background(), i); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		time.Sleep(100 * time.Millisecond) // mid-growth
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		submitErr := <-errc
		if submitErr != nil && !errors.Is(submitErr, ErrClosed) {
			t.Fatalf("Submit: %v", submitErr)
		}
		s := p.Stats()
		if got := len(drain(g)); uint64(got) != s.Submitted {
			t.Errorf("%d results of %d accepted", got, s.Submitted)
		}
		if s.Running != 0 {
			t.Errorf("%d running after Close", s.Running)
		}
	})
}

// Under a steady load the count settles: a stage of 1ms fed 10,000 items a
// second needs about 10 workers, and after the first second the count
// changes little.
func TestAutoscaleSettlesUnderASteadyLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, &ioM{wait: time.Millisecond}, WithAutoscale(1, 64))
		g := p.NewGroup()
		done := make(chan struct{})
		go func() {
			defer close(done)
			drain(g)
		}()
		changes := func() uint64 {
			var n uint64
			for _, c := range p.Stats().Scaling.Changes {
				n += c
			}
			return n
		}
		var settled uint64
		var counts []int
		for i := range 40_000 { // 4s at one item per 100µs
			mustSubmit(t, g, context.Background(), i)
			time.Sleep(100 * time.Microsecond)
			if i == 10_000 {
				settled = changes()
			}
			if i > 10_000 && i%1000 == 0 {
				counts = append(counts, p.Stats().Workers)
			}
		}
		g.Close()
		<-done
		later := changes() - settled
		p.Close()
		t.Logf("%d changes after the first second; counts %v", later, counts)
		if later > 4 {
			t.Errorf("%d changes in the last 3s of a steady load (counts %v): it oscillates", later, counts)
		}
		for _, c := range counts {
			if c < 10 || c > 40 {
				t.Errorf("worker counts %v: want about 10 to 20 for a load that keeps 10 busy", counts)
				break
			}
		}
	})
}
