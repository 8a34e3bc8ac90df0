package statepipe

// Helpers shared by the engine tests (engine_test.go, group_test.go,
// stress_test.go, fuzz_test.go, leak_test.go). Every name starts with "et"
// so that it cannot collide with the helpers of the other test files.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// etM is a three-stage machine, Start -> A -> B, adding 1, 10 and 100 to
// Data, so a request that went the whole way comes out as etWant(in).
// A test replaces a stage's body by setting its hook before New (the hooks
// are only read once the machine runs); a hook can call the default body
// (m.start, m.stageA, m.stageB). The machine counts its stage runs, the
// stages running right now, and calls of Close, and notes a stage that
// runs after Close or a Close that comes while a stage runs.
type etM struct {
	a, b Stage[int]

	onStart, onA, onB func(m *etM, r Request[int]) Request[int]

	runs        [3]atomic.Int64 // Start, A, B
	active      atomic.Int64    // stages running now
	maxActive   atomic.Int64
	closes      atomic.Int64
	lateStages  atomic.Int64 // stages entered after Close
	closeActive atomic.Int64 // stages running when Close was called
}

func newEtM() *etM {
	m := &etM{}
	m.a, m.b = m.A, m.B
	return m
}

func etWant(in int) int { return in + 111 }

func (m *etM) Start(r Request[int]) Request[int] { return m.run(0, r, m.onStart, m.start) }
func (m *etM) A(r Request[int]) Request[int]     { return m.run(1, r, m.onA, m.stageA) }
func (m *etM) B(r Request[int]) Request[int]     { return m.run(2, r, m.onB, m.stageB) }

func (m *etM) Close() {
	m.closeActive.Store(m.active.Load())
	m.closes.Add(1)
}

func (m *etM) start(r Request[int]) Request[int]  { r.Data += 1; r.Next = m.a; return r }
func (m *etM) stageA(r Request[int]) Request[int] { r.Data += 10; r.Next = m.b; return r }
func (m *etM) stageB(r Request[int]) Request[int] { r.Data += 100; return r }

func (m *etM) run(i int, r Request[int], hook func(*etM, Request[int]) Request[int], def func(Request[int]) Request[int]) Request[int] {
	if m.closes.Load() > 0 {
		m.lateStages.Add(1)
	}
	m.runs[i].Add(1)
	n := m.active.Add(1)
	defer m.active.Add(-1)
	etMax(&m.maxActive, n)
	if hook != nil {
		return hook(m, r)
	}
	return def(r)
}

// etMax raises *hi to n if n is larger.
func etMax(hi *atomic.Int64, n int64) {
	for {
		old := hi.Load()
		if n <= old || hi.CompareAndSwap(old, n) {
			return
		}
	}
}

// etNew is New that fails the test on error.
func etNew[T any](t testing.TB, sm StateMachine[T], opts ...Option) *Pipelines[T] {
	t.Helper()
	p, err := New(sm, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// etSubmitAsync runs Submit on its own goroutine; the channel gets its error.
func etSubmitAsync[T any](g *Group[T], ctx context.Context, data T) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- g.Submit(ctx, data) }()
	return errc
}

// etReturned reports whether the Submit behind errc has returned, and its
// error, without blocking.
func etReturned(errc <-chan error) (err error, returned bool) {
	select {
	case err = <-errc:
		return err, true
	default:
		return nil, false
	}
}

// etDrain receives from g's Out until it closes.
func etDrain[T any](g *Group[T]) []Request[T] {
	var out []Request[T]
	for r := range g.Out() {
		out = append(out, r)
	}
	return out
}

// etDrainWithin is etDrain for tests on real time: it fails the test
// instead of hanging if Out does not close within d.
func etDrainWithin[T any](t testing.TB, g *Group[T], d time.Duration) []Request[T] {
	t.Helper()
	var out []Request[T]
	timeout := time.After(d)
	for {
		select {
		case r, ok := <-g.Out():
			if !ok {
				return out
			}
			out = append(out, r)
		case <-timeout:
			t.Fatalf("Out did not close within %v (%d results received)", d, len(out))
			return out
		}
	}
}

// etTryRecv receives from g's Out without blocking.
func etTryRecv[T any](g *Group[T]) (r Request[T], ok, closed bool) {
	select {
	case r, open := <-g.Out():
		return r, open, !open
	default:
		return r, false, false
	}
}

// etStage returns the statistics of the stage called name.
func etStage(t testing.TB, s Stats, name string) StageStats {
	t.Helper()
	for _, st := range s.Stages {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no stage %q in Stats (have %+v)", name, s.Stages)
	return StageStats{}
}

// etWithin runs f and fails the test if it does not return within d (for
// tests on real time, where a hang would otherwise stall the whole suite).
func etWithin(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// etHandOff takes r from the worker running its stage, the way a Batcher
// parks a request: from then on the worker lets go of it, whatever the
// stage returns or does, and the caller must resume it exactly once with
// etResumeParked. All the engine tests park through here.
func etHandOff[T any](r *Request[T]) {
	rec, ok := r.take()
	if !ok {
		panic("etHandOff: not the request of the running stage call")
	}
	rec.park(r, firstBatchNode)
}

// etResumeParked resumes a request parked with etHandOff, as r says: at
// r.Next, or out if Next is nil or Err is set.
func etResumeParked[T any](r Request[T]) {
	rec := r.rec
	rec.req = r
	rec.p.resume(rec)
}

// etSubmitRange submits 0..n-1 to g in order, then closes g; run it in a
// goroutine of its own.
func etSubmitRange(t testing.TB, g *Group[int], n int) {
	for i := range n {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Error(err)
		}
	}
	g.Close()
}

// etSubmitN submits 0..n-1 to g in order, failing the test at once if a
// Submit fails.
func etSubmitN(t testing.TB, g *Group[int], n int) {
	t.Helper()
	for i := range n {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
}
