package statepipe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestGroupResultsStayInTheirGroup(t *testing.T) {
	p := mustNew[int](t, newChainM(), WithWorkers(4), WithMaxInFlight(32))
	const groups, perGroup = 8, 300
	var wg sync.WaitGroup
	results := make([][]Request[int], groups)
	for gi := range groups {
		var opts []GroupOption
		if gi%2 == 1 {
			opts = append(opts, Ordered())
		}
		if gi%3 == 0 {
			opts = append(opts, MaxInFlight(1+gi))
		}
		g := p.NewGroup(opts...)
		wg.Go(func() {
			for i := range perGroup {
				if err := g.Submit(context.Background(), gi*1_000_000+i); err != nil {
					t.Errorf("group %d: Submit: %v", gi, err)
				}
			}
			g.Close()
		})
		wg.Go(func() { results[gi] = drainWithin(t, g, 20*time.Second) })
	}
	wg.Wait()
	for gi, res := range results {
		if len(res) != perGroup {
			t.Errorf("group %d: %d results, want %d", gi, len(res), perGroup)
		}
		seen := map[int]bool{}
		for k, r := range res {
			in := r.Data - 111
			if r.Err != nil || in/1_000_000 != gi {
				t.Errorf("group %d received %d (Err %v): another group's request", gi, r.Data, r.Err)
				continue
			}
			if seen[in] {
				t.Errorf("group %d: %d came out twice", gi, in)
			}
			seen[in] = true
			if gi%2 == 1 && in%1_000_000 != k {
				t.Errorf("ordered group %d: result %d is request %d", gi, k, in%1_000_000)
			}
		}
	}
	p.Close()
}

// A group whose consumer never reads blocks its own Submit, and only its own.
func TestGroupUnreadDoesNotStallOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newChainM()
		p := mustNew[int](t, m, WithWorkers(2), WithMaxInFlight(8))
		small := p.NewGroup(MaxInFlight(2)) // full after 2
		full := p.NewGroup()                // default bound: the machine's 8
		for i := range 2 {
			if err := small.Submit(context.Background(), i); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 8 {
			if err := full.Submit(context.Background(), 100+i); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		blocked := submitAsync(small, ctx, 2)
		synctest.Wait()
		if err, done := pollSubmit(blocked); done {
			t.Fatalf("Submit to a full group whose consumer does not read returned %v", err)
		}

		// Another group flows meanwhile, through the same workers.
		flow := p.NewGroup(MaxInFlight(3))
		go func() {
			for i := range 500 {
				if err := flow.Submit(context.Background(), 1000+i); err != nil {
					t.Errorf("flowing group: Submit: %v", err)
				}
			}
			flow.Close()
		}()
		res := drain(flow)
		if len(res) != 500 {
			t.Fatalf("the flowing group got %d results, want 500", len(res))
		}
		for _, r := range res {
			if r.Err != nil || r.Data < chainOut(1000) || r.Data >= chainOut(1500) {
				t.Errorf("flowing group got %d (Err %v)", r.Data, r.Err)
			}
		}

		time.Sleep(100 * time.Millisecond)
		if err, done := pollSubmit(blocked); done {
			t.Fatalf("Submit to a full group returned %v without its consumer reading", err)
		}
		cancel()
		synctest.Wait()
		if err, done := pollSubmit(blocked); !done || !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked Submit after its context was cancelled: returned %v, err %v; want context.Canceled", done, err)
		}
		small.Close()
		if err := small.Submit(context.Background(), 3); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Group.Close = %v, want ErrClosed", err)
		}

		// Close does not wait for the consumers; their results stay in Out.
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
		default:
			t.Fatal("Pipelines.Close waits for groups whose consumers do not read")
		}
		if res := drain(small); len(res) != 2 || res[0].Data+res[1].Data != chainOut(0)+chainOut(1) {
			t.Errorf("unread group yields %+v, want its 2 results", res)
		}
		if res := drain(full); len(res) != 8 {
			t.Errorf("unread full group yields %d results, want 8", len(res))
		}
	})
}

func TestGroupSubmitAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newChainM()
		p := mustNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		if err := g.Submit(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		g.Close()
		g.Close() // harmless
		if err := g.Submit(context.Background(), 2); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Group.Close = %v, want ErrClosed", err)
		}
		if res := drain(g); len(res) != 1 || res[0].Data != chainOut(1) {
			t.Errorf("closed group yields %+v, want the one request submitted before Close", res)
		}

		open := p.NewGroup(Ordered())
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := open.Submit(context.Background(), 3); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Pipelines.Close = %v, want ErrClosed", err)
		}
		if _, ok := <-open.Out(); ok {
			t.Error("a group left open is not closed by Pipelines.Close")
		}
		open.Close() // harmless after Pipelines.Close

		late := p.NewGroup(MaxInFlight(3))
		if err := late.Submit(context.Background(), 4); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit to a group made after Close = %v, want ErrClosed", err)
		}
		if _, ok := <-late.Out(); ok {
			t.Error("a group made after Close has an open Out")
		}
		late.Close()
		if n := m.closes.Load(); n != 1 {
			t.Errorf("sm.Close called %d times, want 1", n)
		}
		if s := p.Stats(); s.Submitted != 1 {
			t.Errorf("Submitted %d, want 1", s.Submitted)
		}
	})
}

func TestGroupOutClosesAfterLastResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		p := mustNew[int](t, gatedChainM(gate), WithWorkers(2))
		g := p.NewGroup()
		if err := g.Submit(context.Background(), gatedData); err != nil {
			t.Fatal(err)
		}
		g.Close() // returns at once, with the request inside
		synctest.Wait()
		if r, ok, closed := tryRecv(g); ok || closed {
			t.Fatalf("Out yields %+v (closed %v) while the request is inside", r, closed)
		}
		close(gate)
		synctest.Wait()
		r, ok, _ := tryRecv(g)
		if !ok || r.Data != chainOut(gatedData) {
			t.Fatalf("Out yields %+v, %v; want the result", r, ok)
		}
		if _, ok, closed := tryRecv(g); ok || !closed {
			t.Fatal("Out not closed after the last result")
		}
		p.Close()
	})
}

// Pipelines.Close never waits for consumers: groups that nobody reads keep
// their results, which come out after Close, and then Out closes.
func TestPipelinesCloseWithUnreadGroups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newChainM()
		p := mustNew[int](t, m, WithWorkers(3), WithMaxInFlight(64))
		groups := []*Group[int]{p.NewGroup(MaxInFlight(4)), p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(10))}
		bounds := []int{4, 64, 10}
		for gi, g := range groups {
			for i := range bounds[gi] {
				if err := g.Submit(context.Background(), gi*1000+i); err != nil {
					t.Fatal(err)
				}
			}
		}
		blocked := submitAsync(groups[0], context.Background(), 99)
		synctest.Wait()
		if err, done := pollSubmit(blocked); done {
			t.Fatalf("Submit to a full group returned %v", err)
		}
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
		default:
			t.Fatal("Close waits for consumers")
		}
		if err, done := pollSubmit(blocked); !done || !errors.Is(err, ErrClosed) {
			t.Errorf("blocked Submit after Close: returned %v, %v; want ErrClosed", done, err)
		}
		for gi, g := range groups {
			res := drain(g)
			if len(res) != bounds[gi] {
				t.Errorf("group %d yields %d results, want %d", gi, len(res), bounds[gi])
			}
			for i, r := range res {
				if r.Err != nil || (gi == 2 && r.Data != chainOut(gi*1000+i)) {
					t.Errorf("group %d result %d: %+v", gi, i, r)
				}
			}
		}
		if m.closes.Load() != 1 {
			t.Errorf("sm.Close called %d times", m.closes.Load())
		}
	})
}

func TestGroupMaxInFlightClamped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, newChainM(), WithWorkers(1), WithMaxInFlight(20))
		for i, c := range []struct {
			opts []GroupOption
			want int
		}{
			{nil, 20},
			{[]GroupOption{nil}, 20},
			{[]GroupOption{MaxInFlight(5)}, 5},
			{[]GroupOption{MaxInFlight(1)}, 1},
			{[]GroupOption{MaxInFlight(0)}, 1},
			{[]GroupOption{MaxInFlight(-4)}, 1},
			{[]GroupOption{MaxInFlight(20)}, 20},
			{[]GroupOption{MaxInFlight(1 << 40)}, 20},
			{[]GroupOption{MaxInFlight(3), Ordered(), MaxInFlight(7)}, 7},
		} {
			g := p.NewGroup(c.opts...)
			if got := g.stats().Limit; got != c.want {
				t.Errorf("case %d: bound %d, want %d", i, got, c.want)
			}
			// The bound is what Submit enforces: fill it, and one more
			// waits.
			for i := range c.want {
				if err := g.Submit(context.Background(), i); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := g.Submit(ctx, -1); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("case %d: Submit beyond the bound = %v, want to block", i, err)
			}
			cancel()
			g.Close()
			if res := drain(g); len(res) != c.want {
				t.Errorf("%d results, want %d", len(res), c.want)
			}
		}
		p.Close()
	})
}

// With a slow consumer, no group ever holds more than its bound admitted
// and not received, the machine never holds more than WithMaxInFlight, and
// no more stages run at once than there are workers.
func TestGroupBoundsWithSlowConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const machine, workers, items = 6, 4, 40
		m := newChainM()
		var inside, maxInside atomic.Int64 // from Start to the end of B: a part of "in the machine"
		m.onStart = func(m *chainM, r Request[int]) Request[int] {
			raiseMax(&maxInside, inside.Add(1))
			time.Sleep(time.Duration(r.Data%3) * time.Millisecond)
			return m.start(r)
		}
		m.onA = func(m *chainM, r Request[int]) Request[int] {
			time.Sleep(time.Duration(r.Data%5) * time.Millisecond)
			return m.stageA(r)
		}
		m.onB = func(m *chainM, r Request[int]) Request[int] {
			defer inside.Add(-1)
			return m.stageB(r)
		}
		p := mustNew[int](t, m, WithWorkers(workers), WithMaxInFlight(machine))
		bounds := []int{1, 3, machine, 2}
		groups := []*Group[int]{
			p.NewGroup(MaxInFlight(1)), p.NewGroup(MaxInFlight(3)), p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(2)),
		}
		accepted := make([]atomic.Int64, len(groups))
		for gi, g := range groups {
			go func() {
				for i := range items {
					if err := g.Submit(context.Background(), gi*1000+i); err != nil {
						t.Errorf("Submit: %v", err)
					}
					accepted[gi].Add(1)
				}
				g.Close()
			}()
		}
		received := make([]int64, len(groups))
		maxHeld := make([]int64, len(groups))
		open := len(groups)
		for step := 0; open > 0; step++ {
			// Every other goroutine is blocked: the counts are exact.
			synctest.Wait()
			for gi := range groups {
				held := accepted[gi].Load() - received[gi]
				if held > int64(bounds[gi]) {
					t.Fatalf("group %d: %d admitted and not received, bound %d", gi, held, bounds[gi])
				}
				maxHeld[gi] = max(maxHeld[gi], held)
			}
			if s := p.Stats(); s.InFlight > machine || s.InFlight < 0 {
				t.Fatalf("Stats().InFlight = %d, bound %d", s.InFlight, machine)
			}
			// The slow consumer: one result of one group per step.
			gi := step % len(groups)
			select {
			case r, ok := <-groups[gi].Out():
				if !ok {
					if received[gi] != items {
						t.Fatalf("group %d closed after %d results", gi, received[gi])
					}
					groups[gi] = &Group[int]{} // nil Out: never ready again
					open--
					continue
				}
				want := gi*1000 + int(received[gi])
				if r.Err != nil || (gi == 3 && r.Data != chainOut(want)) {
					t.Errorf("group %d: %+v", gi, r)
				}
				received[gi]++
			default:
			}
			time.Sleep(500 * time.Microsecond)
		}
		for gi, held := range maxHeld {
			if held != int64(bounds[gi]) {
				t.Errorf("group %d: at most %d admitted and not received, want its bound %d to be reached with a slow consumer", gi, held, bounds[gi])
			}
		}
		if got := maxInside.Load(); got > machine {
			t.Errorf("%d requests between Start and the end of B at once, bound %d", got, machine)
		}
		if got := m.maxActive.Load(); got > workers || got < 2 {
			t.Errorf("%d stages ran at once on %d workers", got, workers)
		}
		p.Close()
	})
}

// Ordered groups release in submission order whatever the latencies,
// errors and panics; unordered ones release as requests finish.
func TestOrderedGroupsRandomLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 300
		latency := func(v int) time.Duration { return time.Duration((v*7919)%13) * time.Millisecond }
		outcome := func(v int) (int, error) {
			switch {
			case v%17 == 5:
				return v + 11, errStage
			case v%19 == 7:
				return v + 1, &PanicError{Stage: "A"}
			}
			return chainOut(v), nil
		}
		newMachine := func() *chainM {
			m := newChainM()
			m.onA = func(m *chainM, r Request[int]) Request[int] {
				v := r.Data - 1
				time.Sleep(latency(v))
				if v%19 == 7 {
					panic(fmt.Sprint("panic ", v))
				}
				r = m.stageA(r)
				if v%17 == 5 {
					r.Err = errStage
				}
				return r
			}
			return m
		}
		check := func(t *testing.T, name string, res []Request[int], ordered bool) {
			t.Helper()
			if len(res) != n {
				t.Fatalf("%s: %d results, want %d", name, len(res), n)
			}
			inversions, prev := 0, -1
			seen := map[int]bool{}
			for i, r := range res {
				var pe *PanicError
				var v int
				switch {
				case r.Err == nil:
					v = r.Data - 111
				case errors.Is(r.Err, errStage):
					v = r.Data - 11
				case errors.As(r.Err, &pe) && pe.Stage == "A":
					v = r.Data - 1
				default:
					t.Fatalf("%s: result %d: unexpected error %v", name, i, r.Err)
				}
				if seen[v] {
					t.Errorf("%s: %d came out twice", name, v)
				}
				seen[v] = true
				if ordered && v != i {
					t.Fatalf("%s: result %d is request %d: not in submission order", name, i, v)
				}
				if v < prev {
					inversions++
				}
				prev = v
				data, err := outcome(v)
				gotPanic := pe != nil
				_, wantPanic := err.(*PanicError)
				if r.Data != data || gotPanic != wantPanic || (err == errStage) != errors.Is(r.Err, errStage) {
					t.Errorf("%s: request %d: Data %d Err %v, want %d %v", name, v, r.Data, r.Err, data, err)
				}
			}
			if !ordered && inversions == 0 {
				t.Errorf("%s: unordered group came out in submission order despite random latencies", name)
			}
		}
		run := func(p *Pipelines[int], opts ...GroupOption) []Request[int] {
			g := p.NewGroup(opts...)
			go func() {
				for i := range n {
					if err := g.Submit(context.Background(), i); err != nil {
						t.Errorf("Submit: %v", err)
					}
				}
				g.Close()
			}()
			return drain(g)
		}

		// Every group ordered, by WithOrdered.
		p1 := mustNew[int](t, newMachine(), WithWorkers(8), WithOrdered(), WithMaxInFlight(16))
		var wg sync.WaitGroup
		var r1, r2 []Request[int]
		wg.Go(func() { r1 = run(p1) })
		wg.Go(func() { r2 = run(p1, MaxInFlight(3)) })
		wg.Wait()
		check(t, "WithOrdered", r1, true)
		check(t, "WithOrdered, bound 3", r2, true)
		p1.Close()

		// Ordered by the group option, next to an unordered group.
		p2 := mustNew[int](t, newMachine(), WithWorkers(8), WithMaxInFlight(16))
		wg.Go(func() { r1 = run(p2, Ordered(), MaxInFlight(5)) })
		wg.Go(func() { r2 = run(p2) })
		wg.Wait()
		check(t, "Ordered()", r1, true)
		check(t, "unordered", r2, false)
		p2.Close()
	})
}
