package statepipe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// keyJob is the data of the key tests: its key, its place among the key's
// requests in submission order, and what the machine should do with it.
type keyJob struct {
	Key, Seq int
	Sleep    time.Duration // in Start
	Park     bool          // through the batcher between Start and End
	Fail     bool          // fail in Start
	Retry    int           // fail with Retry this many times in End
	Gate     chan struct{} // Start waits for it, if set
}

// keyM is Start -> (batcher) -> End. It checks, per key, that requests
// start in submission order and never overlap: a request is "active" from
// its Start until it comes out, which its observer (done) sees.
type keyM struct {
	bulk *Batcher[keyJob]
	end  Stage[keyJob]

	mu      sync.Mutex
	active  map[int]int    // requests of a key started and not out yet
	last    map[int]int    // last Seq started, by key
	keyOf   map[uint64]int // keys of the requests started, by id
	bad     []string
	started atomic.Int64
	peak    atomic.Int64 // most requests active at once, over all keys
	running atomic.Int64
}

func newKeyM() *keyM {
	m := &keyM{active: map[int]int{}, last: map[int]int{}, keyOf: map[uint64]int{}}
	m.end = m.End
	m.bulk = NewBatcher(func(_ context.Context, batch []Request[keyJob]) error { return nil },
		MaxItems(8), MaxWait(2*time.Millisecond))
	return m
}

func (m *keyM) Start(r Request[keyJob]) Request[keyJob] {
	j := r.Data
	if r.Attempt() == 1 {
		m.mu.Lock()
		if m.active[j.Key] != 0 {
			m.bad = append(m.bad, fmt.Sprintf("key %d: seq %d started while %d ran", j.Key, j.Seq, m.active[j.Key]))
		}
		if prev, ok := m.last[j.Key]; ok && j.Seq <= prev {
			m.bad = append(m.bad, fmt.Sprintf("key %d: seq %d started after seq %d", j.Key, j.Seq, prev))
		}
		m.active[j.Key]++
		m.last[j.Key] = j.Seq
		m.keyOf[r.ID()] = j.Key
		m.mu.Unlock()
		raiseMax(&m.peak, m.running.Add(1))
	}
	m.started.Add(1)
	if j.Gate != nil {
		<-j.Gate
	}
	time.Sleep(j.Sleep)
	if j.Fail {
		r.Err = errors.New("failed")
		return r
	}
	r.Next = m.end
	if j.Park {
		return m.bulk.Add(r)
	}
	return r
}

func (m *keyM) End(r Request[keyJob]) Request[keyJob] {
	if r.Attempt() <= r.Data.Retry {
		r.Err = Retry(errFlaky)
		return r
	}
	return r
}

// done is the machine's Observer: a request that started is out.
func (m *keyM) done() Option {
	return WithObserver(ObserverFunc(func(e Event) {
		if e.Kind != RequestDone {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if k, ok := m.keyOf[e.Request]; ok {
			delete(m.keyOf, e.Request)
			m.active[k]--
			m.running.Add(-1)
		}
	}))
}

func (m *keyM) Close() {}

func (m *keyM) problems() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bad
}

func jobKey(j keyJob) int { return j.Key }

// Requests of 40 keys from several submitters into several groups, with
// random latency, some through a batch and some retried, run in order per
// key and never overlap, and every one comes out once.
func TestKeyedRequestsRunInOrderWithoutOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithWorkers(8), WithMaxInFlight(64),
			WithRetry(Backoff{Initial: time.Millisecond}))
		groups := []*Group[keyJob]{p.NewGroup(), p.NewGroup(Ordered()), p.NewGroup(MaxInFlight(5))}
		const keys, perKey, submitters = 40, 12, 4
		rng := rand.New(rand.NewPCG(1, 2))
		plans := make([][]keyJob, submitters) // each submitter owns keys k%submitters
		for seq := range perKey {
			for k := range keys {
				plans[k%submitters] = append(plans[k%submitters], keyJob{Key: k, Seq: seq,
					Sleep: time.Duration(rng.IntN(3)) * time.Millisecond, Park: rng.IntN(3) == 0, Retry: rng.IntN(4) / 3})
			}
		}
		var submitted, received sync.WaitGroup
		counts := make([]map[[2]int]int, len(groups))
		for gi, g := range groups {
			counts[gi] = map[[2]int]int{}
			received.Go(func() {
				for r := range g.Out() {
					if r.Err != nil {
						t.Errorf("key %d seq %d: %v", r.Data.Key, r.Data.Seq, r.Err)
					}
					counts[gi][[2]int{r.Data.Key, r.Data.Seq}]++
				}
			})
		}
		for s := range submitters {
			submitted.Go(func() {
				for i, j := range plans[s] {
					mustSubmit(t, groups[(s+i)%len(groups)], context.Background(), j)
				}
			})
		}
		submitted.Wait()
		for _, g := range groups {
			g.Close()
		}
		received.Wait()
		p.Close()

		for _, b := range m.problems() {
			t.Error(b)
		}
		total := 0
		for _, c := range counts {
			for id, n := range c {
				if n != 1 {
					t.Errorf("key %d seq %d came out %d times", id[0], id[1], n)
				}
				total += n
			}
		}
		if total != keys*perKey {
			t.Errorf("%d results, want %d", total, keys*perKey)
		}
		if m.peak.Load() < 4 {
			t.Errorf("at most %d keys ran at once: keys do not run in parallel", m.peak.Load())
		}
		if s := p.Stats(); s.Keys != (KeyStats{}) {
			t.Errorf("after Close: %+v, want no keys left", s.Keys)
		}
	})
}

// A hot key delays only itself: its requests wait their turn without
// workers while other keys' requests run.
func TestHotKeyDoesNotDelayOtherKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithWorkers(2), WithMaxInFlight(64))
		hot, cold := p.NewGroup(), p.NewGroup()
		t0 := time.Now()
		for seq := range 20 {
			mustSubmit(t, hot, context.Background(), keyJob{Key: 1, Seq: seq, Sleep: 100 * time.Millisecond})
		}
		synctest.Wait()
		s := p.Stats()
		if s.Keys.Keys != 1 || s.Keys.Waiting != 1 || s.Keys.Requests != 19 || s.Running != 1 {
			t.Errorf("hot key queued: %+v, %d running; want 1 key, 19 waiting, 1 running", s.Keys, s.Running)
		}
		for seq := range 10 {
			mustSubmit(t, cold, context.Background(), keyJob{Key: 100 + seq, Seq: 0, Sleep: 10 * time.Millisecond})
		}
		cold.Close()
		if n := len(drainWithin(t, cold, time.Hour)); n != 10 {
			t.Fatalf("%d cold results", n)
		}
		if took := time.Since(t0); took > 200*time.Millisecond {
			t.Errorf("cold keys took %v behind a hot key", took)
		}
		time.Sleep(time.Second)
		if lw := p.Stats().Keys.LongestWait; lw < time.Second {
			t.Errorf("LongestWait %v after the hot key's last waited over a second", lw)
		}
		hot.Close()
		if n := len(drainWithin(t, hot, time.Hour)); n != 20 || time.Since(t0) != 2*time.Second {
			t.Errorf("%d hot results after %v, want 20 after 2s (one at a time)", n, time.Since(t0))
		}
		p.Close()
		for _, b := range m.problems() {
			t.Error(b)
		}
	})
}

// A request waiting for its key leaves at once when its context ends, and
// the key moves on to the next without it.
func TestCancelWhileWaitingForAKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithWorkers(2))
		g := p.NewGroup(Ordered())
		gate := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		mustSubmit(t, g, context.Background(), keyJob{Key: 7, Seq: 0, Gate: gate})
		mustSubmit(t, g, ctx, keyJob{Key: 7, Seq: 1})
		mustSubmit(t, g, context.Background(), keyJob{Key: 7, Seq: 2})
		synctest.Wait()
		cancel()
		synctest.Wait()
		if s := p.Stats(); s.Keys.Requests != 1 || s.InFlight != 2 {
			t.Errorf("after the cancel: %+v, %d in flight; want 1 waiting, 2 inside", s.Keys, s.InFlight)
		}
		close(gate)
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		if len(out) != 3 || out[0].Err != nil || !errors.Is(out[1].Err, context.Canceled) || out[2].Err != nil {
			t.Fatalf("results %+v: want ok, Canceled, ok", out)
		}
		if m.started.Load() != 2 {
			t.Errorf("%d starts, want 2: the cancelled one must not run", m.started.Load())
		}
	})
}

// A parked request keeps its key until it is out of the machine.
func TestParkedRequestKeepsItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		m.bulk = NewBatcher(func(_ context.Context, batch []Request[keyJob]) error { return nil },
			MaxItems(100), MaxWait(time.Second), NoIdleFlush())
		p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithWorkers(4))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 0, Park: true})
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 1})
		synctest.Wait()
		if m.started.Load() != 1 {
			t.Fatalf("%d started while the first is parked, want 1", m.started.Load())
		}
		g.Close()
		drainWithin(t, g, time.Hour)
		p.Close()
		for _, b := range m.problems() {
			t.Error(b)
		}
	})
}

func TestFailedRequestLetsItsKeyGoOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithWorkers(2))
		g := p.NewGroup(Ordered())
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 0, Fail: true, Sleep: time.Millisecond})
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 1})
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		if len(out) != 2 || out[0].Err == nil || out[1].Err != nil {
			t.Errorf("results %+v: want the first failed, the second through", out)
		}
	})
}

func TestKeyFailFastFailsTheWaitingRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithKeyFailFast(), WithWorkers(2))
		g := p.NewGroup(Ordered())
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 0, Fail: true, Sleep: time.Millisecond})
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 1})
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 2})
		mustSubmit(t, g, context.Background(), keyJob{Key: 2, Seq: 0})
		out := make([]Request[keyJob], 0, 5)
		for range 4 {
			out = append(out, <-g.Out())
		}
		// Nothing waits for key 1 any more: a new request runs.
		mustSubmit(t, g, context.Background(), keyJob{Key: 1, Seq: 3})
		g.Close()
		out = append(out, drainWithin(t, g, time.Hour)...)
		p.Close()
		for i, want := range []bool{true, true, true, false, false} {
			if failed := out[i].Err != nil; failed != want {
				t.Errorf("result %d (key %d seq %d): err %v", i, out[i].Data.Key, out[i].Data.Seq, out[i].Err)
			}
		}
		if !errors.Is(out[1].Err, ErrKeyFailed) || !strings.Contains(out[1].Err.Error(), "failed") {
			t.Errorf("waiting request's error %v: want ErrKeyFailed wrapping the failure", out[1].Err)
		}
		if m.started.Load() != 3 {
			t.Errorf("%d starts, want 3 (the failed one, key 2, the one after)", m.started.Load())
		}
	})
}

func TestKeyFunctionPanicFailsOnlyThatRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newKeyM()
		key := func(j keyJob) int {
			if j.Key < 0 {
				panic("no key")
			}
			return j.Key
		}
		p := mustNew[keyJob](t, m, WithKey(key))
		g := p.NewGroup(Ordered())
		mustSubmit(t, g, context.Background(), keyJob{Key: -1})
		mustSubmit(t, g, context.Background(), keyJob{Key: 1})
		g.Close()
		out := drainWithin(t, g, time.Hour)
		p.Close()
		var pe *PanicError
		if len(out) != 2 || !errors.As(out[0].Err, &pe) || pe.Stage != "key" || out[1].Err != nil {
			t.Fatalf("results %+v: want a PanicError in key, then success", out)
		}
	})
}

func TestWithKeyRejectsMisuse(t *testing.T) {
	for name, opts := range map[string][]Option{
		"nil key":             {WithKey[keyJob, int](nil)},
		"twice":               {WithKey(jobKey), WithKey(jobKey)},
		"another data type":   {WithKey(func(s string) string { return s })},
		"fail fast alone":     {WithKeyFailFast()},
		"fail fast, bad type": {WithKeyFailFast(), WithKey(func(int) int { return 0 })},
	} {
		if _, err := New[keyJob](newKeyM(), opts...); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: New returned %v, want ErrInvalidOption", name, err)
		}
	}
}

// Requests submitted concurrently from many goroutines with few keys, with
// cancellations, retries and batches: every one comes out exactly once,
// nothing is left in the key table, and order holds per submitter and key.
func TestKeysPropertyUnderMixedLoad(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { keysMixedLoad(t, seed) })
		})
	}
}

func keysMixedLoad(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	m := newKeyM()
	workers := 1 + rng.IntN(6)
	p := mustNew[keyJob](t, m, WithKey(jobKey), m.done(), WithWorkers(workers), WithMaxInFlight(8+rng.IntN(40)),
		WithRetry(Backoff{Initial: time.Duration(1+rng.IntN(5)) * time.Millisecond, Jitter: 0.5}))
	g := p.NewGroup(MaxInFlight(4 + rng.IntN(30)))
	const submitters, each = 5, 40
	keys := 1 + rng.IntN(6)
	type plan struct {
		job    keyJob
		cancel time.Duration // cancel after this long; 0: never
	}
	plans := make([][]plan, submitters)
	for s := range plans {
		for i := range each {
			pl := plan{job: keyJob{Key: s*keys + rng.IntN(keys), Seq: i,
				Sleep: time.Duration(rng.IntN(3)) * time.Millisecond, Park: rng.IntN(2) == 0, Retry: rng.IntN(3)}}
			if rng.IntN(5) == 0 {
				pl.cancel = time.Duration(rng.IntN(10)) * time.Millisecond
			}
			plans[s] = append(plans[s], pl)
		}
	}
	var submitted, cancels sync.WaitGroup
	var accepted atomic.Int64
	for s := range submitters {
		submitted.Go(func() {
			for _, pl := range plans[s] {
				ctx := context.Background()
				if pl.cancel > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					cancels.Go(func() { time.Sleep(pl.cancel); cancel() })
				}
				if err := g.Submit(ctx, pl.job); err == nil {
					accepted.Add(1)
				} else if !errors.Is(err, context.Canceled) {
					t.Errorf("Submit: %v", err)
				}
			}
		})
	}
	go func() { submitted.Wait(); g.Close() }()
	seen := map[[2]int]int{}
	for r := range g.Out() {
		if r.Err != nil && !errors.Is(r.Err, context.Canceled) {
			t.Errorf("key %d seq %d: %v", r.Data.Key, r.Data.Seq, r.Err)
		}
		seen[[2]int{r.Data.Key, r.Data.Seq}]++
	}
	cancels.Wait()
	p.Close()
	if int64(len(seen)) != accepted.Load() {
		t.Errorf("%d distinct results, %d accepted", len(seen), accepted.Load())
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("key %d seq %d came out %d times", id[0], id[1], n)
		}
	}
	for _, b := range m.problems() {
		t.Error(b)
	}
	if s := p.Stats(); s.Keys != (KeyStats{}) || s.InFlight != 0 || s.Retrying != 0 {
		t.Errorf("after Close: %+v, %d in flight, %d retrying", s.Keys, s.InFlight, s.Retrying)
	}
}
