package statepipe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// ---------------------------------------------------------------------------
// The basic machine: discovery, data-driven routing, a closure as Next, stats.

// etRouter routes on the data: negative numbers through a closure, numbers
// ending in 4 to Value (a value-receiver method), even numbers through
// Even, odd ones through Odd and sometimes Fix, then Done. Its other
// exported methods do not have the Stage signature and must be ignored.
type etRouter struct{ even, odd, fix, done, value Stage[int] }

func newEtRouter() *etRouter {
	m := &etRouter{}
	m.even, m.odd, m.fix, m.done, m.value = m.Even, m.Odd, m.Fix, m.Done, m.Value
	return m
}

func (m *etRouter) Start(r Request[int]) Request[int] {
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

func (m *etRouter) Even(r Request[int]) Request[int] { r.Data *= 10; r.Next = m.done; return r }

func (m *etRouter) Odd(r Request[int]) Request[int] {
	r.Data = r.Data*10 + 1
	if r.Data%3 == 0 {
		r.Next = m.fix
	} else {
		r.Next = m.done
	}
	return r
}

func (m *etRouter) Fix(r Request[int]) Request[int]  { r.Data += 5; r.Next = m.done; return r }
func (m *etRouter) Done(r Request[int]) Request[int] { r.Data += 1_000_000; return r }
func (etRouter) Value(r Request[int]) Request[int]   { r.Data += 3; return r }
func (m *etRouter) Close()                           {}

// Not stages: wrong signatures, or unexported.
func (m *etRouter) Helper(x int) int                                { return x }
func (m *etRouter) Other(r Request[string]) Request[string]         { return r }
func (m *etRouter) Pair(r Request[int]) (Request[int], error)       { return r, nil }
func (m *etRouter) Many(r Request[int], n int) Request[int]         { return r }
func (m *etRouter) Variadic(rs ...Request[int]) Request[int]        { return rs[0] }
func (m *etRouter) PtrStage(r *Request[int]) *Request[int]          { return r }
func (m *etRouter) hidden(r Request[int]) Request[int]              { return r }
func (m *etRouter) FuncField(r Request[int]) func(Request[int]) int { return nil }

var _ = (*etRouter).hidden

// etRoute is what etRouter does to v, and the stages it runs ("closure"
// for the closure).
func etRoute(v int) (int, []string) {
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
	p := etNew[int](t, newEtRouter(), WithPipelines(2), WithMaxInFlight(16))

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
				if want, _ := etRoute(lo + i); r.Data != want {
					t.Fatalf("%s group: result %d is %d, want %d (submission order)", name, i, r.Data, want)
				}
			}
			if seen[r.Data] {
				t.Errorf("%s group: %d came out twice", name, r.Data)
			}
			seen[r.Data] = true
		}
		for v := lo; v < hi; v++ {
			want, path := etRoute(v)
			if !seen[want] {
				t.Errorf("%s group: no result %d for input %d", name, want, v)
			}
			for _, s := range path {
				wantRuns[s]++
			}
		}
	}
	var res1, res2 []Request[int]
	etWithin(t, 20*time.Second, "draining both groups", func() {
		var wg sync.WaitGroup
		wg.Go(func() { res1 = etDrain(unordered) })
		wg.Go(func() { res2 = etDrain(ordered) })
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
				m := newEtM()
				p := etNew[int](t, m, tc.opts...)
				g := p.NewGroup()
				etSubmitN(t, g, 50)
				g.Close()
				if res := etDrain(g); len(res) != 50 {
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

// Stats().Running is "on a worker right now": after Close no worker is
// left, so nothing can be running.
func TestStatsRunningAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := etNew[int](t, newEtM(), WithWorkers(4))
		g := p.NewGroup()
		etSubmitN(t, g, 10)
		p.Close()
		if res := etDrain(g); len(res) != 10 {
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

// etEmbedded holds stages that a machine gets by embedding it.
type etEmbedded struct{}

func (*etEmbedded) B(r Request[int]) Request[int] {
	if r.Data == 10 {
		panic("in B")
	}
	r.Data += 100
	return r
}

// etComposed is a machine made by embedding: B is promoted from
// etEmbedded, and is one of its stages like any other.
type etComposed struct{ *etEmbedded }

func (m etComposed) Start(r Request[int]) Request[int] {
	r.Data++
	r.Next = m.B // a method value of a promoted method
	return r
}
func (etComposed) Close() {}

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
	p := etNew[int](t, etComposed{&etEmbedded{}}, WithWorkers(2), WithMiddleware(mw), WithDAG())
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
	res := etDrainWithin(t, g, 10*time.Second)
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
	if st := etStage(t, s, "B"); st.Runs != 2 || st.Errors != 1 {
		t.Errorf("stage B: %+v, want 2 runs, 1 error", st)
	}
}

// Durations are sampled, but a group whose requests go one at a time (so
// that it never has more than one inside) is measured too.
func TestStatsDurationsMeasuredOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := etNew[int](t, newEtM(), WithWorkers(2))
		g := p.NewGroup(MaxInFlight(1))
		const n = 64
		for i := range n {
			if err := g.Submit(context.Background(), i); err != nil {
				t.Fatal(err)
			}
			if r := <-g.Out(); r.Data != etWant(i) {
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

// A stage that calls runtime.Goexit (t.FailNow in a stage, say) takes its
// worker's goroutine with it: its request must still come out, once, with
// an error, and the pipelines keep their workers.
func TestStageGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newEtM()
		m.onA = func(m *etM, r Request[int]) Request[int] {
			if r.Data%10 == 4 { // submitted 3, 13, 23
				runtime.Goexit()
			}
			return m.stageA(r)
		}
		p := etNew[int](t, m, WithWorkers(2))
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
		res := etDrain(g)
		if len(res) != n {
			t.Fatalf("%d results, want %d", len(res), n)
		}
		for i, r := range res {
			if i%10 != 3 {
				if r.Err != nil || r.Data != etWant(i) {
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

// The engine allocates nothing per request (the contract); a machine whose
// stage values are made once allocates nothing either. Only the fast path
// is measured: one request at a time, so Submit never waits.
func TestEngineAllocatesNothingPerRequest(t *testing.T) {
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] { return next(r) }
	p := etNew[int](t, newEtRouter(), WithWorkers(2), WithMiddleware(mw), WithDAG())
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

// ---------------------------------------------------------------------------
// Bad configuration.

// etWide has 70 stages in a chain, Start -> S01 -> ... -> S69; with loop
// set, S69 goes back to S40: a cycle far past the 64 stages a word of
// bits tracks.
type etWide struct{ loop bool }

func (w etWide) Start(r Request[int]) Request[int] { r.Next = w.S01; return r }
func (etWide) Close()                              {}
func (w etWide) S01(r Request[int]) Request[int]   { r.Data++; r.Next = w.S02; return r }
func (w etWide) S02(r Request[int]) Request[int]   { r.Data++; r.Next = w.S03; return r }
func (w etWide) S03(r Request[int]) Request[int]   { r.Data++; r.Next = w.S04; return r }
func (w etWide) S04(r Request[int]) Request[int]   { r.Data++; r.Next = w.S05; return r }
func (w etWide) S05(r Request[int]) Request[int]   { r.Data++; r.Next = w.S06; return r }
func (w etWide) S06(r Request[int]) Request[int]   { r.Data++; r.Next = w.S07; return r }
func (w etWide) S07(r Request[int]) Request[int]   { r.Data++; r.Next = w.S08; return r }
func (w etWide) S08(r Request[int]) Request[int]   { r.Data++; r.Next = w.S09; return r }
func (w etWide) S09(r Request[int]) Request[int]   { r.Data++; r.Next = w.S10; return r }
func (w etWide) S10(r Request[int]) Request[int]   { r.Data++; r.Next = w.S11; return r }
func (w etWide) S11(r Request[int]) Request[int]   { r.Data++; r.Next = w.S12; return r }
func (w etWide) S12(r Request[int]) Request[int]   { r.Data++; r.Next = w.S13; return r }
func (w etWide) S13(r Request[int]) Request[int]   { r.Data++; r.Next = w.S14; return r }
func (w etWide) S14(r Request[int]) Request[int]   { r.Data++; r.Next = w.S15; return r }
func (w etWide) S15(r Request[int]) Request[int]   { r.Data++; r.Next = w.S16; return r }
func (w etWide) S16(r Request[int]) Request[int]   { r.Data++; r.Next = w.S17; return r }
func (w etWide) S17(r Request[int]) Request[int]   { r.Data++; r.Next = w.S18; return r }
func (w etWide) S18(r Request[int]) Request[int]   { r.Data++; r.Next = w.S19; return r }
func (w etWide) S19(r Request[int]) Request[int]   { r.Data++; r.Next = w.S20; return r }
func (w etWide) S20(r Request[int]) Request[int]   { r.Data++; r.Next = w.S21; return r }
func (w etWide) S21(r Request[int]) Request[int]   { r.Data++; r.Next = w.S22; return r }
func (w etWide) S22(r Request[int]) Request[int]   { r.Data++; r.Next = w.S23; return r }
func (w etWide) S23(r Request[int]) Request[int]   { r.Data++; r.Next = w.S24; return r }
func (w etWide) S24(r Request[int]) Request[int]   { r.Data++; r.Next = w.S25; return r }
func (w etWide) S25(r Request[int]) Request[int]   { r.Data++; r.Next = w.S26; return r }
func (w etWide) S26(r Request[int]) Request[int]   { r.Data++; r.Next = w.S27; return r }
func (w etWide) S27(r Request[int]) Request[int]   { r.Data++; r.Next = w.S28; return r }
func (w etWide) S28(r Request[int]) Request[int]   { r.Data++; r.Next = w.S29; return r }
func (w etWide) S29(r Request[int]) Request[int]   { r.Data++; r.Next = w.S30; return r }
func (w etWide) S30(r Request[int]) Request[int]   { r.Data++; r.Next = w.S31; return r }
func (w etWide) S31(r Request[int]) Request[int]   { r.Data++; r.Next = w.S32; return r }
func (w etWide) S32(r Request[int]) Request[int]   { r.Data++; r.Next = w.S33; return r }
func (w etWide) S33(r Request[int]) Request[int]   { r.Data++; r.Next = w.S34; return r }
func (w etWide) S34(r Request[int]) Request[int]   { r.Data++; r.Next = w.S35; return r }
func (w etWide) S35(r Request[int]) Request[int]   { r.Data++; r.Next = w.S36; return r }
func (w etWide) S36(r Request[int]) Request[int]   { r.Data++; r.Next = w.S37; return r }
func (w etWide) S37(r Request[int]) Request[int]   { r.Data++; r.Next = w.S38; return r }
func (w etWide) S38(r Request[int]) Request[int]   { r.Data++; r.Next = w.S39; return r }
func (w etWide) S39(r Request[int]) Request[int]   { r.Data++; r.Next = w.S40; return r }
func (w etWide) S40(r Request[int]) Request[int]   { r.Data++; r.Next = w.S41; return r }
func (w etWide) S41(r Request[int]) Request[int]   { r.Data++; r.Next = w.S42; return r }
func (w etWide) S42(r Request[int]) Request[int]   { r.Data++; r.Next = w.S43; return r }
func (w etWide) S43(r Request[int]) Request[int]   { r.Data++; r.Next = w.S44; return r }
func (w etWide) S44(r Request[int]) Request[int]   { r.Data++; r.Next = w.S45; return r }
func (w etWide) S45(r Request[int]) Request[int]   { r.Data++; r.Next = w.S46; return r }
func (w etWide) S46(r Request[int]) Request[int]   { r.Data++; r.Next = w.S47; return r }
func (w etWide) S47(r Request[int]) Request[int]   { r.Data++; r.Next = w.S48; return r }
func (w etWide) S48(r Request[int]) Request[int]   { r.Data++; r.Next = w.S49; return r }
func (w etWide) S49(r Request[int]) Request[int]   { r.Data++; r.Next = w.S50; return r }
func (w etWide) S50(r Request[int]) Request[int]   { r.Data++; r.Next = w.S51; return r }
func (w etWide) S51(r Request[int]) Request[int]   { r.Data++; r.Next = w.S52; return r }
func (w etWide) S52(r Request[int]) Request[int]   { r.Data++; r.Next = w.S53; return r }
func (w etWide) S53(r Request[int]) Request[int]   { r.Data++; r.Next = w.S54; return r }
func (w etWide) S54(r Request[int]) Request[int]   { r.Data++; r.Next = w.S55; return r }
func (w etWide) S55(r Request[int]) Request[int]   { r.Data++; r.Next = w.S56; return r }
func (w etWide) S56(r Request[int]) Request[int]   { r.Data++; r.Next = w.S57; return r }
func (w etWide) S57(r Request[int]) Request[int]   { r.Data++; r.Next = w.S58; return r }
func (w etWide) S58(r Request[int]) Request[int]   { r.Data++; r.Next = w.S59; return r }
func (w etWide) S59(r Request[int]) Request[int]   { r.Data++; r.Next = w.S60; return r }
func (w etWide) S60(r Request[int]) Request[int]   { r.Data++; r.Next = w.S61; return r }
func (w etWide) S61(r Request[int]) Request[int]   { r.Data++; r.Next = w.S62; return r }
func (w etWide) S62(r Request[int]) Request[int]   { r.Data++; r.Next = w.S63; return r }
func (w etWide) S63(r Request[int]) Request[int]   { r.Data++; r.Next = w.S64; return r }
func (w etWide) S64(r Request[int]) Request[int]   { r.Data++; r.Next = w.S65; return r }
func (w etWide) S65(r Request[int]) Request[int]   { r.Data++; r.Next = w.S66; return r }
func (w etWide) S66(r Request[int]) Request[int]   { r.Data++; r.Next = w.S67; return r }
func (w etWide) S67(r Request[int]) Request[int]   { r.Data++; r.Next = w.S68; return r }
func (w etWide) S68(r Request[int]) Request[int]   { r.Data++; r.Next = w.S69; return r }
func (w etWide) S69(r Request[int]) Request[int] {
	r.Data++
	if w.loop {
		r.Next = w.S40
	}
	return r
}

func TestNewInvalidConfig(t *testing.T) {
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] { return next(r) }
	strMW := func(stage string, r Request[string], next Stage[string]) Request[string] { return next(r) }
	cases := []struct {
		name string
		sm   StateMachine[int]
		opts []Option
		want []string // each must appear in the error
	}{
		{"nil state machine", nil, nil, []string{"nil state machine"}},
		{"nil state machine with options", nil, []Option{WithWorkers(2)}, []string{"nil state machine"}},
		{"WithPipelines(0)", newEtM(), []Option{WithPipelines(0)}, []string{"WithPipelines", "at least 1"}},
		{"WithPipelines(-3)", newEtM(), []Option{WithPipelines(-3)}, []string{"WithPipelines", "at least 1"}},
		{"WithWorkers(0)", newEtM(), []Option{WithWorkers(0)}, []string{"WithWorkers", "at least 1"}},
		{"WithWorkers(-1)", newEtM(), []Option{WithWorkers(-1)}, []string{"WithWorkers", "at least 1"}},
		{"WithMaxInFlight(0)", newEtM(), []Option{WithMaxInFlight(0)}, []string{"WithMaxInFlight", "at least 1"}},
		{"WithMaxInFlight(-7)", newEtM(), []Option{WithMaxInFlight(-7)}, []string{"WithMaxInFlight", "at least 1"}},
		{"WithPipelines and WithWorkers", newEtM(), []Option{WithPipelines(2), WithWorkers(4)}, []string{"WithPipelines", "WithWorkers"}},
		{"WithWorkers and WithPipelines", newEtM(), []Option{WithWorkers(4), WithPipelines(2)}, []string{"WithPipelines", "WithWorkers"}},
		{"nil Option", newEtM(), []Option{nil}, []string{"nil Option"}},
		{"nil Option among good ones", newEtM(), []Option{WithWorkers(1), nil, WithDAG()}, []string{"nil Option"}},
		{"nil logger", newEtM(), []Option{WithLogger(nil)}, []string{"WithLogger", "nil"}},
		{"nil middleware", newEtM(), []Option{WithMiddleware[int](nil)}, []string{"WithMiddleware", "nil middleware"}},
		{"nil middleware after a good one", newEtM(), []Option{WithMiddleware(mw, nil)}, []string{"nil middleware"}},
		{"middleware of another data type", newEtM(), []Option{WithMiddleware(strMW)}, []string{"WithMiddleware", "data type"}},
		{"empty middleware of another data type", newEtM(), []Option{WithMiddleware[string]()}, []string{"WithMiddleware", "data type"}},
		{"middleware of two data types", newEtM(), []Option{WithMiddleware(mw), WithMiddleware(strMW)}, []string{"WithMiddleware", "data type"}},
		{"every problem named", nil, []Option{WithPipelines(0), WithMaxInFlight(0), nil},
			[]string{"nil state machine", "WithPipelines", "WithMaxInFlight", "nil Option"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Inside a bubble: if New started anything, the bubble would
			// end with goroutines left and the test would fail.
			synctest.Test(t, func(t *testing.T) {
				var (
					p   *Pipelines[int]
					err error
				)
				func() {
					defer func() {
						if v := recover(); v != nil {
							t.Fatalf("New panicked: %v", v)
						}
					}()
					p, err = New(tc.sm, tc.opts...)
				}()
				if err == nil {
					p.Close()
					t.Fatal("New succeeded, want an error")
				}
				if p != nil {
					t.Errorf("New returned Pipelines %p with its error", p)
				}
				if !errors.Is(err, ErrInvalidOption) {
					t.Errorf("error %q does not wrap ErrInvalidOption", err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name the problem (%q)", err, w)
					}
				}
				if m, ok := tc.sm.(*etM); ok && m.closes.Load() != 0 {
					t.Error("New called sm.Close on a configuration error")
				}
			})
		})
	}
}

// Configurations at the edges of the valid range work.
func TestNewValidEdgeConfig(t *testing.T) {
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] { return next(r) }
	cases := []struct {
		name string
		sm   StateMachine[int]
		opts []Option
	}{
		{"no options", newEtM(), nil},
		{"one of everything", newEtM(), []Option{WithPipelines(1), WithMaxInFlight(1), WithDAG(), WithOrdered()}},
		{"one worker", newEtM(), []Option{WithWorkers(1)}},
		{"empty WithMiddleware", newEtM(), []Option{WithMiddleware[int]()}},
		{"WithMiddleware twice", newEtM(), []Option{WithMiddleware(mw), WithMiddleware(mw, mw)}},
		{"70 stages", etWide{}, []Option{WithWorkers(2), WithDAG()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := etNew(t, tc.sm, tc.opts...)
				g := p.NewGroup()
				go func() {
					for i := range 5 {
						if err := g.Submit(context.Background(), i); err != nil {
							t.Error(err)
						}
					}
					g.Close()
				}()
				res := etDrain(g)
				if len(res) != 5 {
					t.Fatalf("%d results, want 5", len(res))
				}
				for _, r := range res {
					if r.Err != nil {
						t.Errorf("result %d: %v", r.Data, r.Err)
					}
				}
				if _, ok := tc.sm.(etWide); ok && len(p.Stages()) != 70 {
					t.Errorf("%d stages found, want 70", len(p.Stages()))
				}
				p.Close()
			})
		})
	}
}

// WithDAG detects a cycle whatever the number of stages. It used to track
// 63 stage ids, and a cycle among stages beyond them ran for ever.
func TestDAGDetectsCyclesPastSixtyFourStages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := etNew[int](t, etWide{loop: true}, WithDAG(), WithWorkers(1))
		res := p.Do(context.Background(), 0)
		var cycle *CycleError
		if !errors.As(res[0].Err, &cycle) || cycle.Stage != "S40" {
			t.Fatalf("Err = %v, want a CycleError at S40", res[0].Err)
		}
		if want := []string{"S62", "S63", "S64", "S65", "S66", "S67", "S68", "S69"}; !slices.Equal(cycle.Path, want) {
			t.Errorf("path %v, want the last eight stages %v", cycle.Path, want)
		}
		if res[0].Data != 69 {
			t.Errorf("Data %d, want 69: every stage ran once", res[0].Data)
		}
		p.Close()
	})
}

// A bound too large to allocate is a bad configuration: New must report it
// as an error, not panic ("never a panic, never a hang").
func TestNewHugeMaxInFlightIsAnError(t *testing.T) {
	var (
		p   *Pipelines[int]
		err error
	)
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("New(WithMaxInFlight(math.MaxInt)) panicked (%v); want an error wrapping ErrInvalidOption", v)
			}
		}()
		p, err = New[int](newEtM(), WithMaxInFlight(math.MaxInt))
	}()
	if err == nil {
		p.Close()
		return
	}
	if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithMaxInFlight") {
		t.Errorf("error %q should wrap ErrInvalidOption and name WithMaxInFlight", err)
	}
}

// ---------------------------------------------------------------------------
// One request: contexts, stage errors, panics, cycles.

func TestSubmitNilContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newEtM()
		p := etNew[int](t, m)
		g := p.NewGroup()
		if err := g.Submit(nil, 1); !errors.Is(err, ErrNilContext) {
			t.Errorf("Submit(nil ctx) = %v, want ErrNilContext", err)
		}
		g.Close()
		if res := etDrain(g); len(res) != 0 {
			t.Errorf("%d results from a rejected Submit", len(res))
		}
		p.Close()
		if m.runs[0].Load() != 0 || p.Stats().Submitted != 0 {
			t.Error("a Submit with a nil context was accepted")
		}
	})
}

func TestSubmitDoneContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newEtM()
		p := etNew[int](t, m)
		g := p.NewGroup()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := g.Submit(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Errorf("Submit(cancelled ctx) = %v, want context.Canceled", err)
		}
		dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer dcancel()
		if err := g.Submit(dctx, 2); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Submit(expired ctx) = %v, want context.DeadlineExceeded", err)
		}
		g.Close()
		if res := etDrain(g); len(res) != 0 {
			t.Errorf("%d results from rejected Submits: %+v", len(res), res)
		}
		p.Close()
		s := p.Stats()
		if m.runs[0].Load() != 0 || s.Submitted != 0 || s.Failed != 0 {
			t.Errorf("a Submit with a done context was accepted: Start ran %d times, Stats %+v", m.runs[0].Load(), s)
		}
	})
}

func TestCancelInsideMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		m := newEtM()
		m.onStart = func(m *etM, r Request[int]) Request[int] {
			if r.Data == 10 {
				<-gate
			}
			return m.start(r)
		}
		// One worker: 20 and 30 wait in the queue while 10 is in Start.
		p := etNew[int](t, m, WithWorkers(1))
		g := p.NewGroup()
		ctx10, cancel10 := context.WithCancel(context.Background())
		ctx20, cancel20 := context.WithCancel(context.Background())
		for _, s := range []struct {
			ctx context.Context
			v   int
		}{{ctx10, 10}, {ctx20, 20}, {context.Background(), 30}} {
			if err := g.Submit(s.ctx, s.v); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		cancel10() // while 10 runs Start
		cancel20() // while 20 waits for a worker
		close(gate)
		g.Close()
		got := map[int]error{}
		for _, r := range etDrain(g) {
			if _, dup := got[r.Data]; dup {
				t.Errorf("%d came out twice", r.Data)
			}
			got[r.Data] = r.Err
		}
		want := map[int]error{
			11:  context.Canceled, // Start ran, A did not
			20:  context.Canceled, // never reached a stage
			141: nil,
		}
		if len(got) != len(want) {
			t.Errorf("results %v, want %v", got, want)
		}
		for v, werr := range want {
			err, ok := got[v]
			if !ok || !errors.Is(err, werr) || (werr == nil && err != nil) {
				t.Errorf("result %d: err %v (present %v), want %v", v, err, ok, werr)
			}
		}
		p.Close()
		if a, b := m.runs[1].Load(), m.runs[2].Load(); a != 1 || b != 1 {
			t.Errorf("A ran %d times, B %d times; want 1 and 1 (only for 30)", a, b)
		}
		s := p.Stats()
		if s.Failed != 2 || s.Completed != 1 {
			t.Errorf("Stats: Failed %d Completed %d, want 2 1", s.Failed, s.Completed)
		}
		if st := etStage(t, s, "Start"); st.Runs != 2 || st.Errors != 0 {
			t.Errorf("Start: %+v, want 2 runs and no error (a context error is not the stage's)", st)
		}
	})
}

var etErrStage = errors.New("et: stage failed")

func TestStageErrorEndsRequest(t *testing.T) {
	m := newEtM()
	m.onStart = func(m *etM, r Request[int]) Request[int] {
		r = m.start(r)
		if r.Data == 8 { // submitted 7
			r.Err = fmt.Errorf("start: %w", etErrStage) // Next stays set: it must not run
		}
		return r
	}
	m.onA = func(m *etM, r Request[int]) Request[int] {
		r = m.stageA(r)
		if r.Data == 16 { // submitted 5
			r.Err = etErrStage
		}
		return r
	}
	p := etNew[int](t, m, WithWorkers(2))
	g := p.NewGroup(Ordered())
	const n = 20
	etSubmitN(t, g, n)
	g.Close()
	res := etDrainWithin(t, g, 10*time.Second)
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	for i, r := range res {
		switch i {
		case 5:
			if r.Err != etErrStage || r.Data != 16 {
				t.Errorf("5: Data %d Err %v, want 16 and the stage's error", r.Data, r.Err)
			}
		case 7:
			if !errors.Is(r.Err, etErrStage) || r.Data != 8 {
				t.Errorf("7: Data %d Err %v, want 8 and the stage's error", r.Data, r.Err)
			}
		default:
			if r.Err != nil || r.Data != etWant(i) {
				t.Errorf("%d: Data %d Err %v, want %d", i, r.Data, r.Err, etWant(i))
			}
		}
	}
	p.Close()
	s := p.Stats()
	if s.Failed != 2 || s.Completed != n-2 {
		t.Errorf("Failed %d Completed %d, want 2 %d", s.Failed, s.Completed, n-2)
	}
	for name, want := range map[string]StageStats{
		"Start": {Runs: n, Errors: 1},
		"A":     {Runs: n - 1, Errors: 1},
		"B":     {Runs: n - 2},
	} {
		if st := etStage(t, s, name); st.Runs != want.Runs || st.Errors != want.Errors {
			t.Errorf("stage %s: Runs %d Errors %d, want %d %d", name, st.Runs, st.Errors, want.Runs, want.Errors)
		}
	}
}

var etErrBoom = errors.New("et: boom")

func TestPanicInStage(t *testing.T) {
	m := newEtM()
	m.onA = func(m *etM, r Request[int]) Request[int] {
		switch r.Data {
		case 2: // submitted 1
			panic("text")
		case 3:
			panic(fmt.Errorf("wrapped: %w", etErrBoom))
		case 4:
			var nilMap map[int]int
			nilMap[0] = 1 // a runtime error
		case 5:
			panic(nil) // a *runtime.PanicNilError since Go 1.21
		}
		return m.stageA(r)
	}
	// One worker: if a panic killed it, nothing after would come out.
	p := etNew[int](t, m, WithWorkers(1))
	g := p.NewGroup(Ordered())
	const n = 30
	go etSubmitRange(t, g, n)
	res := etDrainWithin(t, g, 10*time.Second)
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	for i, r := range res {
		if i < 1 || i > 4 {
			if r.Err != nil || r.Data != etWant(i) {
				t.Errorf("%d: Data %d Err %v, want %d and no error", i, r.Data, r.Err, etWant(i))
			}
			continue
		}
		var pe *PanicError
		if !errors.As(r.Err, &pe) {
			t.Errorf("%d: Err %v (%T), want a *PanicError", i, r.Err, r.Err)
			continue
		}
		if pe.Stage != "A" {
			t.Errorf("%d: PanicError.Stage %q, want A", i, pe.Stage)
		}
		if r.Data != i+1 {
			t.Errorf("%d: Data %d, want %d (as it entered the stage that panicked)", i, r.Data, i+1)
		}
		if !bytes.Contains(pe.Stack, []byte("(*etM).A")) {
			t.Errorf("%d: the stack does not show the stage:\n%s", i, pe.Stack)
		}
		if !strings.Contains(pe.Error(), "A") {
			t.Errorf("%d: Error() %q does not name the stage", i, pe.Error())
		}
		var rerr runtime.Error
		switch i {
		case 1:
			if pe.Value != "text" || errors.Unwrap(pe) != nil {
				t.Errorf("1: Value %v, Unwrap %v; want \"text\", nil", pe.Value, errors.Unwrap(pe))
			}
		case 2:
			if !errors.Is(r.Err, etErrBoom) {
				t.Errorf("2: errors.Is does not see the error the stage panicked with: %v", r.Err)
			}
		case 3:
			if !errors.As(r.Err, &rerr) {
				t.Errorf("3: errors.As does not find the runtime.Error: %v", r.Err)
			}
		case 4:
			var pn *runtime.PanicNilError
			if !errors.As(r.Err, &pn) {
				t.Errorf("4: panic(nil) gave %v, want a PanicError around *runtime.PanicNilError", r.Err)
			}
		}
	}
	// The pipelines keep running.
	g2 := p.NewGroup()
	if err := g2.Submit(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	g2.Close()
	if res := etDrainWithin(t, g2, 10*time.Second); len(res) != 1 || res[0].Data != etWant(100) {
		t.Errorf("after the panics: %+v", res)
	}
	p.Close()
	s := p.Stats()
	if s.Failed != 4 || s.Completed != n-4+1 || s.Workers != 1 {
		t.Errorf("Stats: Failed %d Completed %d Workers %d, want 4 %d 1", s.Failed, s.Completed, s.Workers, n-3)
	}
	if st := etStage(t, s, "A"); st.Runs != n+1 || st.Errors != 4 {
		t.Errorf("stage A: %+v, want %d runs, 4 errors", st, n+1)
	}
	if st := etStage(t, s, "B"); st.Runs != n-4+1 || st.Errors != 0 {
		t.Errorf("stage B: %+v, want %d runs", st, n-3)
	}
}

func TestPanicInMiddleware(t *testing.T) {
	m := newEtM()
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] {
		if stage == "B" && r.Data == 22 { // submitted 11, before calling B
			panic("before")
		}
		out := next(r)
		if stage == "A" && r.Data == 3 { // submitted 2, after A ran
			panic(etErrBoom)
		}
		return out
	}
	p := etNew[int](t, m, WithWorkers(1), WithMiddleware(mw))
	g := p.NewGroup(Ordered())
	const n = 15
	go etSubmitRange(t, g, n)
	res := etDrainWithin(t, g, 10*time.Second)
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	for i, r := range res {
		var pe *PanicError
		switch i {
		case 2, 11:
			stage, data := "A", 3
			if i == 11 {
				stage, data = "B", 22
			}
			if !errors.As(r.Err, &pe) || pe.Stage != stage {
				t.Errorf("%d: Err %v, want a *PanicError in stage %s", i, r.Err, stage)
			} else if r.Data != data {
				t.Errorf("%d: Data %d, want %d (as it entered the stage)", i, r.Data, data)
			}
			if i == 2 && !errors.Is(r.Err, etErrBoom) {
				t.Errorf("2: errors.Is does not see through the PanicError: %v", r.Err)
			}
		default:
			if r.Err != nil || r.Data != etWant(i) {
				t.Errorf("%d: Data %d Err %v", i, r.Data, r.Err)
			}
		}
	}
	p.Close()
	s := p.Stats()
	if s.Failed != 2 {
		t.Errorf("Failed %d, want 2", s.Failed)
	}
	if st := etStage(t, s, "A"); st.Errors != 1 || st.Runs != n {
		t.Errorf("stage A: %+v, want %d runs, 1 error", st, n)
	}
	if st := etStage(t, s, "B"); st.Errors != 1 || st.Runs != n-1 {
		t.Errorf("stage B: %+v, want %d runs, 1 error", st, n-1)
	}
	if got := m.runs[2].Load(); got != n-2 {
		t.Errorf("B's body ran %d times, want %d (not for 2, nor for 11 whose middleware panicked first)", got, n-2)
	}
}

func TestMiddlewareOrderAndNames(t *testing.T) {
	var (
		mu  sync.Mutex
		log []string
	)
	note := func(s string) {
		mu.Lock()
		log = append(log, s)
		mu.Unlock()
	}
	wrap := func(tag string) Middleware[int] {
		return func(stage string, r Request[int], next Stage[int]) Request[int] {
			note(tag + ">" + stage)
			r = next(r)
			note("<" + tag)
			if tag == "inner" && stage == "B" {
				r.Data += 1000 // a middleware may change the result
			}
			return r
		}
	}
	m := newEtM()
	m.onStart = func(m *etM, r Request[int]) Request[int] {
		note("Start")
		r = m.start(r)
		// A closure on the way: the middleware sees its function name.
		r.Next = func(r Request[int]) Request[int] { note("closure"); r.Next = m.a; return r }
		return r
	}
	m.onA = func(m *etM, r Request[int]) Request[int] { note("A"); return m.stageA(r) }
	m.onB = func(m *etM, r Request[int]) Request[int] { note("B"); return m.stageB(r) }
	// Two options: the second appends, innermost.
	p := etNew[int](t, m, WithWorkers(1), WithMiddleware(wrap("outer")), WithMiddleware(wrap("inner")))
	g := p.NewGroup()
	if err := g.Submit(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	g.Close()
	res := etDrainWithin(t, g, 10*time.Second)
	if len(res) != 1 || res[0].Data != 1111 || res[0].Err != nil {
		t.Fatalf("results %+v, want one with Data 1111", res)
	}
	p.Close()
	mu.Lock()
	defer mu.Unlock()
	var closureName string
	for _, e := range log {
		if name, ok := strings.CutPrefix(e, "outer>"); ok && strings.Contains(name, "func") {
			closureName = name
		}
	}
	if !strings.Contains(closureName, "TestMiddlewareOrderAndNames") {
		t.Errorf("the middleware saw the closure as %q, want its function name", closureName)
	}
	want := []string{
		"outer>Start", "inner>Start", "Start", "<inner", "<outer",
		"outer>" + closureName, "inner>" + closureName, "closure", "<inner", "<outer",
		"outer>A", "inner>A", "A", "<inner", "<outer",
		"outer>B", "inner>B", "B", "<inner", "<outer",
	}
	if !slices.Equal(log, want) {
		t.Errorf("calls:\n got %q\nwant %q", log, want)
	}
}

// etCyc routes by kind (Data % 100); Data / 100 counts the loops taken.
// kind 1: Start -> A -> B -> A ... (B loops back to A while loops < 3)
// kind 2: Start -> A -> B -> etLoop -> etLoop ... (while loops < 5)
// kind 3: Start -> B (a diamond: B reached by two paths, no cycle)
// kind 4: Start -> A -> B
type etCyc struct{ a, b Stage[int] }

func newEtCyc() *etCyc { m := &etCyc{}; m.a, m.b = m.A, m.B; return m }

func (m *etCyc) Start(r Request[int]) Request[int] {
	if r.Data%100 == 3 {
		r.Next = m.b
	} else {
		r.Next = m.a
	}
	return r
}
func (m *etCyc) A(r Request[int]) Request[int] { r.Next = m.b; return r }
func (m *etCyc) B(r Request[int]) Request[int] {
	switch r.Data % 100 {
	case 1:
		if r.Data/100 < 3 {
			r.Data += 100
			r.Next = m.a
		}
	case 2:
		r.Next = etLoop
	}
	return r
}
func (m *etCyc) Close() {}

// etLoop is a plain function used as a stage.
func etLoop(r Request[int]) Request[int] {
	r.Data += 100
	if r.Data/100 < 5 {
		r.Next = etLoop
	}
	return r
}

func TestDAGCycle(t *testing.T) {
	p := etNew[int](t, newEtCyc(), WithDAG(), WithWorkers(2))
	g := p.NewGroup(Ordered())
	for _, v := range []int{1, 2, 3, 4} {
		if err := g.Submit(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	res := etDrainWithin(t, g, 10*time.Second)
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	for i, want := range []struct {
		data  int
		stage string
		path  []string
	}{
		{101, "A", []string{"Start", "A", "B"}},
		{102, "etLoop", []string{"Start", "A", "B", "etLoop"}},
		{3, "", nil},
		{4, "", nil},
	} {
		r := res[i]
		if r.Data != want.data {
			t.Errorf("result %d: Data %d, want %d", i, r.Data, want.data)
		}
		if want.stage == "" {
			if r.Err != nil {
				t.Errorf("result %d: %v, want no error", i, r.Err)
			}
			continue
		}
		var ce *CycleError
		if !errors.As(r.Err, &ce) {
			t.Errorf("result %d: Err %v, want a *CycleError", i, r.Err)
			continue
		}
		if ce.Stage != want.stage || !slices.Equal(ce.Path, want.path) {
			t.Errorf("result %d: CycleError{%q, %q}, want {%q, %q}", i, ce.Stage, ce.Path, want.stage, want.path)
		}
		if msg := ce.Error(); !strings.Contains(msg, want.stage) || !strings.Contains(msg, strings.Join(want.path, " -> ")) {
			t.Errorf("result %d: Error() %q does not show the cycle", i, msg)
		}
	}
	p.Close()
	s := p.Stats()
	if s.Failed != 2 || s.Completed != 2 {
		t.Errorf("Failed %d Completed %d, want 2 2", s.Failed, s.Completed)
	}
	for name, runs := range map[string]uint64{"Start": 4, "A": 3, "B": 4, "etLoop": 1} {
		if st := etStage(t, s, name); st.Runs != runs || st.Errors != 0 {
			t.Errorf("stage %s: %+v, want %d runs, no error (the cycle is not the stage's)", name, st, runs)
		}
	}
}

// Without WithDAG, loops are legitimate.
func TestLoopWithoutDAG(t *testing.T) {
	p := etNew[int](t, newEtCyc(), WithWorkers(2))
	g := p.NewGroup(Ordered())
	for _, v := range []int{1, 2, 3, 4} {
		if err := g.Submit(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	res := etDrainWithin(t, g, 10*time.Second)
	want := []int{301, 502, 3, 4}
	if len(res) != len(want) {
		t.Fatalf("%d results, want %d", len(res), len(want))
	}
	for i, r := range res {
		if r.Err != nil || r.Data != want[i] {
			t.Errorf("result %d: Data %d Err %v, want %d", i, r.Data, r.Err, want[i])
		}
	}
	p.Close()
	s := p.Stats()
	for name, runs := range map[string]uint64{"Start": 4, "A": 6, "B": 7, "etLoop": 5} {
		if st := etStage(t, s, name); st.Runs != runs {
			t.Errorf("stage %s ran %d times, want %d", name, st.Runs, runs)
		}
	}
}

// ---------------------------------------------------------------------------
// Parking through the internal hook that the Batcher uses.

var etErrParked = errors.New("et: failed while parked")

// Park modes: what the resumer does with a parked request.
const (
	etNoPark     = iota // never parks: Start -> After
	etParkNext          // resumed with Next = After
	etParkFinish        // resumed with Next = nil, Data changed
	etParkFail          // resumed with Err set (and Next set, which must not run)
	etParkTwice         // resumed to After, which parks it again; then finished
	etParkCancel        // its context is cancelled while parked; resumed with Next = After
	etParkModes
)

type etParkJob struct {
	id, mode, v int
	cancel      context.CancelFunc
}

// etParkM parks requests the way a Batcher does: it takes them from the
// worker (etHandOff) and keeps them in a channel; the test resumes them
// from other goroutines.
type etParkM struct {
	after  Stage[etParkJob]
	parked chan Request[etParkJob]
}

func newEtParkM() *etParkM {
	m := &etParkM{parked: make(chan Request[etParkJob], 1024)}
	m.after = m.After
	return m
}

func (m *etParkM) Start(r Request[etParkJob]) Request[etParkJob] {
	r.Data.v++
	if r.Data.mode == etNoPark {
		r.Next = m.after
		return r
	}
	etHandOff(&r)
	m.parked <- r
	return r // ignored: the worker let go of r
}

func (m *etParkM) After(r Request[etParkJob]) Request[etParkJob] {
	r.Data.v += 10
	if r.Data.mode == etParkTwice && r.Data.v < 100 {
		r.Data.v += 100
		etHandOff(&r)
		m.parked <- r
		return Request[etParkJob]{} // ignored: the worker let go of r
	}
	return r
}

func (m *etParkM) Close() {}

// etResume does to a parked request what its mode says, and resumes it.
func (m *etParkM) etResume(r Request[etParkJob]) {
	switch r.Data.mode {
	case etParkNext:
		r.Next = m.after
	case etParkFinish:
		r.Next = nil
		r.Data.v += 1000
	case etParkFail:
		r.Next = m.after
		r.Err = etErrParked
	case etParkTwice:
		if r.Data.v < 100 {
			r.Next = m.after
		} else {
			r.Next = nil
			r.Data.v += 1000
		}
	case etParkCancel:
		r.Data.cancel()
		r.Next = m.after
	}
	etResumeParked(r)
}

// etParkWant is the result of a request of the given mode.
func etParkWant(mode int) (v int, err error) {
	switch mode {
	case etNoPark, etParkNext:
		return 11, nil
	case etParkFinish:
		return 1001, nil
	case etParkFail:
		return 1, etErrParked
	case etParkTwice:
		return 1111, nil
	case etParkCancel:
		return 1, context.Canceled
	}
	panic("unknown mode")
}

func TestParkAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newEtParkM()
		p := etNew[etParkJob](t, m, WithWorkers(3), WithMaxInFlight(32))
		groups := []*Group[etParkJob]{p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(7))}

		// The resumer: each parked request is resumed from its own
		// goroutine after a pause, so they resume out of order.
		resumerDone := make(chan struct{})
		var resumers sync.WaitGroup
		go func() {
			defer close(resumerDone)
			for r := range m.parked {
				resumers.Go(func() {
					time.Sleep(time.Duration(r.Data.id%7) * time.Millisecond)
					m.etResume(r)
				})
			}
		}()

		const perGroup = 120
		results := make([][]Request[etParkJob], len(groups))
		var wg sync.WaitGroup
		for gi, g := range groups {
			wg.Go(func() {
				for i := range perGroup {
					job := etParkJob{id: gi*perGroup + i, mode: i % etParkModes}
					ctx := context.Background()
					if job.mode == etParkCancel {
						ctx, job.cancel = context.WithCancel(ctx)
					}
					if err := g.Submit(ctx, job); err != nil {
						t.Errorf("Submit: %v", err)
					}
				}
				g.Close()
			})
			wg.Go(func() { results[gi] = etDrain(g) })
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
				v, err := etParkWant(r.Data.mode)
				if r.Data.v != v || !errors.Is(r.Err, err) || (err == nil && r.Err != nil) {
					t.Errorf("request %d (mode %d): v %d Err %v, want %d %v", id, r.Data.mode, r.Data.v, r.Err, v, err)
				}
			}
		}
		s := p.Stats()
		total := uint64(len(groups) * perGroup)
		perMode := total / etParkModes
		if s.Submitted != total || s.InFlight != 0 || s.Failed != 2*perMode {
			t.Errorf("Stats: Submitted %d InFlight %d Failed %d, want %d 0 %d", s.Submitted, s.InFlight, s.Failed, total, 2*perMode)
		}
		if st := etStage(t, s, "Start"); st.Runs != total || st.Errors != 0 {
			t.Errorf("Start: %+v, want %d runs and no error (parking is not an error)", st, total)
		}
		// After runs for NoPark, ParkNext and ParkTwice (once).
		if st := etStage(t, s, "After"); st.Runs != 3*perMode || st.Errors != 0 {
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
		m := newEtParkM()
		const bound = 4
		p := etNew[etParkJob](t, m, WithWorkers(2), WithMaxInFlight(bound))
		g, other := p.NewGroup(), p.NewGroup()
		for i := range bound {
			if err := g.Submit(context.Background(), etParkJob{id: i, mode: etParkFinish}); err != nil {
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
		extra := etSubmitAsync(other, context.Background(), etParkJob{id: bound, mode: etParkFinish})
		synctest.Wait()
		if err, done := etReturned(extra); done {
			t.Fatalf("Submit returned %v with the machine full of parked requests", err)
		}
		m.etResume(<-m.parked)
		synctest.Wait()
		if err, done := etReturned(extra); !done || err != nil {
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
		if err := g.Submit(context.Background(), etParkJob{mode: etParkFinish}); !errors.Is(err, ErrClosed) {
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
				m.etResume(r)
			}()
		}
		<-closed
		res := append(etDrain(g), etDrain(other)...)
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
		m := newEtParkM()
		mw := func(stage string, r Request[etParkJob], next Stage[etParkJob]) Request[etParkJob] {
			out := next(r)
			if stage == "Start" && r.Data.id == 1 {
				panic("middleware panics after the stage parked the request")
			}
			return out
		}
		p := etNew[etParkJob](t, m, WithWorkers(1), WithMiddleware(mw))
		g := p.NewGroup()
		if err := g.Submit(context.Background(), etParkJob{id: 1, mode: etParkFinish}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		parked := <-m.parked
		if r, ok, _ := etTryRecv(g); ok {
			// Resuming it now would deliver it a second time and
			// corrupt the in-flight counts, so leave it parked.
			t.Errorf("request delivered (Err %v) while its parker still holds it: resuming it would deliver it twice", r.Err)
			g.Close()
			p.Close()
			return
		}
		m.etResume(parked)
		g.Close()
		p.Close()
		if res := etDrain(g); len(res) != 1 {
			t.Errorf("%d results, want 1", len(res))
		}
	})
}
