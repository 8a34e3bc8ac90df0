package statepipe

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The basic machine: discovery, data-driven routing, a closure as Next,
// workers, and what a stage's Goexit leaves behind.

// router routes on the data: negative numbers through a closure, numbers
// ending in 4 to Value (a value-receiver method), even numbers through
// Even, odd ones through Odd and sometimes Fix, then Done. Its other
// exported methods do not have the Stage signature and must be ignored.
type router struct{ even, odd, fix, done, value Stage[int] }

func newRouter() *router {
	m := &router{}
	m.even, m.odd, m.fix, m.done, m.value = m.Even, m.Odd, m.Fix, m.Done, m.Value
	return m
}

func (m *router) Start(r Request[int]) Request[int] {
	switch {
	case r.Data < 0:
		// A closure as Next: not a discovered stage, but it runs and is
		// counted under its function name.
		r.Next = func(r Request[int]) Request[int] {
			r.Data -= 5_000_000
			r.Next = m.done
			return r
		}
	case r.Data%10 == 4:
		r.Next = m.value
	case r.Data%2 == 0:
		r.Next = m.even
	default:
		r.Next = m.odd
	}
	return r
}

func (m *router) Even(r Request[int]) Request[int] { r.Data *= 10; r.Next = m.done; return r }

func (m *router) Odd(r Request[int]) Request[int] {
	r.Data = r.Data*10 + 1
	if r.Data%3 == 0 {
		r.Next = m.fix
	} else {
		r.Next = m.done
	}
	return r
}

func (m *router) Fix(r Request[int]) Request[int]  { r.Data += 5; r.Next = m.done; return r }
func (m *router) Done(r Request[int]) Request[int] { r.Data += 1_000_000; return r }
func (router) Value(r Request[int]) Request[int]   { r.Data += 3; return r }
func (m *router) Close()                           {}

// Not stages: wrong signatures, or unexported.
func (m *router) Helper(x int) int                                { return x }
func (m *router) Other(r Request[string]) Request[string]         { return r }
func (m *router) Pair(r Request[int]) (Request[int], error)       { return r, nil }
func (m *router) Many(r Request[int], n int) Request[int]         { return r }
func (m *router) Variadic(rs ...Request[int]) Request[int]        { return rs[0] }
func (m *router) PtrStage(r *Request[int]) *Request[int]          { return r }
func (m *router) hidden(r Request[int]) Request[int]              { return r }
func (m *router) FuncField(r Request[int]) func(Request[int]) int { return nil }

var _ = (*router).hidden

// expectedRoute is what router does to v, and the stages it runs ("closure"
// for the closure).
func expectedRoute(v int) (int, []string) {
	path := []string{"Start"}
	switch {
	case v < 0:
		return v - 4_000_000, append(path, "closure", "Done")
	case v%10 == 4:
		return v + 3, append(path, "Value")
	case v%2 == 0:
		return v*10 + 1_000_000, append(path, "Even", "Done")
	}
	x := v*10 + 1
	if x%3 == 0 {
		return x + 5 + 1_000_000, append(path, "Odd", "Fix", "Done")
	}
	return x + 1_000_000, append(path, "Odd", "Done")
}

func TestEngineRoutingAndStats(t *testing.T) {
	p := mustNew[int](t, newRouter(), WithPipelines(2), WithMaxInFlight(16))

	wantStages := []string{"Start", "Done", "Even", "Fix", "Odd", "Value"}
	if got := p.Stages(); !slices.Equal(got, wantStages) {
		t.Fatalf("Stages() = %v, want %v", got, wantStages)
	}
	p.Stages()[0] = "changed"
	if got := p.Stages(); !slices.Equal(got, wantStages) {
		t.Fatalf("Stages() returned its internal slice: after a change by the caller it is %v", got)
	}

	const lo, hi = -40, 400
	unordered, ordered := p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(5))
	for _, g := range []*Group[int]{unordered, ordered} {
		go func() {
			for v := lo; v < hi; v++ {
				if err := g.Submit(context.Background(), v); err != nil {
					t.Errorf("Submit(%d): %v", v, err)
				}
			}
			g.Close()
		}()
	}

	wantRuns := map[string]uint64{}
	check := func(name string, res []Request[int], inOrder bool) {
		t.Helper()
		if len(res) != hi-lo {
			t.Fatalf("%s group: %d results, want %d", name, len(res), hi-lo)
		}
		seen := map[int]bool{}
		for i, r := range res {
			if r.Err != nil {
				t.Errorf("%s group: result %d: unexpected error %v", name, i, r.Err)
			}
			if inOrder {
				if want, _ := expectedRoute(lo + i); r.Data != want {
					t.Fatalf("%s group: result %d is %d, want %d (submission order)", name, i, r.Data, want)
				}
			}
			if seen[r.Data] {
				t.Errorf("%s group: %d came out twice", name, r.Data)
			}
			seen[r.Data] = true
		}
		for v := lo; v < hi; v++ {
			want, path := expectedRoute(v)
			if !seen[want] {
				t.Errorf("%s group: no result %d for input %d", name, want, v)
			}
			for _, s := range path {
				wantRuns[s]++
			}
		}
	}
	var res1, res2 []Request[int]
	mustReturnWithin(t, 20*time.Second, "draining both groups", func() {
		var wg sync.WaitGroup
		wg.Go(func() { res1 = drain(unordered) })
		wg.Go(func() { res2 = drain(ordered) })
		wg.Wait()
	})
	check("unordered", res1, false)
	check("ordered", res2, true)

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s := p.Stats()
	n := uint64(2 * (hi - lo))
	if s.Submitted != n || s.Completed != n || s.Failed != 0 || s.InFlight != 0 {
		t.Errorf("Stats after Close: Submitted %d Completed %d Failed %d InFlight %d, want %d %d 0 0",
			s.Submitted, s.Completed, s.Failed, s.InFlight, n, n)
	}
	if s.Workers != 2*len(wantStages) {
		t.Errorf("Workers = %d, want 2 pipelines x %d stages", s.Workers, len(wantStages))
	}
	// Durations may be sampled: at most one observation per request.
	if s.QueueTime.Count > n || s.RunTime.Count > n {
		t.Errorf("QueueTime.Count %d RunTime.Count %d, more than the %d requests", s.QueueTime.Count, s.RunTime.Count, n)
	}
	for _, d := range []Durations{s.QueueTime, s.RunTime} {
		if d.Count > 0 && (d.Min < 0 || d.Min > d.Avg || d.Avg > d.Max) {
			t.Errorf("Durations not ordered: %+v", d)
		}
	}
	if len(s.Stages) != len(wantStages)+1 {
		t.Fatalf("Stats has %d stages (%+v), want the %d discovered and the closure", len(s.Stages), s.Stages, len(wantStages))
	}
	for i, name := range wantStages {
		if s.Stages[i].Name != name {
			t.Errorf("Stats.Stages[%d] is %q, want %q: discovered stages come first, in order", i, s.Stages[i].Name, name)
		}
	}
	closure := s.Stages[len(wantStages)]
	if !strings.HasSuffix(closure.Name, "Start.func1") {
		t.Errorf("the closure is named %q in Stats, want its function name (...Start.func1)", closure.Name)
	}
	for _, st := range s.Stages {
		name := st.Name
		if st == closure {
			name = "closure"
		}
		if st.Runs != wantRuns[name] || st.Errors != 0 {
			t.Errorf("stage %s: Runs %d Errors %d, want %d 0", st.Name, st.Runs, st.Errors, wantRuns[name])
		}
	}
}

func TestEngineWorkerCount(t *testing.T) {
	cases := []struct {
		name string
		opts []Option
		want int
	}{
		{"default", nil, runtime.GOMAXPROCS(0) * 3},
		{"WithPipelines(3)", []Option{WithPipelines(3)}, 9},
		{"WithWorkers(5)", []Option{WithWorkers(5)}, 5},
		{"WithWorkers(1)", []Option{WithWorkers(1)}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newChainM()
				p := mustNew[int](t, m, tc.opts...)
				g := p.NewGroup()
				submitN(t, g, 50)
				g.Close()
				if res := drain(g); len(res) != 50 {
					t.Fatalf("%d results, want 50", len(res))
				}
				synctest.Wait() // every worker is waiting for work
				s := p.Stats()
				if s.Workers != tc.want {
					t.Errorf("Workers = %d, want %d", s.Workers, tc.want)
				}
				if s.Running != 0 {
					t.Errorf("Running = %d while every worker waits for work, want 0", s.Running)
				}
				// Idle: the counts are published and exact without Close.
				if s.Submitted != 50 || s.Completed != 50 || s.InFlight != 0 {
					t.Errorf("idle Stats: Submitted %d Completed %d InFlight %d, want 50 50 0", s.Submitted, s.Completed, s.InFlight)
				}
				p.Close()
				if m.maxActive.Load() > int64(tc.want) {
					t.Errorf("%d stages ran at once on %d workers", m.maxActive.Load(), tc.want)
				}
			})
		})
	}
}

// embeddedB holds stages that a machine gets by embedding it.
type embeddedB struct{}

func (*embeddedB) B(r Request[int]) Request[int] {
	if r.Data == 10 {
		panic("in B")
	}
	r.Data += 100
	return r
}

// composedM is a machine made by embedding: B is promoted from
// embeddedB, and is one of its stages like any other.
type composedM struct{ *embeddedB }

func (m composedM) Start(r Request[int]) Request[int] {
	r.Data++
	r.Next = m.B // a method value of a promoted method
	return r
}
func (composedM) Close() {}

// A stage promoted from an embedded type is a discovered stage: it keeps
// its name in Stats, in PanicError and for the middleware, and has one
// entry in Stats, not two.
func TestPromotedStagesKeepTheirNames(t *testing.T) {
	var (
		mu    sync.Mutex
		names = map[string]int{}
	)
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] {
		mu.Lock()
		names[stage]++
		mu.Unlock()
		return next(r)
	}
	p := mustNew[int](t, composedM{&embeddedB{}}, WithWorkers(2), WithMiddleware(mw), WithDAG())
	if got := p.Stages(); !slices.Equal(got, []string{"Start", "B"}) {
		t.Fatalf("Stages() = %v, want [Start B]", got)
	}
	g := p.NewGroup(Ordered())
	for _, v := range []int{0, 9} {
		if err := g.Submit(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	res := drainWithin(t, g, 10*time.Second)
	if len(res) != 2 {
		t.Fatalf("%d results, want 2", len(res))
	}
	if res[0].Err != nil || res[0].Data != 101 {
		t.Errorf("0: %+v, want Data 101", res[0])
	}
	var pe *PanicError
	if !errors.As(res[1].Err, &pe) || pe.Stage != "B" {
		t.Errorf("9: Err %v, want a panic in stage B", res[1].Err)
	}
	p.Close()
	mu.Lock()
	if names["Start"] != 2 || names["B"] != 2 || len(names) != 2 {
		t.Errorf("the middleware was told the stages %v, want Start and B twice each", names)
	}
	mu.Unlock()
	s := p.Stats()
	if len(s.Stages) != 2 {
		t.Errorf("Stats has stages %+v, want Start and B only", s.Stages)
	}
	if st := stageStats(t, s, "B"); st.Runs != 2 || st.Errors != 1 {
		t.Errorf("stage B: %+v, want 2 runs, 1 error", st)
	}
}

// A stage that calls runtime.Goexit (t.FailNow in a stage, say) takes its
// worker's goroutine with it: its request must still come out, once, with
// an error, and the pipelines keep their workers.
func TestStageGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newChainM()
		m.onA = func(m *chainM, r Request[int]) Request[int] {
			if r.Data%10 == 4 { // submitted 3, 13, 23
				runtime.Goexit()
			}
			return m.stageA(r)
		}
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup(Ordered())
		const n = 30
		go func() {
			for i := range n {
				if err := g.Submit(context.Background(), i); err != nil {
					t.Error(err)
				}
			}
			g.Close()
		}()
		res := drain(g)
		if len(res) != n {
			t.Fatalf("%d results, want %d", len(res), n)
		}
		for i, r := range res {
			if i%10 != 3 {
				if r.Err != nil || r.Data != chainOut(i) {
					t.Errorf("%d: %+v", i, r)
				}
				continue
			}
			var pe *PanicError
			if r.Err == nil {
				t.Errorf("%d: no error after its stage called runtime.Goexit", i)
			} else if !errors.As(r.Err, &pe) || pe.Stage != "A" {
				t.Errorf("%d: Err %v, want it to name stage A", i, r.Err)
			}
		}
		synctest.Wait()
		if s := p.Stats(); s.Workers != 2 || s.Running != 0 {
			t.Errorf("Workers %d Running %d, want 2 0", s.Workers, s.Running)
		}
		p.Close()
		if s := p.Stats(); s.Failed != 3 || s.Completed != n-3 {
			t.Errorf("Failed %d Completed %d, want 3 %d", s.Failed, s.Completed, n-3)
		}
	})
}

// A stage calling runtime.Goexit (t.FailNow in a test stage, say) left
// nothing to recover: its request never came out, its worker was gone,
// and Close waited for the request forever.
func TestGoexitInStageIsReplacedByANewWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newHookM(nil, func(m *hookM, r Request[int]) Request[int] {
			if r.Data == 1 {
				runtime.Goexit()
			}
			return r
		})
		p := mustNew[int](t, m, WithWorkers(1)) // one worker: the second request needs its replacement
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 1)
		select {
		case r := <-g.Out():
			var pe *PanicError
			if !errors.As(r.Err, &pe) || !errors.Is(r.Err, errGoexit) || pe.Stage != "Start" {
				t.Errorf("Err %v; want a *PanicError of stage Start wrapping errGoexit", r.Err)
			}
		case <-time.After(time.Hour):
			t.Fatalf("the request whose stage called Goexit never came out")
		}
		mustSubmit(t, g, context.Background(), 2)
		select {
		case r := <-g.Out():
			if r.Data != 2 || r.Err != nil {
				t.Errorf("next request: Data %d, Err %v; want 2, nil", r.Data, r.Err)
			}
		case <-time.After(time.Hour):
			t.Fatalf("no worker left to run the next request")
		}
		g.Close()
		p.Close() // in a bubble, a Close that hangs fails the test
		if s := p.Stats(); s.Workers != 1 || s.Running != 0 {
			t.Errorf("after Close: Workers %d, Running %d; want 1, 0", s.Workers, s.Running)
		}
	})
}

// The engine allocates nothing per request (the contract); a machine whose
// stage values are made once allocates nothing either. Only the fast path
// is measured: one request at a time, so Submit never waits.
func TestEngineAllocatesNothingPerRequest(t *testing.T) {
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] { return next(r) }
	p := mustNew[int](t, newRouter(), WithWorkers(2), WithMiddleware(mw), WithDAG())
	defer p.Close()
	for _, g := range []*Group[int]{p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(4))} {
		ctx := context.Background()
		allocs := testing.AllocsPerRun(1000, func() {
			if err := g.Submit(ctx, 2); err != nil { // Start -> Even -> Done
				t.Fatal(err)
			}
			if r := <-g.Out(); r.Err != nil {
				t.Fatal(r.Err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations per request, want 0", allocs)
		}
		g.Close()
	}
}
