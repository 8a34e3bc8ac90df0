package statepipe

// Regression tests for the review findings fixed in "Fix review findings:
// hand-off, admission race, lost wake-ups, Goexit, stage names". Each test
// forces the interleaving that went wrong, with testing/synctest or with
// the package's internals, so that it fails every time the fault comes
// back. Every name starts with "rg" (or TestRegress) to stay clear of the
// helpers of the other test files.

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// rgM is a two-stage machine: Start runs the test's hook (by default it
// finishes the request), After adds 1000 to Data. With rgMark as flush, a
// request that went through the batcher and then After comes out as
// Data+1100.
type rgM struct {
	b     *Batcher[int]
	after Stage[int]
	start func(m *rgM, r Request[int]) Request[int]

	afterRuns atomic.Int64
}

func newRgM(b *Batcher[int], start func(m *rgM, r Request[int]) Request[int]) *rgM {
	m := &rgM{b: b, start: start}
	m.after = m.After
	return m
}

func (m *rgM) Start(r Request[int]) Request[int] {
	if m.start != nil {
		return m.start(m, r)
	}
	return r
}

func (m *rgM) After(r Request[int]) Request[int] {
	m.afterRuns.Add(1)
	r.Data += 1000
	return r
}

func (m *rgM) Close() {}

// rgPark is the usual batch stage: continue at After once flushed.
func rgPark(m *rgM, r Request[int]) Request[int] {
	r.Next = m.after
	return m.b.Add(r)
}

// rgMark is a flush that marks every element, so that a result shows
// whether it went through a flush (and through only one).
func rgMark(_ context.Context, batch []Request[int]) error {
	for i := range batch {
		batch[i].Data += 100
	}
	return nil
}

func rgNew(t *testing.T, m StateMachine[int], opts ...Option) *Pipelines[int] {
	t.Helper()
	p, err := New(m, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rgFullMachine returns Pipelines with room for one request, taken by a
// request of other that stays in its stage until gate is closed.
func rgFullMachine(t *testing.T) (p *Pipelines[int], other *Group[int], gate chan struct{}) {
	t.Helper()
	gate = make(chan struct{})
	m := newRgM(nil, func(m *rgM, r Request[int]) Request[int] {
		if r.Data < 0 {
			<-gate
		}
		return r
	})
	p = rgNew(t, m, WithWorkers(2), WithMaxInFlight(1))
	other = p.NewGroup()
	rgSubmit(t, other, context.Background(), -1)
	return p, other, gate
}

// rgDrain receives from g until Out closes. In a bubble its timeout fires
// only once every goroutine is blocked (after any batch linger), so a
// request that never comes out fails the test instead of hanging it.
func rgDrain(t *testing.T, g *Group[int]) []Request[int] {
	t.Helper()
	return etDrainWithin(t, g, 1000*time.Hour)
}

// rgOnce checks that every id in want came out exactly once and nothing
// else did, and returns the results by id.
func rgOnce(t *testing.T, out []Request[int], want ...int) map[int]Request[int] {
	t.Helper()
	byID := map[int]Request[int]{}
	count := map[int]int{}
	for _, r := range out {
		id := r.Data % 100 // the marks rgMark and After add are multiples of 100
		count[id]++
		byID[id] = r
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("request %d came out %d times, want once", id, count[id])
		}
		delete(count, id)
	}
	for id, n := range count {
		t.Errorf("request %d came out %d times, never submitted", id, n)
	}
	return byID
}

// rgSubmit submits or fails the test.
func rgSubmit(t *testing.T, g *Group[int], ctx context.Context, data int) {
	t.Helper()
	if err := g.Submit(ctx, data); err != nil {
		t.Fatalf("Submit(%d): %v", data, err)
	}
}

// rgStacks returns the stack of every goroutine, one string each.
func rgStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// rgGoroutinesIn counts the goroutines whose stack mentions fn.
func rgGoroutinesIn(fn string) int {
	n := 0
	for _, s := range rgStacks() {
		if strings.Contains(s, fn) {
			n++
		}
	}
	return n
}

// A stage that panics after handing its request to a batcher used to fail
// the request and deliver it, and the flush delivered it again: twice out,
// and a crash on the closed Out.
func TestRegressPanicAfterAdd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(rgMark, MaxWait(time.Hour))
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
			out := rgPark(m, r)
			if r.Data >= 0 {
				panic("stage panics after Add")
			}
			return out
		})
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		for i := range 4 {
			rgSubmit(t, g, context.Background(), i)
		}
		g.Close()
		got := rgOnce(t, rgDrain(t, g), 0, 1, 2, 3)
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
func TestRegressMiddlewarePanicAfterParkedNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw := func(stage string, r Request[int], next Stage[int]) Request[int] {
			out := next(r)
			if stage == "Start" {
				panic("middleware panics after next")
			}
			return out
		}
		b := NewBatcher(rgMark, MaxWait(time.Hour))
		m := newRgM(b, rgPark)
		p := rgNew(t, m, WithWorkers(2), WithMiddleware(mw))
		g := p.NewGroup()
		for i := range 4 {
			rgSubmit(t, g, context.Background(), i)
		}
		g.Close()
		for id, r := range rgOnce(t, rgDrain(t, g), 0, 1, 2, 3) {
			if r.Err != nil || r.Data != id+1100 {
				t.Errorf("request %d: Data %d, Err %v; want %d, nil", id, r.Data, r.Err, id+1100)
			}
		}
		p.Close()
	})
}

// Add called twice in one stage call parked the request twice: it was
// flushed and delivered twice. The second Add must take nothing and say so.
func TestRegressAddTwiceInOneStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var flushed atomic.Int64
		b := NewBatcher(func(ctx context.Context, batch []Request[int]) error {
			flushed.Add(int64(len(batch)))
			return rgMark(ctx, batch)
		}, MaxWait(time.Hour))
		var mu sync.Mutex
		var second []error
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
			r.Next = m.after
			m.b.Add(r)
			again := m.b.Add(r)
			mu.Lock()
			second = append(second, again.Err)
			mu.Unlock()
			return again // ignored: the first Add took the request
		})
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		for i := range 4 {
			rgSubmit(t, g, context.Background(), i)
		}
		g.Close()
		for id, r := range rgOnce(t, rgDrain(t, g), 0, 1, 2, 3) {
			if r.Err != nil || r.Data != id+1100 {
				t.Errorf("request %d: Data %d, Err %v; want %d, nil", id, r.Data, r.Err, id+1100)
			}
		}
		p.Close()
		if n := flushed.Load(); n != 4 {
			t.Errorf("flush saw %d elements for 4 requests", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(second) != 4 {
			t.Fatalf("Start ran %d times, want 4", len(second))
		}
		for _, err := range second {
			if !errors.Is(err, ErrNotRunning) {
				t.Errorf("second Add in one stage call: Err %v, want ErrNotRunning", err)
			}
		}
	})
}

// A stage doing b.Add(r); return r (the result of Add dropped) went on to
// After at once and came out, and the flush delivered it a second time.
// The request must wait for its flush and come out once.
func TestRegressAddThenReturnOriginal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		b := NewBatcher(func(ctx context.Context, batch []Request[int]) error {
			<-gate
			return rgMark(ctx, batch)
		}, MaxWait(time.Hour))
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
			r.Next = m.after
			m.b.Add(r)
			return r
		})
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 7)
		synctest.Wait() // parked; the flush waits for gate
		if n := len(g.Out()); n != 0 || m.afterRuns.Load() != 0 {
			t.Errorf("before its flush ended: %d results out, After ran %d times; want none", n, m.afterRuns.Load())
		}
		close(gate)
		g.Close()
		r := rgOnce(t, rgDrain(t, g), 7)[7]
		if r.Err != nil || r.Data != 7+1100 {
			t.Errorf("Data %d, Err %v; want %d, nil (flushed, then After)", r.Data, r.Err, 7+1100)
		}
		if n := m.afterRuns.Load(); n != 1 {
			t.Errorf("After ran %d times, want once", n)
		}
		p.Close()
	})
}

// rgAdmitAcrossDelivery takes a place in g the way Group.admit does, with
// deliver run between the reads admission makes: the results sent, and
// the output buffer.
func rgAdmitAcrossDelivery(g *Group[int], deliver func()) bool {
	g.betweenReads = deliver
	defer func() { g.betweenReads = nil }()
	a := g.admitted.Load()
	return g.heldAt(a) < g.limit && g.admitted.CompareAndSwap(a, a+1)
}

// Group admission read the output buffer and the pending count at two
// moments: a delivery in between (into the buffer, then out of the count)
// was missed, the group admitted one more than its buffer holds, and a
// worker then blocked delivering into the full Out, which hung Close.
func TestRegressGroupAdmissionAcrossDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		m := newRgM(nil, func(m *rgM, r Request[int]) Request[int] { <-gate; return r })
		p := rgNew(t, m, WithWorkers(1), WithMaxInFlight(4))
		g := p.NewGroup(MaxInFlight(1))
		rgSubmit(t, g, context.Background(), 1) // the group's one place, held inside the machine
		synctest.Wait()

		var once sync.Once
		deliver := func() {
			once.Do(func() {
				close(gate)
				synctest.Wait() // the result is in Out, its place uncounted
			})
		}
		if rgAdmitAcrossDelivery(g, deliver) {
			g.giveBack() // give the place back, so that the rest can run
			t.Errorf("admitted a second request to a group of one whose result sits unreceived in Out")
		}
		if held := g.heldAt(g.admitted.Load()); held > g.limit {
			t.Errorf("the group holds %d, more than its limit %d", held, g.limit)
		}

		// The place comes back when the consumer receives.
		if r := <-g.Out(); r.Data != 1 || r.Err != nil {
			t.Errorf("got Data %d, Err %v; want 1, nil", r.Data, r.Err)
		}
		rgSubmit(t, g, context.Background(), 2)
		g.Close()
		rgOnce(t, rgDrain(t, g), 2)
		p.Close()
	})
}

// A Submit whose machine admission failed (its context ended) gave its
// group place back without waking the Submit waiting for it, which then
// waited until its own context ended, with room in the group and the
// machine.
func TestRegressFailedMachineAdmissionWakesGroupWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, other, gate := rgFullMachine(t)
		g := p.NewGroup() // its limit is the machine's: 1

		ctxX, cancelX := context.WithCancel(context.Background())
		xerr := make(chan error, 1)
		go func() { xerr <- g.Submit(ctxX, 1) }() // takes g's place, waits for the machine
		synctest.Wait()
		ctxY, cancelY := context.WithCancel(context.Background())
		defer cancelY()
		yerr := make(chan error, 1)
		go func() { yerr <- g.Submit(ctxY, 2) }() // waits for g's place
		synctest.Wait()
		select {
		case err := <-yerr:
			t.Fatalf("Y returned %v while X held the group's only place", err)
		default:
		}

		start := time.Now()
		cancelX()
		if err := <-xerr; !errors.Is(err, context.Canceled) {
			t.Errorf("X: %v, want context.Canceled", err)
		}
		close(gate) // the machine has room again
		synctest.Wait()
		select {
		case err := <-yerr:
			if err != nil {
				t.Errorf("Y: %v, want nil", err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("Y admitted after %v: it was not woken, it polled", d)
			}
		default:
			t.Errorf("Y still blocked with room in its group and in the machine: the freed place woke nobody")
			cancelY()
			<-yerr
		}
		other.Close()
		g.Close()
		p.Close()
	})
}

// A Submit waiting on a full group waited for the next delivery of the
// group's requests, so room the consumer made by receiving went unseen for
// as long as a slow request stayed inside the machine.
func TestRegressGroupWaiterSeesRoomFromConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		m := newRgM(nil, func(m *rgM, r Request[int]) Request[int] {
			if r.Data == 2 {
				<-gate // the slow request
			}
			return r
		})
		p := rgNew(t, m, WithWorkers(2), WithMaxInFlight(16))
		g := p.NewGroup(MaxInFlight(2))
		rgSubmit(t, g, context.Background(), 1) // fast: waits in Out
		rgSubmit(t, g, context.Background(), 2) // slow: stays inside
		synctest.Wait()
		yerr := make(chan error, 1)
		go func() { yerr <- g.Submit(context.Background(), 3) }()
		synctest.Wait()
		select {
		case err := <-yerr:
			t.Fatalf("Submit on a full group returned %v", err)
		default:
		}

		if r := <-g.Out(); r.Data != 1 { // the consumer makes room
			t.Errorf("got %d first, want 1", r.Data)
		}
		time.Sleep(10 * time.Millisecond) // fake time; the slow request never ends meanwhile
		synctest.Wait()
		select {
		case err := <-yerr:
			if err != nil {
				t.Errorf("Submit: %v", err)
			}
			close(gate)
		default:
			t.Errorf("Submit still blocked 10ms after the consumer made room, behind the slow request")
			close(gate)
			<-yerr // returns once the slow request is out
		}
		g.Close()
		rgOnce(t, rgDrain(t, g), 2, 3)
		p.Close()
	})
}

// A batch whose only member was cancelled while it waited for a flush slot
// stayed queued, empty; the engine's idle check skipped pending batches
// because of it, and the next batch waited for MaxWait (an hour here).
func TestRegressCancelledReadyBatchDoesNotStrandNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var calls atomic.Int64
		b := NewBatcher(func(ctx context.Context, batch []Request[int]) error {
			if calls.Add(1) == 1 {
				<-gate // holds the only flush slot
			}
			return rgMark(ctx, batch)
		}, MaxWait(time.Hour), MaxFlushes(1), MaxBytes(10, func(d int) int {
			if d >= 50 {
				return 10 // flushes alone, at once
			}
			return 1
		}))
		m := newRgM(b, rgPark)
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		start := time.Now()
		rgSubmit(t, g, context.Background(), 60) // its flush holds the slot
		synctest.Wait()
		ctxA, cancelA := context.WithCancel(context.Background())
		defer cancelA()
		rgSubmit(t, g, ctxA, 61) // closed at once, waits for the slot
		synctest.Wait()
		cancelA() // empties the waiting batch
		synctest.Wait()
		if r := <-g.Out(); r.Data != 61 || !errors.Is(r.Err, context.Canceled) {
			t.Errorf("cancelled request: Data %d, Err %v; want 61, context.Canceled", r.Data, r.Err)
		}

		rgSubmit(t, g, context.Background(), 5) // lingers: MaxWait is an hour
		synctest.Wait()
		close(gate) // the slot frees, the engine goes idle: 5 must flush now
		synctest.Wait()
		got := map[int]Request[int]{}
		for len(g.Out()) > 0 {
			r := <-g.Out()
			got[r.Data%100] = r
		}
		if r, ok := got[5]; !ok {
			t.Errorf("request 5 still parked after the engine went idle; it would wait for MaxWait")
		} else if r.Err != nil || r.Data != 5+1100 {
			t.Errorf("request 5: Data %d, Err %v; want %d, nil", r.Data, r.Err, 5+1100)
		}
		if _, ok := got[60]; !ok {
			t.Errorf("request 60 not out after its flush ended")
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("took %v of fake time; nothing here should wait", d)
		}
		g.Close()
		rgDrain(t, g)
		p.Close()
	})
}

// Stats computed Completed as (out - failed) from two counters read at
// different moments: a worker publishing in between made it underflow to
// about 1<<64 in a run where every request fails. The window is two atomic
// loads wide and no hook reaches it, so this test races many publishing
// workers against Stats readers; it cannot fail where Completed only
// counts successes.
func TestRegressStatsCompletedNoUnderflow(t *testing.T) {
	errFail := errors.New("fail")
	m := newRgM(nil, func(m *rgM, r Request[int]) Request[int] { r.Err = errFail; return r })
	p := rgNew(t, m, WithWorkers(8))
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
		rgSubmit(t, g, context.Background(), i)
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

type rgSub struct{}

func (rgSub) Validate(r Request[int]) Request[int] { r.Data += 10; return r }

// rgDM's Validate hands over to the Validate of another type.
type rgDM struct {
	sub            rgSub
	validate, subV Stage[int]
}

func (m *rgDM) Start(r Request[int]) Request[int]    { r.Next = m.validate; return r }
func (m *rgDM) Validate(r Request[int]) Request[int] { r.Data++; r.Next = m.subV; return r }
func (m *rgDM) Close()                               {}

// Stages were told apart by short name, so m.sub.Validate shared the id of
// the machine's own Validate and WithDAG failed the request with a cycle
// that does not exist.
func TestRegressDAGSameNameOtherType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &rgDM{}
		m.validate, m.subV = m.Validate, m.sub.Validate
		p := rgNew(t, m, WithDAG(), WithWorkers(1))
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 0)
		g.Close()
		out := rgDrain(t, g)
		if len(out) != 1 {
			t.Fatalf("%d results, want 1", len(out))
		}
		if r := out[0]; r.Err != nil || r.Data != 11 {
			t.Errorf("Data %d, Err %v; want 11 (both Validates ran), nil", r.Data, r.Err)
		}
		p.Close()
		validates := 0
		for _, s := range p.Stats().Stages {
			if strings.HasSuffix(s.Name, "Validate") {
				validates++
				if s.Runs != 1 {
					t.Errorf("stage %q ran %d times, want 1: two functions share its id", s.Name, s.Runs)
				}
			}
		}
		if validates != 2 {
			t.Errorf("%d stages named *Validate in Stats, want 2 (the machine's and rgSub's)", validates)
		}
	})
}

// A stage calling runtime.Goexit (t.FailNow in a test stage, say) left
// nothing to recover: its request never came out, its worker was gone,
// and Close waited for the request forever.
func TestRegressGoexitInStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newRgM(nil, func(m *rgM, r Request[int]) Request[int] {
			if r.Data == 1 {
				runtime.Goexit()
			}
			return r
		})
		p := rgNew(t, m, WithWorkers(1)) // one worker: the second request needs its replacement
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 1)
		select {
		case r := <-g.Out():
			var pe *PanicError
			if !errors.As(r.Err, &pe) || !errors.Is(r.Err, errGoexit) || pe.Stage != "Start" {
				t.Errorf("Err %v; want a *PanicError of stage Start wrapping errGoexit", r.Err)
			}
		case <-time.After(time.Hour):
			t.Fatalf("the request whose stage called Goexit never came out")
		}
		rgSubmit(t, g, context.Background(), 2)
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

// A stage setting r.Ctx = nil crashed the engine, which read r.Ctx.Err()
// outside any stage. Passed to Batcher.Add, the request was parked and then
// failed by Add's panic, and its parked copy crashed the engine in turn.
func TestRegressStageSetsNilContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(rgMark, MaxWait(time.Hour))
		var ctxInAfter atomic.Int64 // After runs that saw a nil Ctx
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
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
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for i := range 4 {
			rgSubmit(t, g, ctx, i)
		}
		g.Close()
		for id, r := range rgOnce(t, rgDrain(t, g), 0, 1, 2, 3) {
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

// Group.Close did not wake a Submit of that group waiting for room in the
// machine: it stayed blocked until some other group's request finished.
func TestRegressGroupCloseUnblocksMachineWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, other, gate := rgFullMachine(t)
		g := p.NewGroup()
		errc := make(chan error, 1)
		go func() { errc <- g.Submit(context.Background(), 1) }()
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("Submit returned %v with the machine full", err)
		default:
		}
		g.Close()
		synctest.Wait()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Submit: %v, want ErrClosed", err)
			}
		default:
			t.Errorf("Submit still blocked after its group was closed")
			close(gate)
			<-errc
			gate = nil
		}
		if gate != nil {
			close(gate)
		}
		other.Close()
		rgOnce(t, rgDrain(t, other), -1)
		p.Close()
	})
}

// rgNoIdle is a parker that ignores the engine's idle calls and the
// start of Close: its batches wait for their deadline.
type rgNoIdle struct{ parker }

func (rgNoIdle) engineIdle()    {}
func (rgNoIdle) engineClosing() {}

// rgWaitingInEngineClosed reports whether Close is blocked in a batcher's
// engineClosed after the batcher's linger goroutine has gone: it is waiting for
// something else the batcher started.
func rgWaitingInEngineClosed() bool {
	waiting := false
	for _, s := range rgStacks() {
		if strings.Contains(s, "(*Batcher[...]).lingers(") {
			return false
		}
		header, _, _ := strings.Cut(s, "\n")
		if strings.Contains(s, "(*Batcher[...]).engineClosed(") && strings.Contains(header, "WaitGroup") {
			waiting = true
		}
	}
	return waiting
}

// The goroutine that context.AfterFunc starts for a parked request whose
// context ends was not joined: it could lose the race to the flush, still
// be waiting for the batcher's lock, and run after Close had returned.
// The test holds the lock itself and plays the dispatcher's step (close the
// batch, take its members), so the watcher is certain to be waiting.
func TestRegressCloseJoinsContextWatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gateA, gateR := make(chan struct{}), make(chan struct{})
		b := NewBatcher(rgMark, MaxWait(time.Hour))
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
			switch r.Data {
			case 1:
				<-gateA // keeps the engine busy, so batches linger
				return r
			case 2:
				<-gateR // parks once Close has begun
			}
			return rgPark(m, r)
		})
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 0) // binds the batcher
		if r := <-g.Out(); r.Data != 1100 || r.Err != nil {
			t.Fatalf("warm-up: Data %d, Err %v", r.Data, r.Err)
		}
		// From here on the batcher is not told that the workers are idle
		// or that Close begins: both take b.mu, which the test holds while
		// the requests finish.
		p.mu.Lock()
		p.parkers.Store(&[]parker{rgNoIdle{b}})
		p.mu.Unlock()
		rgSubmit(t, g, context.Background(), 1)
		ctxR, cancelR := context.WithCancel(context.Background())
		defer cancelR()
		rgSubmit(t, g, ctxR, 2)
		synctest.Wait()
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait() // Close waits for requests 1 and 2
		close(gateR)
		synctest.Wait() // 2 lingers in a batch; the linger goroutine sleeps

		b.mu.Lock()
		if b.pending.Len() != 1 {
			b.mu.Unlock()
			t.Fatalf("%d lingering batches, want 1", b.pending.Len())
		}
		cancelR() // its watcher starts and waits for b.mu
		bt, _ := b.pending.Pop()
		bt.closed = true
		b.index.del(bt)
		kept, cancelled := b.take(bt, nil)
		if len(kept) != 0 || len(cancelled) != 1 {
			t.Errorf("take kept %d members and failed %d; want 0 and the 1 whose watcher had fired", len(kept), len(cancelled))
		}
		for _, m := range cancelled { // as a runner does once b.mu is released
			b.p.resume(m.rec)
		}
		close(gateA)
		// Every request can now come out. Close must then wait for the
		// watcher, which needs b.mu.
		returned := false
		for i := 0; ; i++ {
			select {
			case <-closed:
				returned = true
			default:
			}
			if returned || rgWaitingInEngineClosed() {
				break
			}
			if i == 10_000 { // a few are enough; each looks at every stack
				stacks := strings.Join(rgStacks(), "\n\n")
				b.mu.Unlock()
				t.Fatalf("Close neither returned nor waited for the watcher:\n%s", stacks)
			}
			runtime.Gosched()
		}
		if returned {
			t.Errorf("Close returned while the watcher of a cancelled request was still running (%d goroutines in Batcher.cancel)",
				rgGoroutinesIn("(*Batcher[...]).cancel("))
		}
		b.mu.Unlock()
		<-closed
		if n := rgGoroutinesIn("(*Batcher[...]).cancel("); n != 0 {
			t.Errorf("%d watcher goroutines outlive Close", n)
		}
		got := rgOnce(t, rgDrain(t, g), 1, 2)
		if r := got[2]; !errors.Is(r.Err, context.Canceled) {
			t.Errorf("cancelled parked request: Err %v, want context.Canceled", r.Err)
		}
	})
}

// A Batcher first used after Close had begun was never told of the
// shutdown: its request lingered for MaxWait and its goroutine outlived
// Close.
func TestRegressBatcherFirstUsedDuringClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		b := NewBatcher(rgMark, MaxWait(time.Hour))
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
			<-gate
			return rgPark(m, r) // the batcher's first Add ever
		})
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		rgSubmit(t, g, context.Background(), 1)
		synctest.Wait()
		start := time.Now()
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait() // Close waits for the request
		close(gate)
		select {
		case <-closed:
		case <-time.After(time.Minute):
			t.Errorf("Close still waiting a minute later: the late batch lingers (MaxWait is an hour)")
			<-closed
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Close took %v of fake time", d)
		}
		if n := rgGoroutinesIn("(*Batcher[...]).lingers(") + rgGoroutinesIn("(*Batcher[...]).runner("); n != 0 {
			t.Errorf("%d batcher goroutines outlive Close", n)
		}
		r := rgOnce(t, rgDrain(t, g), 1)[1]
		if r.Err != nil || r.Data != 1+1100 {
			t.Errorf("Data %d, Err %v; want %d, nil", r.Data, r.Err, 1+1100)
		}
		if s := b.Stats(); s.Flushes[FlushShutdown] != 1 {
			t.Errorf("flushes by reason %v, want one at shutdown", s.Flushes)
		}
	})
}

// In a keyed batcher, a batch emptied by cancellation kept its key and its
// old place in the linger queue; refilled, it was queued again behind
// later keys, and the next key's batch waited past its MaxWait.
func TestRegressCancelledKeyedBatchKeepsLingerOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		b := NewBatcher(rgMark, MaxWait(10*time.Millisecond), BatchKey(func(d int) int { return d / 10 }))
		m := newRgM(b, func(m *rgM, r Request[int]) Request[int] {
			if r.Data < 0 {
				<-gate // keeps the engine busy: no idle flush
				return r
			}
			return rgPark(m, r)
		})
		p := rgNew(t, m, WithWorkers(2))
		g := p.NewGroup()
		start := time.Now()
		rgSubmit(t, g, context.Background(), -1)
		synctest.Wait() // busy before anything parks: no idle flush from here on
		ctxA, cancelA := context.WithCancel(context.Background())
		defer cancelA()
		rgSubmit(t, g, ctxA, 10) // key 1 at 0ms
		time.Sleep(time.Millisecond)
		rgSubmit(t, g, context.Background(), 20) // key 2 at 1ms: due at 11ms
		time.Sleep(time.Millisecond)
		cancelA() // key 1 empty at 2ms
		time.Sleep(3 * time.Millisecond)
		rgSubmit(t, g, context.Background(), 11) // key 1 again at 5ms: due at 15ms
		for range 3 {
			r := <-g.Out()
			switch r.Data % 100 {
			case 10:
				if !errors.Is(r.Err, context.Canceled) {
					t.Errorf("request 10: Err %v, want context.Canceled", r.Err)
				}
			case 20:
				if d := time.Since(start); d != 11*time.Millisecond {
					t.Errorf("key 2 flushed at %v, want at its MaxWait, 11ms", d)
				}
			}
		}
		close(gate)
		g.Close()
		rgOnce(t, rgDrain(t, g), -1)
		p.Close()
	})
}

// Requests were picked for timing by the group's pending count, so a
// caller submitting one request at a time (count always 1) was never
// timed: QueueTime and RunTime stayed empty.
func TestRegressTimingSampleOneAtATime(t *testing.T) {
	p := rgNew(t, newRgM(nil, nil), WithWorkers(2))
	g := p.NewGroup()
	const n = 8 * timingSample
	for i := range n {
		rgSubmit(t, g, context.Background(), i)
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

type rgCodeM struct{ n int }

func (m *rgCodeM) Ptr(r Request[int]) Request[int] { r.Data += m.n; return r }
func (m rgCodeM) Val(r Request[int]) Request[int]  { r.Data += m.n; return r }

type rgGenM[X any] struct{ x X }

func (m *rgGenM[X]) Ptr(r Request[int]) Request[int] { return r }
func (m rgGenM[X]) Val(r Request[int]) Request[int]  { return r }

func rgPlain(r Request[int]) Request[int] { return r }

//go:noinline
func rgReflectCode(fn Stage[int]) uintptr { return reflect.ValueOf(fn).Pointer() }

// Stage ids rest on codeOf reading a func value's code pointer through
// unsafe; this pins it to what reflect reports, for every kind of func a
// stage can be, and checks that one method's values share their code
// while different functions do not.
func TestRegressCodeOfMatchesReflect(t *testing.T) {
	m1, m2 := &rgCodeM{n: 1}, &rgCodeM{n: 2}
	g1, g2 := &rgGenM[string]{}, &rgGenM[int]{}
	k := 3
	closure := func(r Request[int]) Request[int] { r.Data += k; return r }
	fns := []struct {
		name string
		fn   Stage[int]
	}{
		{"pointer receiver", m1.Ptr},
		{"value receiver", m1.Val},
		{"generic pointer receiver", g1.Ptr},
		{"generic value receiver", g1.Val},
		{"closure", closure},
		{"plain func", rgPlain},
		{"closure over a method expression", func(r Request[int]) Request[int] { return (*rgCodeM).Ptr(m1, r) }},
	}
	seen := map[uintptr]string{}
	for _, f := range fns {
		got, want := codeOf(f.fn), rgReflectCode(f.fn)
		if got != want || got == 0 {
			t.Errorf("%s: codeOf %#x, reflect %#x", f.name, got, want)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("%s and %s share code %#x", f.name, other, got)
		}
		seen[got] = f.name
	}
	// Whether two instantiations share code is the compiler's choice (GC
	// shapes); codeOf must agree with reflect either way.
	if got, want := codeOf(g2.Ptr), rgReflectCode(g2.Ptr); got != want || got == 0 {
		t.Errorf("other instantiation: codeOf %#x, reflect %#x", got, want)
	}
	same := []struct {
		name string
		a, b Stage[int]
	}{
		{"pointer receiver", m1.Ptr, m2.Ptr},
		{"value receiver", m1.Val, m2.Val},
		{"generic pointer receiver", g1.Ptr, (&rgGenM[string]{x: "y"}).Ptr},
	}
	for _, s := range same {
		if a, b := codeOf(s.a), codeOf(s.b); a != b {
			t.Errorf("%s: two method values of one method have code %#x and %#x", s.name, a, b)
		}
	}
}

// Distinct functions that resolve to the same name (a package-level func
// named like a stage, two instances of a generic type's method) shared one
// stage id, so WithDAG failed their requests with a false cycle.
func TestRegressDAGDistinctFunctionsSameName(t *testing.T) {
	m := &rgSameNames{}
	p, err := New[int](m, WithDAG())
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	for i := range 2 {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	for r := range g.Out() {
		if r.Err != nil {
			t.Errorf("request %d: %v", r.Data, r.Err)
		}
	}
	p.Close()
	names := map[string]bool{}
	for _, s := range p.Stats().Stages {
		names[s.Name] = true
	}
	for _, want := range []string{"Validate", "Validate#2", "rgGen.Check", "rgGen.Check#2"} {
		if !names[want] {
			t.Errorf("no stage named %q in %v", want, names)
		}
	}
}

type rgGen[X any] struct{}

func (rgGen[X]) Check(r Request[int]) Request[int] { return r }

type rgSameNames struct{}

func (m *rgSameNames) Start(r Request[int]) Request[int] {
	if r.Data == 0 {
		r.Next = m.Validate // then the package-level Validate, then Check
	} else {
		r.Next = rgGen[int]{}.Check
	}
	return r
}

func (m *rgSameNames) Validate(r Request[int]) Request[int] {
	r.Next = Validate
	return r
}

func (m *rgSameNames) Close() {}

// Validate is a package-level function named like the machine's stage.
func Validate(r Request[int]) Request[int] {
	r.Next = rgGen[string]{}.Check
	return r
}
