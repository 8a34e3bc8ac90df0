package statepipe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// One request going wrong: contexts, stage errors, panics in stages and
// middleware, and cycles.

func TestSubmitNilContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newChainM()
		p := mustNew[int](t, m)
		g := p.NewGroup()
		if err := g.Submit(nil, 1); !errors.Is(err, ErrNilContext) {
			t.Errorf("Submit(nil ctx) = %v, want ErrNilContext", err)
		}
		g.Close()
		if res := drain(g); len(res) != 0 {
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
		m := newChainM()
		p := mustNew[int](t, m)
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
		if res := drain(g); len(res) != 0 {
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
		m := newChainM()
		m.onStart = func(m *chainM, r Request[int]) Request[int] {
			if r.Data == 10 {
				<-gate
			}
			return m.start(r)
		}
		// One worker: 20 and 30 wait in the queue while 10 is in Start.
		p := mustNew[int](t, m, WithWorkers(1))
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
		for _, r := range drain(g) {
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
		if st := stageStats(t, s, "Start"); st.Runs != 2 || st.Errors != 0 {
			t.Errorf("Start: %+v, want 2 runs and no error (a context error is not the stage's)", st)
		}
	})
}

// A stage setting r.Ctx = nil crashed the engine, which read r.Ctx.Err()
// outside any stage. Passed to Batcher.Add, the request was parked and then
// failed by Add's panic, and its parked copy crashed the engine in turn.
func TestNilContextFromAStageIsRestoredOrRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(markFlush, MaxWait(time.Hour))
		var ctxInAfter atomic.Int64 // After runs that saw a nil Ctx
		m := newHookM(b, func(m *hookM, r Request[int]) Request[int] {
			r.Ctx = nil
			r.Next = m.after
			if r.Data%2 == 1 {
				return m.b.Add(r)
			}
			return r
		})
		after := m.after
		m.after = func(r Request[int]) Request[int] {
			if r.Ctx == nil {
				ctxInAfter.Add(1)
			}
			return after(r)
		}
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for i := range 4 {
			mustSubmit(t, g, ctx, i)
		}
		g.Close()
		for id, r := range exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), 0, 1, 2, 3) {
			if r.Ctx != ctx {
				t.Errorf("request %d came out with Ctx %v, want the submitter's", id, r.Ctx)
			}
			switch {
			case id%2 == 0 && (r.Err != nil || r.Data != id+1000):
				t.Errorf("request %d: Data %d, Err %v; want %d, nil (Ctx restored, After ran)", id, r.Data, r.Err, id+1000)
			case id%2 == 1 && (!errors.Is(r.Err, ErrNilContext) || r.Data != id):
				t.Errorf("request %d: Data %d, Err %v; want %d, ErrNilContext (Add refused it)", id, r.Data, r.Err, id)
			}
		}
		if n := ctxInAfter.Load(); n != 0 {
			t.Errorf("After saw a nil Ctx %d times", n)
		}
		p.Close()
	})
}

var errStage = errors.New("stage failed")

func TestStageErrorEndsRequest(t *testing.T) {
	m := newChainM()
	m.onStart = func(m *chainM, r Request[int]) Request[int] {
		r = m.start(r)
		if r.Data == 8 { // submitted 7
			r.Err = fmt.Errorf("start: %w", errStage) // Next stays set: it must not run
		}
		return r
	}
	m.onA = func(m *chainM, r Request[int]) Request[int] {
		r = m.stageA(r)
		if r.Data == 16 { // submitted 5
			r.Err = errStage
		}
		return r
	}
	p := mustNew[int](t, m, WithWorkers(2))
	g := p.NewGroup(Ordered())
	const n = 20
	submitN(t, g, n)
	g.Close()
	res := drainWithin(t, g, 10*time.Second)
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	for i, r := range res {
		switch i {
		case 5:
			if r.Err != errStage || r.Data != 16 {
				t.Errorf("5: Data %d Err %v, want 16 and the stage's error", r.Data, r.Err)
			}
		case 7:
			if !errors.Is(r.Err, errStage) || r.Data != 8 {
				t.Errorf("7: Data %d Err %v, want 8 and the stage's error", r.Data, r.Err)
			}
		default:
			if r.Err != nil || r.Data != chainOut(i) {
				t.Errorf("%d: Data %d Err %v, want %d", i, r.Data, r.Err, chainOut(i))
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
		if st := stageStats(t, s, name); st.Runs != want.Runs || st.Errors != want.Errors {
			t.Errorf("stage %s: Runs %d Errors %d, want %d %d", name, st.Runs, st.Errors, want.Runs, want.Errors)
		}
	}
}

var errBoom = errors.New("boom")

func TestPanicInStage(t *testing.T) {
	m := newChainM()
	m.onA = func(m *chainM, r Request[int]) Request[int] {
		switch r.Data {
		case 2: // submitted 1
			panic("text")
		case 3:
			panic(fmt.Errorf("wrapped: %w", errBoom))
		case 4:
			var nilMap map[int]int
			nilMap[0] = 1 // a runtime error
		case 5:
			panic(nil) // a *runtime.PanicNilError since Go 1.21
		}
		return m.stageA(r)
	}
	// One worker: if a panic killed it, nothing after would come out.
	p := mustNew[int](t, m, WithWorkers(1))
	g := p.NewGroup(Ordered())
	const n = 30
	go submitNThenClose(t, g, n)
	res := drainWithin(t, g, 10*time.Second)
	if len(res) != n {
		t.Fatalf("%d results, want %d", len(res), n)
	}
	for i, r := range res {
		if i < 1 || i > 4 {
			if r.Err != nil || r.Data != chainOut(i) {
				t.Errorf("%d: Data %d Err %v, want %d and no error", i, r.Data, r.Err, chainOut(i))
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
		if !bytes.Contains(pe.Stack, []byte("(*chainM).A")) {
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
			if !errors.Is(r.Err, errBoom) {
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
	if res := drainWithin(t, g2, 10*time.Second); len(res) != 1 || res[0].Data != chainOut(100) {
		t.Errorf("after the panics: %+v", res)
	}
	p.Close()
	s := p.Stats()
	if s.Failed != 4 || s.Completed != n-4+1 || s.Workers != 1 {
		t.Errorf("Stats: Failed %d Completed %d Workers %d, want 4 %d 1", s.Failed, s.Completed, s.Workers, n-3)
	}
	if st := stageStats(t, s, "A"); st.Runs != n+1 || st.Errors != 4 {
		t.Errorf("stage A: %+v, want %d runs, 4 errors", st, n+1)
	}
	if st := stageStats(t, s, "B"); st.Runs != n-4+1 || st.Errors != 0 {
		t.Errorf("stage B: %+v, want %d runs", st, n-3)
	}
}

func TestPanicInMiddleware(t *testing.T) {
	m := newChainM()
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] {
		if stage == "B" && r.Data == 22 { // submitted 11, before calling B
			panic("before")
		}
		out := next(r)
		if stage == "A" && r.Data == 3 { // submitted 2, after A ran
			panic(errBoom)
		}
		return out
	}
	p := mustNew[int](t, m, WithWorkers(1), WithMiddleware(mw))
	g := p.NewGroup(Ordered())
	const n = 15
	go submitNThenClose(t, g, n)
	res := drainWithin(t, g, 10*time.Second)
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
			if i == 2 && !errors.Is(r.Err, errBoom) {
				t.Errorf("2: errors.Is does not see through the PanicError: %v", r.Err)
			}
		default:
			if r.Err != nil || r.Data != chainOut(i) {
				t.Errorf("%d: Data %d Err %v", i, r.Data, r.Err)
			}
		}
	}
	p.Close()
	s := p.Stats()
	if s.Failed != 2 {
		t.Errorf("Failed %d, want 2", s.Failed)
	}
	if st := stageStats(t, s, "A"); st.Errors != 1 || st.Runs != n {
		t.Errorf("stage A: %+v, want %d runs, 1 error", st, n)
	}
	if st := stageStats(t, s, "B"); st.Errors != 1 || st.Runs != n-1 {
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
	m := newChainM()
	m.onStart = func(m *chainM, r Request[int]) Request[int] {
		note("Start")
		r = m.start(r)
		// A closure on the way: the middleware sees its function name.
		r.Next = func(r Request[int]) Request[int] { note("closure"); r.Next = m.a; return r }
		return r
	}
	m.onA = func(m *chainM, r Request[int]) Request[int] { note("A"); return m.stageA(r) }
	m.onB = func(m *chainM, r Request[int]) Request[int] { note("B"); return m.stageB(r) }
	// Two options: the second appends, innermost.
	p := mustNew[int](t, m, WithWorkers(1), WithMiddleware(wrap("outer")), WithMiddleware(wrap("inner")))
	g := p.NewGroup()
	if err := g.Submit(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	g.Close()
	res := drainWithin(t, g, 10*time.Second)
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

// cycleM routes by kind (Data % 100); Data / 100 counts the loops taken.
// kind 1: Start -> A -> B -> A ... (B loops back to A while loops < 3)
// kind 2: Start -> A -> B -> loopBack -> loopBack ... (while loops < 5)
// kind 3: Start -> B (a diamond: B reached by two paths, no cycle)
// kind 4: Start -> A -> B
type cycleM struct{ a, b Stage[int] }

func newCycleM() *cycleM { m := &cycleM{}; m.a, m.b = m.A, m.B; return m }

func (m *cycleM) Start(r Request[int]) Request[int] {
	if r.Data%100 == 3 {
		r.Next = m.b
	} else {
		r.Next = m.a
	}
	return r
}
func (m *cycleM) A(r Request[int]) Request[int] { r.Next = m.b; return r }
func (m *cycleM) B(r Request[int]) Request[int] {
	switch r.Data % 100 {
	case 1:
		if r.Data/100 < 3 {
			r.Data += 100
			r.Next = m.a
		}
	case 2:
		r.Next = loopBack
	}
	return r
}
func (m *cycleM) Close() {}

// loopBack is a plain function used as a stage.
func loopBack(r Request[int]) Request[int] {
	r.Data += 100
	if r.Data/100 < 5 {
		r.Next = loopBack
	}
	return r
}

func TestDAGCycle(t *testing.T) {
	p := mustNew[int](t, newCycleM(), WithDAG(), WithWorkers(2))
	g := p.NewGroup(Ordered())
	for _, v := range []int{1, 2, 3, 4} {
		if err := g.Submit(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	res := drainWithin(t, g, 10*time.Second)
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	for i, want := range []struct {
		data  int
		stage string
		path  []string
	}{
		{101, "A", []string{"Start", "A", "B"}},
		{102, "loopBack", []string{"Start", "A", "B", "loopBack"}},
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
	for name, runs := range map[string]uint64{"Start": 4, "A": 3, "B": 4, "loopBack": 1} {
		if st := stageStats(t, s, name); st.Runs != runs || st.Errors != 0 {
			t.Errorf("stage %s: %+v, want %d runs, no error (the cycle is not the stage's)", name, st, runs)
		}
	}
}

// Without WithDAG, loops are legitimate.
func TestLoopWithoutDAG(t *testing.T) {
	p := mustNew[int](t, newCycleM(), WithWorkers(2))
	g := p.NewGroup(Ordered())
	for _, v := range []int{1, 2, 3, 4} {
		if err := g.Submit(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	res := drainWithin(t, g, 10*time.Second)
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
	for name, runs := range map[string]uint64{"Start": 4, "A": 6, "B": 7, "loopBack": 5} {
		if st := stageStats(t, s, name); st.Runs != runs {
			t.Errorf("stage %s ran %d times, want %d", name, st.Runs, runs)
		}
	}
}
