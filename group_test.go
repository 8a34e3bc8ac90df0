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

// etGated is the data value that etGatedM holds in Start until the gate
// closes.
const etGated = -1000

// etGatedM is an etM whose Start holds etGated until gate is closed.
func etGatedM(gate <-chan struct{}) *etM {
	m := newEtM()
	m.onStart = func(m *etM, r Request[int]) Request[int] {
		if r.Data == etGated {
			<-gate
		}
		return m.start(r)
	}
	return m
}

func TestGroupResultsStayInTheirGroup(t *testing.T) {
	p := etNew[int](t, newEtM(), WithWorkers(4), WithMaxInFlight(32))
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
		wg.Go(func() { results[gi] = etDrainWithin(t, g, 20*time.Second) })
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
		m := newEtM()
		p := etNew[int](t, m, WithWorkers(2), WithMaxInFlight(8))
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
		blocked := etSubmitAsync(small, ctx, 2)
		synctest.Wait()
		if err, done := etReturned(blocked); done {
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
		res := etDrain(flow)
		if len(res) != 500 {
			t.Fatalf("the flowing group got %d results, want 500", len(res))
		}
		for _, r := range res {
			if r.Err != nil || r.Data < etWant(1000) || r.Data >= etWant(1500) {
				t.Errorf("flowing group got %d (Err %v)", r.Data, r.Err)
			}
		}

		time.Sleep(100 * time.Millisecond)
		if err, done := etReturned(blocked); done {
			t.Fatalf("Submit to a full group returned %v without its consumer reading", err)
		}
		cancel()
		synctest.Wait()
		if err, done := etReturned(blocked); !done || !errors.Is(err, context.Canceled) {
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
		if res := etDrain(small); len(res) != 2 || res[0].Data+res[1].Data != etWant(0)+etWant(1) {
			t.Errorf("unread group yields %+v, want its 2 results", res)
		}
		if res := etDrain(full); len(res) != 8 {
			t.Errorf("unread full group yields %d results, want 8", len(res))
		}
	})
}

func TestGroupSubmitAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newEtM()
		p := etNew[int](t, m, WithWorkers(2))
		g := p.NewGroup()
		if err := g.Submit(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		g.Close()
		g.Close() // harmless
		if err := g.Submit(context.Background(), 2); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Group.Close = %v, want ErrClosed", err)
		}
		if res := etDrain(g); len(res) != 1 || res[0].Data != etWant(1) {
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

// A Submit blocked for backpressure returns as soon as its context ends,
// its group closes or the Pipelines close, wherever it waits.
func TestGroupBlockedSubmitUnblocks(t *testing.T) {
	blockers := []struct {
		name string
		// block fills what the Submit of 2 to g will wait for; it
		// returns the values that g will yield, and the group that
		// holds the machine (nil if none).
		machineBound int
		groupBound   int
		block        func(t *testing.T, p *Pipelines[int], g *Group[int]) (want []int, holder *Group[int])
	}{
		{
			name: "group bound, request inside", machineBound: 8, groupBound: 1,
			block: func(t *testing.T, p *Pipelines[int], g *Group[int]) ([]int, *Group[int]) {
				if err := g.Submit(context.Background(), etGated); err != nil {
					t.Fatal(err)
				}
				return []int{etWant(etGated)}, nil
			},
		},
		{
			name: "group bound, result unread", machineBound: 8, groupBound: 1,
			block: func(t *testing.T, p *Pipelines[int], g *Group[int]) ([]int, *Group[int]) {
				if err := g.Submit(context.Background(), 1); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if len(g.Out()) != 1 {
					t.Fatal("the result is not in Out")
				}
				return []int{etWant(1)}, nil
			},
		},
		{
			name: "machine bound", machineBound: 1, groupBound: 1,
			block: func(t *testing.T, p *Pipelines[int], g *Group[int]) ([]int, *Group[int]) {
				holder := p.NewGroup()
				if err := holder.Submit(context.Background(), etGated); err != nil {
					t.Fatal(err)
				}
				return nil, holder
			},
		},
	}
	unblockers := []struct {
		name string
		want error
	}{
		{"context cancelled", context.Canceled},
		{"group closed", ErrClosed},
		{"pipelines closed", ErrClosed},
	}
	for _, b := range blockers {
		for _, u := range unblockers {
			t.Run(b.name+"/"+u.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					gate := make(chan struct{})
					p := etNew[int](t, etGatedM(gate), WithWorkers(2), WithMaxInFlight(b.machineBound))
					g := p.NewGroup(MaxInFlight(b.groupBound))
					want, holder := b.block(t, p, g)
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					submitted := etSubmitAsync(g, ctx, 2)
					synctest.Wait()
					if err, done := etReturned(submitted); done {
						t.Fatalf("Submit did not block: returned %v", err)
					}

					var closed chan struct{}
					switch u.name {
					case "context cancelled":
						cancel()
					case "group closed":
						g.Close()
					case "pipelines closed":
						closed = make(chan struct{})
						go func() { p.Close(); close(closed) }()
					}
					synctest.Wait()
					err, done := etReturned(submitted)
					if !done {
						t.Errorf("Submit still blocked after the %s", u.name)
					} else if !errors.Is(err, u.want) {
						t.Errorf("Submit returned %v after the %s, want %v", err, u.name, u.want)
					}

					// Let everything finish, then account for every result.
					close(gate)
					if !done {
						err = <-submitted
					}
					if err == nil {
						want = append(want, etWant(2))
					}
					if closed != nil {
						<-closed
					} else {
						g.Close()
						p.Close()
					}
					got := etDrain(g)
					if len(got) != len(want) {
						t.Fatalf("group yields %d results (%+v), want %v", len(got), got, want)
					}
					for i, r := range got {
						if r.Err != nil || r.Data != want[i] {
							t.Errorf("result %d: Data %d Err %v, want %d", i, r.Data, r.Err, want[i])
						}
					}
					if holder != nil {
						if res := etDrain(holder); len(res) != 1 || res[0].Data != etWant(etGated) {
							t.Errorf("the holding group yields %+v", res)
						}
					}
				})
			})
		}
	}
}

// A Submit that gave up while waiting for room in the machine frees its
// place in the group; a Submit of the same group waiting for that place
// must get it.
func TestGroupPlaceFreedByCancelledSubmitIsTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		p := etNew[int](t, etGatedM(gate), WithWorkers(2), WithMaxInFlight(1))
		holder := p.NewGroup()
		if err := holder.Submit(context.Background(), etGated); err != nil { // fills the machine
			t.Fatal(err)
		}
		g := p.NewGroup(MaxInFlight(1))
		ctx1, cancel1 := context.WithCancel(context.Background())
		first := etSubmitAsync(g, ctx1, 1) // takes g's place, waits for the machine
		synctest.Wait()
		second := etSubmitAsync(g, context.Background(), 2) // waits for g's place
		synctest.Wait()
		if _, done := etReturned(first); done {
			t.Fatal("first Submit did not block")
		}
		if _, done := etReturned(second); done {
			t.Fatal("second Submit did not block")
		}
		cancel1()
		synctest.Wait()
		if err, done := etReturned(first); !done || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Submit: returned %v, %v", done, err)
		}
		close(gate) // the machine has room again
		if r := <-holder.Out(); r.Data != etWant(etGated) {
			t.Fatalf("holder got %+v", r)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		err, done := etReturned(second)
		if !done {
			t.Error("Submit stays blocked although its group and the machine have room: " +
				"the place freed by the cancelled Submit woke no one")
			g.Close()
			err = <-second
		}
		if err == nil {
			if r := <-g.Out(); r.Data != etWant(2) || r.Err != nil {
				t.Errorf("got %+v, want %d", r, etWant(2))
			}
		} else if done {
			t.Errorf("second Submit = %v, want nil", err)
		}
		g.Close()
		holder.Close()
		p.Close()
	})
}

// Room made by the consumer must let a blocked Submit in, even while
// another request of the group stays inside the machine (an unordered
// group has no head-of-line blocking).
func TestGroupSubmitSeesRoomMadeByConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		p := etNew[int](t, etGatedM(gate), WithWorkers(2), WithMaxInFlight(8))
		g := p.NewGroup(MaxInFlight(2))
		if err := g.Submit(context.Background(), etGated); err != nil { // stays inside
			t.Fatal(err)
		}
		if err := g.Submit(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // 1 is in Out: the group is full
		blocked := etSubmitAsync(g, context.Background(), 2)
		synctest.Wait()
		if err, done := etReturned(blocked); done {
			t.Fatalf("Submit to a full group returned %v", err)
		}
		if r := <-g.Out(); r.Data != etWant(1) {
			t.Fatalf("got %+v, want %d", r, etWant(1))
		}
		// One request admitted and not received, bound 2: there is room.
		time.Sleep(time.Second)
		synctest.Wait()
		err, done := etReturned(blocked)
		if !done {
			t.Error("Submit still blocked a second after the consumer made room in its group " +
				"(it waits for the group's next delivery, here the request held inside)")
		} else if err != nil {
			t.Errorf("Submit = %v, want nil", err)
		}
		close(gate)
		if !done {
			err = <-blocked
		}
		g.Close()
		res := etDrain(g)
		want := 1
		if err == nil {
			want = 2
		}
		if len(res) != want {
			t.Errorf("%d results, want %d", len(res), want)
		}
		p.Close()
	})
}

func TestGroupOutClosesAfterLastResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		p := etNew[int](t, etGatedM(gate), WithWorkers(2))
		g := p.NewGroup()
		if err := g.Submit(context.Background(), etGated); err != nil {
			t.Fatal(err)
		}
		g.Close() // returns at once, with the request inside
		synctest.Wait()
		if r, ok, closed := etTryRecv(g); ok || closed {
			t.Fatalf("Out yields %+v (closed %v) while the request is inside", r, closed)
		}
		close(gate)
		synctest.Wait()
		r, ok, _ := etTryRecv(g)
		if !ok || r.Data != etWant(etGated) {
			t.Fatalf("Out yields %+v, %v; want the result", r, ok)
		}
		if _, ok, closed := etTryRecv(g); ok || !closed {
			t.Fatal("Out not closed after the last result")
		}
		p.Close()
	})
}

// Pipelines.Close never waits for consumers: groups that nobody reads keep
// their results, which come out after Close, and then Out closes.
func TestPipelinesCloseWithUnreadGroups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newEtM()
		p := etNew[int](t, m, WithWorkers(3), WithMaxInFlight(64))
		groups := []*Group[int]{p.NewGroup(MaxInFlight(4)), p.NewGroup(), p.NewGroup(Ordered(), MaxInFlight(10))}
		bounds := []int{4, 64, 10}
		for gi, g := range groups {
			for i := range bounds[gi] {
				if err := g.Submit(context.Background(), gi*1000+i); err != nil {
					t.Fatal(err)
				}
			}
		}
		blocked := etSubmitAsync(groups[0], context.Background(), 99)
		synctest.Wait()
		if err, done := etReturned(blocked); done {
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
		if err, done := etReturned(blocked); !done || !errors.Is(err, ErrClosed) {
			t.Errorf("blocked Submit after Close: returned %v, %v; want ErrClosed", done, err)
		}
		for gi, g := range groups {
			res := etDrain(g)
			if len(res) != bounds[gi] {
				t.Errorf("group %d yields %d results, want %d", gi, len(res), bounds[gi])
			}
			for i, r := range res {
				if r.Err != nil || (gi == 2 && r.Data != etWant(gi*1000+i)) {
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
		p := etNew[int](t, newEtM(), WithWorkers(1), WithMaxInFlight(20))
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
			if res := etDrain(g); len(res) != c.want {
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
		m := newEtM()
		var inside, maxInside atomic.Int64 // from Start to the end of B: a part of "in the machine"
		m.onStart = func(m *etM, r Request[int]) Request[int] {
			etMax(&maxInside, inside.Add(1))
			time.Sleep(time.Duration(r.Data%3) * time.Millisecond)
			return m.start(r)
		}
		m.onA = func(m *etM, r Request[int]) Request[int] {
			time.Sleep(time.Duration(r.Data%5) * time.Millisecond)
			return m.stageA(r)
		}
		m.onB = func(m *etM, r Request[int]) Request[int] {
			defer inside.Add(-1)
			return m.stageB(r)
		}
		p := etNew[int](t, m, WithWorkers(workers), WithMaxInFlight(machine))
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
				if r.Err != nil || (gi == 3 && r.Data != etWant(want)) {
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
				return v + 11, etErrStage
			case v%19 == 7:
				return v + 1, &PanicError{Stage: "A"}
			}
			return etWant(v), nil
		}
		newMachine := func() *etM {
			m := newEtM()
			m.onA = func(m *etM, r Request[int]) Request[int] {
				v := r.Data - 1
				time.Sleep(latency(v))
				if v%19 == 7 {
					panic(fmt.Sprint("panic ", v))
				}
				r = m.stageA(r)
				if v%17 == 5 {
					r.Err = etErrStage
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
				case errors.Is(r.Err, etErrStage):
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
				if r.Data != data || gotPanic != wantPanic || (err == etErrStage) != errors.Is(r.Err, etErrStage) {
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
			return etDrain(g)
		}

		// Every group ordered, by WithOrdered.
		p1 := etNew[int](t, newMachine(), WithWorkers(8), WithOrdered(), WithMaxInFlight(16))
		var wg sync.WaitGroup
		var r1, r2 []Request[int]
		wg.Go(func() { r1 = run(p1) })
		wg.Go(func() { r2 = run(p1, MaxInFlight(3)) })
		wg.Wait()
		check(t, "WithOrdered", r1, true)
		check(t, "WithOrdered, bound 3", r2, true)
		p1.Close()

		// Ordered by the group option, next to an unordered group.
		p2 := etNew[int](t, newMachine(), WithWorkers(8), WithMaxInFlight(16))
		wg.Go(func() { r1 = run(p2, Ordered(), MaxInFlight(5)) })
		wg.Go(func() { r2 = run(p2) })
		wg.Wait()
		check(t, "Ordered()", r1, true)
		check(t, "unordered", r2, false)
		p2.Close()
	})
}

// A Submit that waits for room uses timers; a program (or a test suite)
// that runs Pipelines in several synctest bubbles, and outside them, must
// not share those timers between bubbles: operating a bubble's timer from
// outside it is a fatal error that no recover catches.
func TestBlockedSubmitInSeveralBubbles(t *testing.T) {
	wait := func(t *testing.T, timeout time.Duration) {
		p := etNew[int](t, newEtM(), WithWorkers(1))
		g := p.NewGroup(MaxInFlight(1))
		if err := g.Submit(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := g.Submit(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Submit to a full group = %v, want context.DeadlineExceeded", err)
		}
		g.Close()
		p.Close()
	}
	for i := range 3 {
		t.Run(fmt.Sprint("bubble", i), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { wait(t, time.Second) })
		})
	}
	t.Run("real time", func(t *testing.T) { wait(t, 20*time.Millisecond) })
}
