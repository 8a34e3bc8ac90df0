package statepipe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// Stats: what the counters and the sampled durations report, after Close
// and while the workers publish.

// Stats().Running is "on a worker right now": after Close no worker is
// left, so nothing can be running.
func TestStatsRunningAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, newChainM(), WithWorkers(4))
		g := p.NewGroup()
		submitN(t, g, 10)
		p.Close()
		if res := drain(g); len(res) != 10 {
			t.Fatalf("%d results, want 10", len(res))
		}
		s := p.Stats()
		if s.Running != 0 {
			t.Errorf("Stats().Running = %d after Close, want 0 (no worker is left)", s.Running)
		}
		if s.Submitted != 10 || s.Completed != 10 || s.InFlight != 0 {
			t.Errorf("Stats after Close: %+v", s)
		}
	})
}

// Durations are sampled, but a group whose requests go one at a time (so
// that it never has more than one inside) is measured too.
func TestStatsDurationsMeasuredOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, newChainM(), WithWorkers(2))
		g := p.NewGroup(MaxInFlight(1))
		const n = 64
		for i := range n {
			if err := g.Submit(context.Background(), i); err != nil {
				t.Fatal(err)
			}
			if r := <-g.Out(); r.Data != chainOut(i) {
				t.Fatalf("got %+v", r)
			}
		}
		g.Close()
		p.Close()
		s := p.Stats()
		if s.QueueTime.Count == 0 || s.RunTime.Count == 0 || s.QueueTime.Count > n || s.RunTime.Count > n {
			t.Errorf("%d requests one at a time: QueueTime.Count %d RunTime.Count %d, want some measured", n, s.QueueTime.Count, s.RunTime.Count)
		}
	})
}

// Requests were picked for timing by the group's pending count, so a
// caller submitting one request at a time (count always 1) was never
// timed: QueueTime and RunTime stayed empty.
func TestTimingSamplesRequestsSubmittedOneAtATime(t *testing.T) {
	p := mustNew[int](t, newHookM(nil, nil), WithWorkers(2))
	g := p.NewGroup()
	const n = 8 * timingSample
	for i := range n {
		mustSubmit(t, g, context.Background(), i)
		if r := <-g.Out(); r.Data != i {
			t.Fatalf("got %d, want %d", r.Data, i)
		}
	}
	g.Close()
	p.Close()
	s := p.Stats()
	if lo, hi := uint64(n/timingSample/2), uint64(2*n/timingSample); s.QueueTime.Count < lo || s.QueueTime.Count > hi || s.RunTime.Count != s.QueueTime.Count {
		t.Errorf("timed %d (queue) and %d (run) of %d requests submitted one at a time, want about %d",
			s.QueueTime.Count, s.RunTime.Count, n, n/timingSample)
	}
}

// Stats computed Completed as (out - failed) from two counters read at
// different moments: a worker publishing in between made it underflow to
// about 1<<64 in a run where every request fails. The window is two atomic
// loads wide and no hook reaches it, so this test races many publishing
// workers against Stats readers; it cannot fail where Completed only
// counts successes.
func TestStatsCompletedNeverUnderflows(t *testing.T) {
	errFail := errors.New("fail")
	m := newHookM(nil, func(m *hookM, r Request[int]) Request[int] { r.Err = errFail; return r })
	p := mustNew[int](t, m, WithWorkers(8))
	g := p.NewGroup()
	drained := make(chan struct{})
	go func() {
		for range g.Out() {
		}
		close(drained)
	}()
	var stop atomic.Bool
	var readers sync.WaitGroup
	var bad atomic.Pointer[Stats]
	for range 4 {
		readers.Go(func() {
			for !stop.Load() {
				if s := p.Stats(); s.Completed != 0 {
					bad.CompareAndSwap(nil, &s)
				}
			}
		})
	}
	const n = 80000
	for i := range n {
		mustSubmit(t, g, context.Background(), i)
	}
	g.Close()
	<-drained
	stop.Store(true)
	readers.Wait()
	p.Close()
	if s := bad.Load(); s != nil {
		t.Errorf("Completed %d (Failed %d, Submitted %d) while every request fails", s.Completed, s.Failed, s.Submitted)
	}
	if s := p.Stats(); s.Completed != 0 || s.Failed != n || s.Submitted != n {
		t.Errorf("after Close: Completed %d, Failed %d, Submitted %d; want 0, %d, %d", s.Completed, s.Failed, s.Submitted, n, n)
	}
}

// Stats read while the workers publish: every request fails, so whatever
// a snapshot trails, it must never show a completed request, nor more
// failed than submitted.
func TestStatsConsistentWhileRunning(t *testing.T) {
	m := newChainM()
	m.onStart = func(m *chainM, r Request[int]) Request[int] { r.Err = errStage; return r }
	p := mustNew[int](t, m, WithWorkers(4))
	g := p.NewGroup()
	n := 100_000
	if testing.Short() {
		n = 20_000
	}
	var stop atomic.Bool
	polled := make(chan string, 1)
	go func() {
		var bad string
		for !stop.Load() && bad == "" {
			s := p.Stats()
			if s.Completed != 0 || s.Failed > s.Submitted {
				bad = fmt.Sprintf("Completed %d Failed %d Submitted %d InFlight %d", s.Completed, s.Failed, s.Submitted, s.InFlight)
			}
		}
		polled <- bad
	}()
	go func() {
		for i := range n {
			if err := g.Submit(context.Background(), i); err != nil {
				t.Error(err)
			}
			if i%1024 == 0 && stop.Load() {
				break
			}
		}
		g.Close()
	}()
	var bad string
	received := 0
	for range g.Out() {
		received++
		if received%1024 == 0 {
			select {
			case bad = <-polled:
				stop.Store(true)
			default:
			}
		}
	}
	stop.Store(true)
	if bad == "" {
		bad = <-polled
	}
	p.Close()
	if bad != "" {
		t.Errorf("while every request fails, a Stats snapshot showed %s", bad)
	}
	if s := p.Stats(); s.Completed != 0 || s.Failed != uint64(received) {
		t.Errorf("after Close: Completed %d Failed %d, want 0 %d", s.Completed, s.Failed, received)
	}
}
