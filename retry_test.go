package statepipe

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

var errFlaky = errors.New("flaky")

// failingA returns a chainM whose stage A fails with fail(r) (nil: goes on)
// and records when each attempt ran, by request.
func failingA(fail func(r Request[int]) error) (*chainM, *attemptLog) {
	m := newChainM()
	log := &attemptLog{at: map[int][]time.Duration{}, t0: time.Now()}
	m.onA = func(m *chainM, r Request[int]) Request[int] {
		log.note(r.Data-1, r.Attempt())
		if err := fail(r); err != nil {
			r.Err = err
			return r
		}
		return m.stageA(r)
	}
	return m, log
}

// attemptLog records when each attempt of a request's stage ran, since t0.
type attemptLog struct {
	mu       sync.Mutex
	t0       time.Time
	at       map[int][]time.Duration
	attempts []int // every Attempt() seen, in order
}

func (l *attemptLog) note(id, attempt int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at[id] = append(l.at[id], time.Since(l.t0))
	l.attempts = append(l.attempts, attempt)
}

func (l *attemptLog) times(id int) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.at[id])
}

func TestRetryWaitsTheBackoffExactlyWithoutJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(r Request[int]) error {
			if r.Attempt() < 4 {
				return Retry(errFlaky)
			}
			return nil
		})
		p := mustNew[int](t, m, WithRetry(Backoff{Attempts: 5, Initial: 100 * time.Millisecond, Multiplier: 3, Max: 500 * time.Millisecond}))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()

		if len(out) != 1 || out[0].Err != nil || out[0].Data != chainOut(0) {
			t.Fatalf("results %+v: want one success", out)
		}
		// 100ms, then 300ms, then 900ms capped at 500ms.
		want := []time.Duration{0, 100 * time.Millisecond, 400 * time.Millisecond, 900 * time.Millisecond}
		if got := log.times(0); !slices.Equal(got, want) {
			t.Errorf("attempts at %v, want %v", got, want)
		}
		if !slices.Equal(log.attempts, []int{1, 2, 3, 4}) {
			t.Errorf("Attempt() saw %v, want 1 2 3 4", log.attempts)
		}
		s := p.Stats()
		if a := stageStats(t, s, "A"); a.Runs != 4 || a.Errors != 3 || a.Retries != 3 {
			t.Errorf("stage A: %d runs, %d errors, %d retries; want 4, 3, 3", a.Runs, a.Errors, a.Retries)
		}
		if s.Retrying != 0 || s.InFlight != 0 {
			t.Errorf("after Close: %d retrying, %d in flight", s.Retrying, s.InFlight)
		}
	})
}

func TestRetryAfterWaitsAtLeastWhatTheServiceAsked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(r Request[int]) error {
			if r.Attempt() == 1 {
				return RetryAfter(errFlaky, 5*time.Second) // above the policy's Max
			}
			return nil
		})
		p := mustNew[int](t, m, WithRetry(Backoff{Initial: 10 * time.Millisecond, Max: time.Second}))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		drainWithin(t, g, time.Hour)
		p.Close()
		if got := log.times(0); !slices.Equal(got, []time.Duration{0, 5 * time.Second}) {
			t.Errorf("attempts at %v, want [0 5s]", got)
		}
	})
}

func TestRetryJitterShortensWaitsWithinItsShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(r Request[int]) error {
			if r.Attempt() == 1 {
				return Retry(errFlaky)
			}
			return nil
		})
		p := mustNew[int](t, m, WithRetry(Backoff{Initial: time.Second, Jitter: 0.5}))
		g := p.NewGroup()
		const n = 50
		submitN(t, g, n)
		g.Close()
		drainWithin(t, g, time.Hour)
		p.Close()
		distinct := map[time.Duration]bool{}
		for id := range n {
			at := log.times(id)
			if len(at) != 2 {
				t.Fatalf("request %d: attempts at %v, want two", id, at)
			}
			wait := at[1] - at[0]
			if wait < 500*time.Millisecond || wait > time.Second {
				t.Errorf("request %d waited %v: want between 500ms and 1s", id, wait)
			}
			distinct[wait] = true
		}
		if len(distinct) < n/2 {
			t.Errorf("%d requests waited only %d distinct times: jitter is not random", n, len(distinct))
		}
	})
}

func TestRetryGivesUpWithARetryErrorReachingTheCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(Request[int]) error { return Retry(errFlaky) })
		p := mustNew[int](t, m, WithRetry(Backoff{Attempts: 3, Initial: time.Millisecond}))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()

		var re *RetryError
		if len(out) != 1 || !errors.As(out[0].Err, &re) {
			t.Fatalf("results %+v: want one *RetryError", out)
		}
		if re.Stage != "A" || re.Attempts != 3 || re.Err != errFlaky {
			t.Errorf("RetryError %+v: want stage A, 3 attempts, the unmarked cause", re)
		}
		if !errors.Is(out[0].Err, errFlaky) {
			t.Error("errors.Is does not reach the cause")
		}
		if got := len(log.times(0)); got != 3 {
			t.Errorf("%d attempts, want 3", got)
		}
	})
}

func TestUnmarkedErrorIsNeverRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(Request[int]) error { return errFlaky })
		p := mustNew[int](t, m)
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		if len(out) != 1 || out[0].Err != errFlaky {
			t.Fatalf("results %+v: want the error as it was", out)
		}
		if got := len(log.times(0)); got != 1 {
			t.Errorf("%d attempts, want 1", got)
		}
	})
}

func TestDefaultPolicyRetriesThreeTimesWithJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(Request[int]) error { return Retry(errFlaky) })
		p := mustNew[int](t, m)
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		at := log.times(0)
		if len(at) != 3 || !errors.As(out[0].Err, new(*RetryError)) {
			t.Fatalf("attempts at %v, result %v: want 3 attempts and a RetryError", at, out[0].Err)
		}
		// 100ms and 200ms, less up to 20%.
		if w := at[1] - at[0]; w < 80*time.Millisecond || w > 100*time.Millisecond {
			t.Errorf("first wait %v, want 80..100ms", w)
		}
		if w := at[2] - at[1]; w < 160*time.Millisecond || w > 200*time.Millisecond {
			t.Errorf("second wait %v, want 160..200ms", w)
		}
	})
}

// A request waiting out a backoff must not hold its worker: with one
// worker, a request in a 1s backoff lets 100 others through meanwhile.
func TestRetryWaitHoldsNoWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := failingA(func(r Request[int]) error {
			if r.Data-1 == 0 && r.Attempt() == 1 {
				return Retry(errFlaky)
			}
			return nil
		})
		p := mustNew[int](t, m, WithWorkers(1), WithRetry(Backoff{Initial: time.Second}))
		g := p.NewGroup(Ordered()) // ordered: the retried one would hold back the others
		g2 := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		synctest.Wait()
		if s := p.Stats(); s.Retrying != 1 || s.InFlight != 1 || s.Running != 0 {
			t.Fatalf("while waiting: %d retrying, %d in flight, %d running; want 1, 1, 0", s.Retrying, s.InFlight, s.Running)
		}
		t0 := time.Now()
		for i := 1; i <= 100; i++ {
			mustSubmit(t, g2, context.Background(), i)
		}
		g2.Close()
		if got := len(drainWithin(t, g2, time.Hour)); got != 100 || time.Since(t0) != 0 {
			t.Fatalf("%d others out after %v, want 100 at once", got, time.Since(t0))
		}
		g.Close()
		out := drainWithin(t, g, time.Hour)
		if len(out) != 1 || out[0].Err != nil || time.Since(t0) != time.Second {
			t.Errorf("retried request: %+v after %v; want success after 1s", out, time.Since(t0))
		}
		p.Close()
	})
}

func TestCancelDuringBackoffLeavesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, log := failingA(func(Request[int]) error { return Retry(errFlaky) })
		p := mustNew[int](t, m, WithRetry(Backoff{Initial: time.Hour, Attempts: 10}))
		g := p.NewGroup()
		ctx, cancel := context.WithCancel(context.Background())
		mustSubmit(t, g, ctx, 0)
		time.Sleep(50 * time.Millisecond)
		cancel()
		t0 := time.Now()
		g.Close()
		out := drainWithin(t, g, 1000*time.Hour)
		if len(out) != 1 || !errors.Is(out[0].Err, context.Canceled) || time.Since(t0) != 0 {
			t.Fatalf("results %+v after %v: want context.Canceled at once", out, time.Since(t0))
		}
		if n := len(log.times(0)); n != 1 {
			t.Errorf("%d attempts, want 1", n)
		}
		p.Close()
		if s := p.Stats(); s.Retrying != 0 || s.InFlight != 0 {
			t.Errorf("after Close: %d retrying, %d in flight", s.Retrying, s.InFlight)
		}
	})
}

// Close lets requests inside finish, a backoff included; no goroutine of
// the retries outlives it (the bubble would report it).
func TestCloseWaitsForBackoffs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := failingA(func(r Request[int]) error {
			if r.Attempt() == 1 {
				return Retry(errFlaky)
			}
			return nil
		})
		p := mustNew[int](t, m, WithRetry(Backoff{Initial: 3 * time.Second}))
		g := p.NewGroup(MaxInFlight(16))
		submitN(t, g, 10)
		t0 := time.Now()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if time.Since(t0) != 3*time.Second {
			t.Errorf("Close returned after %v, want 3s (the backoff)", time.Since(t0))
		}
		out := drain(g)
		exactlyOnceInts(t, out, 10)
		for _, r := range out {
			if r.Err != nil {
				t.Errorf("request %d: %v", r.Data, r.Err)
			}
		}
	})
}

// A retry runs the same stage again: it is not a cycle for WithDAG.
func TestRetryIsNotACycleUnderDAG(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := failingA(func(r Request[int]) error {
			if r.Attempt() < 3 {
				return Retry(errFlaky)
			}
			return nil
		})
		p := mustNew[int](t, m, WithDAG(), WithRetry(Backoff{Initial: time.Millisecond}))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		if len(out) != 1 || out[0].Err != nil {
			t.Fatalf("results %+v: want success", out)
		}
		// No edge A -> A in the graph either.
		if strings.Contains(p.Graph().DOT(), `"A" -> "A"`) {
			t.Errorf("graph has a self-edge for the retry:\n%s", p.Graph().DOT())
		}
	})
}

// Attempt counts per stage: a stage after a retried one starts at 1.
func TestAttemptStartsOverAtTheNextStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := failingA(func(r Request[int]) error {
			if r.Attempt() == 1 {
				return Retry(errFlaky)
			}
			return nil
		})
		var inB []int
		m.onB = func(m *chainM, r Request[int]) Request[int] {
			inB = append(inB, r.Attempt())
			return m.stageB(r)
		}
		p := mustNew[int](t, m, WithWorkers(1), WithRetry(Backoff{Initial: time.Millisecond}))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		drainWithin(t, g, time.Hour)
		p.Close()
		if !slices.Equal(inB, []int{1}) {
			t.Errorf("Attempt() in B: %v, want [1]", inB)
		}
		if (Request[int]{}).Attempt() != 0 {
			t.Error("Attempt of a Request outside the machine is not 0")
		}
	})
}

func TestRetryEventsReachTheObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := failingA(func(r Request[int]) error {
			if r.Attempt() < 3 {
				return Retry(errFlaky)
			}
			return nil
		})
		var mu sync.Mutex
		var evs []Event
		obs := ObserverFunc(func(e Event) {
			if e.Kind == Retrying {
				mu.Lock()
				evs = append(evs, e)
				mu.Unlock()
			}
		})
		p := mustNew[int](t, m, WithObserver(obs), WithRetry(Backoff{Initial: 10 * time.Millisecond}))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		drainWithin(t, g, time.Hour)
		p.Close()
		if len(evs) != 2 {
			t.Fatalf("%d Retrying events, want 2", len(evs))
		}
		for i, e := range evs {
			if e.Stage != "A" || e.Attempt != i+1 || e.Duration != 10*time.Millisecond<<i || !errors.Is(e.Err, errFlaky) {
				t.Errorf("event %d: %+v", i, e)
			}
		}
		if Retrying.String() != "Retrying" {
			t.Errorf("Retrying.String() = %q", Retrying.String())
		}
	})
}

func TestWithRetryRejectsBadPolicies(t *testing.T) {
	for _, b := range []Backoff{
		{Attempts: -1},
		{Initial: -time.Second},
		{Max: -time.Second},
		{Initial: time.Second, Max: time.Millisecond},
		{Multiplier: 0.5},
		{Multiplier: -2},
		{Jitter: 1.5},
		{Jitter: -0.1},
	} {
		_, err := New[int](newChainM(), WithRetry(b))
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithRetry") {
			t.Errorf("WithRetry(%+v): New returned %v, want an ErrInvalidOption naming WithRetry", b, err)
		}
	}
	p, err := New[int](newChainM(), WithRetry(Backoff{Initial: time.Minute}))
	if err != nil {
		t.Fatalf("Initial above the default Max: %v", err)
	}
	if got := p.cfg.backoff.Max; got != time.Minute {
		t.Errorf("Max defaulted to %v below Initial 1m", got)
	}
	p.Close()
}

// A flush that reports per-item "try again" retries just those items, in a
// later batch; the rest go on at once.
func TestFlushRetriesOnlyTheMarkedMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var batches [][]int
		b := NewBatcher(func(_ context.Context, batch []Request[int]) error {
			mu.Lock()
			defer mu.Unlock()
			var ids []int
			for i := range batch {
				ids = append(ids, batch[i].Data)
				if batch[i].Data%4 == 0 && batch[i].Attempt() == 1 {
					batch[i].Err = Retry(errFlaky) // a 429 for this item
					continue
				}
				batch[i].Data += 100
			}
			batches = append(batches, ids)
			return nil
		}, MaxItems(12), MaxWait(time.Millisecond))
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithRetry(Backoff{Initial: 50 * time.Millisecond}))
		g := p.NewGroup()
		submitN(t, g, 12)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()

		exactlyOnce(t, out, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
		for _, r := range out {
			if r.Err != nil || r.Data < 1100 {
				t.Errorf("request %d: %v, want flushed and After", r.Data%100, r.Err)
			}
		}
		// The retried ones rejoin in the order they had in their batch.
		var marked []int
		for _, id := range batches[0] {
			if id%4 == 0 {
				marked = append(marked, id)
			}
		}
		if len(batches) != 2 || len(batches[0]) != 12 || !slices.Equal(batches[1], marked) {
			t.Errorf("batches %v: want all 12, then %v", batches, marked)
		}
		if bs := p.Stats().Batchers[0]; bs.Retries != 3 || bs.Items != 15 {
			t.Errorf("batcher stats: %d retries, %d items; want 3, 15", bs.Retries, bs.Items)
		}
	})
}

// A flush that fails as a whole with a marked error retries every member
// without an error of its own; a member's own unmarked error stays.
func TestFlushMarkedErrorRetriesMembersWithoutTheirOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		errOwn := errors.New("bad item")
		b := NewBatcher(func(_ context.Context, batch []Request[int]) error {
			if calls.Add(1) == 1 {
				batch[0].Err = errOwn
				return Retry(errFlaky) // the service was down
			}
			for i := range batch {
				batch[i].Data += 100
			}
			return nil
		}, MaxItems(5), MaxWait(time.Millisecond))
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithRetry(Backoff{Initial: 50 * time.Millisecond}), WithOrdered())
		g := p.NewGroup()
		submitN(t, g, 5)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		if len(out) != 5 || out[0].Err != errOwn {
			t.Fatalf("results %+v: want 5, the first with its own error", out)
		}
		for _, r := range out[1:] {
			if r.Err != nil || r.Data < 1100 {
				t.Errorf("request %d: %v, want retried, flushed and After", r.Data%100, r.Err)
			}
		}
		if calls.Load() != 2 {
			t.Errorf("%d flushes, want 2", calls.Load())
		}
	})
}

// A flush member whose retries run out comes out with a RetryError naming
// the batcher.
func TestFlushRetriesRunOutWithTheBatchersName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(func(_ context.Context, batch []Request[int]) error {
			return Retry(errFlaky)
		}, MaxItems(2), BatchName("bulk"))
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithRetry(Backoff{Attempts: 2, Initial: time.Millisecond}))
		g := p.NewGroup()
		submitN(t, g, 2)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		for _, r := range out {
			var re *RetryError
			if !errors.As(r.Err, &re) || re.Stage != "bulk" || re.Attempts != 2 {
				t.Errorf("request %d: %v, want a RetryError of bulk after 2 attempts", r.Data, r.Err)
			}
		}
		if m.afterRuns.Load() != 0 {
			t.Errorf("After ran %d times for failed requests", m.afterRuns.Load())
		}
	})
}

// A member cancelled while it waits to rejoin its batcher leaves at once.
func TestCancelWhileWaitingToRejoinABatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBatcher(func(_ context.Context, batch []Request[int]) error {
			return Retry(errFlaky)
		}, MaxItems(1))
		m := newHookM(b, parkThenAfter)
		p := mustNew[int](t, m, WithRetry(Backoff{Attempts: 5, Initial: time.Hour}))
		g := p.NewGroup()
		ctx, cancel := context.WithCancel(context.Background())
		mustSubmit(t, g, ctx, 0)
		synctest.Wait()
		cancel()
		g.Close()
		out := drainWithin(t, g, 1000*time.Hour)
		if len(out) != 1 || !errors.Is(out[0].Err, context.Canceled) {
			t.Fatalf("results %+v: want context.Canceled", out)
		}
		p.Close()
	})
}

// exactlyOnceInts checks that 0..n-1 came out once each as chainOut(i).
func exactlyOnceInts(t *testing.T, out []Request[int], n int) {
	t.Helper()
	seen := make([]int, n)
	for _, r := range out {
		i := r.Data - chainOut(0)
		if i < 0 || i >= n {
			t.Errorf("unexpected result %d", r.Data)
			continue
		}
		seen[i]++
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("request %d came out %d times", i, c)
		}
	}
}

// The retry path allocates nothing per attempt: the backoff heap, its
// goroutine and its timer are reused, and a background context is not
// watched.
func TestRetryAllocatesNothingPerAttempt(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	again := Retry(errFlaky) // made once: the user's error is not the engine's cost
	run := func(retries int) float64 {
		m := newChainM()
		m.onA = func(m *chainM, r Request[int]) Request[int] {
			if r.Attempt() <= retries {
				r.Err = again
				return r
			}
			return m.stageA(r)
		}
		p := mustNew[int](t, m, WithWorkers(2), WithRetry(Backoff{Attempts: retries + 1, Initial: time.Microsecond, Max: time.Microsecond}))
		defer p.Close()
		g := p.NewGroup()
		const n = 2000
		go submitNThenClose(t, g, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		got := len(drain(g))
		runtime.ReadMemStats(&after)
		if got != n {
			t.Fatalf("%d results, want %d", got, n)
		}
		return float64(after.Mallocs-before.Mallocs) / n
	}
	base, retried := run(0), run(3)
	if perAttempt := (retried - base) / 3; perAttempt > 0.05 {
		t.Errorf("%.2f allocations per request without retries, %.2f with 3: %.3f per attempt, want 0", base, retried, perAttempt)
	}
}
