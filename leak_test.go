package statepipe

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// runWorkload runs a realistic mix through a fresh Pipelines and closes it:
// several groups (ordered or not, with and without bounds), stage latency,
// errors, panics, a middleware, parked requests resumed from outside,
// cancelled contexts, a blocked Submit, and groups whose consumers stop
// reading before Close. sleep is time.Sleep in a bubble and a yield on real
// time.
func runWorkload(t *testing.T, sleep func(time.Duration)) {
	m := newParkM()
	mw := func(stage string, r Request[parkJob], next Stage[parkJob]) Request[parkJob] {
		if r.Data.id%37 == 5 && stage == "After" {
			panic("middleware")
		}
		return next(r)
	}
	p := mustNew[parkJob](t, m, WithWorkers(4), WithMaxInFlight(32), WithMiddleware(mw))

	// Parked requests are resumed from outside the workers.
	var resumers sync.WaitGroup
	resumerDone := make(chan struct{})
	go func() {
		defer close(resumerDone)
		for r := range m.parked {
			resumers.Go(func() {
				sleep(time.Duration(r.Data.id%5) * time.Millisecond)
				m.resume(r)
			})
		}
	}()

	var wg sync.WaitGroup
	groups := []*Group[parkJob]{
		p.NewGroup(), p.NewGroup(Ordered()), p.NewGroup(MaxInFlight(3)), p.NewGroup(Ordered(), MaxInFlight(2)),
	}
	var cancels []context.CancelFunc
	var mu sync.Mutex
	for gi, g := range groups {
		wg.Go(func() {
			for i := range 60 {
				job := parkJob{id: gi*100 + i, mode: i % numParkModes}
				ctx := context.Background()
				if job.mode == parkCancel || i%11 == 3 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					job.cancel = cancel
					mu.Lock()
					cancels = append(cancels, cancel)
					mu.Unlock()
					if i%11 == 3 {
						wg.Go(func() { sleep(time.Millisecond); cancel() })
					}
				}
				err := g.Submit(ctx, job)
				if err != nil && !errors.Is(err, context.Canceled) && !(gi >= 2 && errors.Is(err, ErrClosed)) {
					t.Errorf("Submit: %v", err)
				}
			}
			g.Close()
		})
		if gi < 2 {
			wg.Go(func() { drain(g) })
		} else {
			// These consumers read a little and walk away.
			wg.Go(func() {
				for range 20 {
					<-g.Out()
				}
			})
		}
	}
	// The walked-away groups block their submitters; give up on them.
	wg.Go(func() {
		sleep(50 * time.Millisecond)
		groups[2].Close()
		groups[3].Close()
	})
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	close(m.parked)
	<-resumerDone
	resumers.Wait()
	for _, c := range cancels {
		c()
	}
	if s := p.Stats(); s.InFlight != 0 || s.Submitted == 0 {
		t.Errorf("after Close: %+v", s)
	}
}

// Inside a bubble, synctest.Test fails if any goroutine is left when the
// function returns: nothing the library started may outlive Close.
func TestNoLeakAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		runWorkload(t, time.Sleep)
	})
}

// The same on real time, counting goroutines.
func TestNoLeakGoroutineCount(t *testing.T) {
	settle := func(limit int) int {
		n := runtime.NumGoroutine()
		for deadline := time.Now().Add(3 * time.Second); n > limit && time.Now().Before(deadline); n = runtime.NumGoroutine() {
			time.Sleep(5 * time.Millisecond)
		}
		return n
	}
	before := runtime.NumGoroutine()
	for range 3 {
		runWorkload(t, func(d time.Duration) {
			if d > 0 {
				time.Sleep(d / 10)
			}
			runtime.Gosched()
		})
	}
	if after := settle(before); after > before {
		var buf bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Errorf("%d goroutines before, %d after Close:\n%s", before, after, buf.String())
	}
}
