package statepipe

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff is the policy for retrying errors marked with [Retry]: how many
// attempts a step gets and how long a request waits between them. The
// wait before attempt n+1 is Initial x Multiplier^(n-1), at most Max, less
// a random share of up to Jitter of it, and at least what [RetryAfter]
// asked for.
type Backoff struct {
	Attempts   int           // attempts in all, the first included (default 3)
	Initial    time.Duration // wait before the second attempt (default 100ms)
	Max        time.Duration // longest wait (default 10s)
	Multiplier float64       // growth per attempt (default 2)
	Jitter     float64       // 0..1, random share of each wait; 0 is none
}

// defaultBackoff is the policy without WithRetry.
var defaultBackoff = Backoff{Attempts: 3, Initial: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2}

// WithRetry sets the policy for errors marked with [Retry] or [RetryAfter].
// A zero field takes the default of [Backoff], except Jitter: 0 means no
// jitter, so waits are exact. Without WithRetry the policy is
// Backoff{3, 100ms, 10s, 2, 0.2}.
//
// A request that waits for its next attempt holds no worker and counts as
// in flight; it leaves at once with its context's error if that ends.
// Close waits for it like for any request inside: cancel its context to
// end it sooner.
func WithRetry(b Backoff) Option {
	return optionFunc(func(c *config) {
		if p := b.problem(); p != "" {
			c.problems = append(c.problems, "WithRetry: "+p)
		}
		d := defaultBackoff
		b.Attempts = cmpOr(b.Attempts, d.Attempts)
		b.Initial = cmpOr(b.Initial, d.Initial)
		b.Max = cmpOr(b.Max, max(d.Max, b.Initial))
		b.Multiplier = cmpOr(b.Multiplier, d.Multiplier)
		c.backoff = &b
	})
}

func cmpOr[N int | time.Duration | float64](v, def N) N {
	if v == 0 {
		return def
	}
	return v
}

// problem says what is wrong with b as given to WithRetry, if anything.
func (b Backoff) problem() string {
	switch {
	case b.Attempts < 0:
		return fmt.Sprintf("Attempts %d is negative", b.Attempts)
	case b.Initial < 0:
		return fmt.Sprintf("Initial %v is negative", b.Initial)
	case b.Max < 0:
		return fmt.Sprintf("Max %v is negative", b.Max)
	case b.Max != 0 && b.Max < b.Initial:
		return fmt.Sprintf("Max %v is below Initial %v", b.Max, b.Initial)
	case b.Multiplier != 0 && !(b.Multiplier >= 1) || math.IsInf(b.Multiplier, 0):
		return fmt.Sprintf("Multiplier %v must be at least 1", b.Multiplier)
	case !(b.Jitter >= 0 && b.Jitter <= 1):
		return fmt.Sprintf("Jitter %v must be between 0 and 1", b.Jitter)
	}
	return ""
}

// wait returns how long to wait after attempt failed (1 for the first),
// at least least.
func (b *Backoff) wait(attempt int, least time.Duration) time.Duration {
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(attempt-1))
	d = min(d, float64(b.Max)) // also for +Inf
	if b.Jitter > 0 {
		d -= d * b.Jitter * rand.Float64()
	}
	return max(time.Duration(d), least)
}

// retryWait is a request's place among those waiting out a backoff.
type retryWait[T any] struct {
	due    int64       // clock reading when it runs again
	at     int         // index in the heap + 1; 0: not in it
	ticket uint64      // tells this wait from the record's later ones
	rejoin *Batcher[T] // where it goes back: a batcher, or nil for its stage
	stop   func() bool // stops the watcher of its context; nil if none
}

// A record's retryWait is read and written under retries.mu only: a
// watcher that fired late may look at it while the record serves another
// request.

// retries holds the requests waiting out a retry's backoff in a heap by
// due time, and resumes each when its time comes, from one goroutine per
// Pipelines (started with the first retry): a waiting request costs no
// goroutine and no timer of its own.
type retries[T any] struct {
	p       *Pipelines[T]
	mu      sync.Mutex
	heap    []*record[T]
	tickets uint64
	started bool
	waiting atomic.Int64  // requests in heap
	wake    chan struct{} // a new earliest due time
	quit    chan struct{} // closed by Close once every request is out
	watches sync.WaitGroup
}

func newRetries[T any](p *Pipelines[T]) *retries[T] {
	return &retries[T]{p: p, wake: make(chan struct{}, 1), quit: make(chan struct{})}
}

// retry decides what comes of a request whose step (a stage, or the
// flush of rejoin) failed with rec.req.Err. If that is marked and
// attempts are left, the request waits out its backoff with Err cleared,
// and retry returns true: the caller lets go of it. Otherwise a marked
// error whose attempts ran out becomes a *RetryError, and retry returns
// false. The caller owns rec and has stored the request in it, with the
// Next it resumes at.
func (rs *retries[T]) retry(rec *record[T], step string, rejoin *Batcher[T]) bool {
	err := rec.req.Err
	least, marked := retryable(err)
	if !marked {
		return false
	}
	p := rs.p
	attempt := int(rec.attempt)
	if attempt >= p.cfg.backoff.Attempts {
		rec.req.Err = &RetryError{Stage: step, Attempts: attempt, Err: unmarked(err)}
		return false
	}
	wait := p.cfg.backoff.wait(attempt, least)
	if p.obs != nil {
		ev := Event{Kind: Retrying, Request: rec.req.ID(), Group: rec.group.id, Ctx: rec.req.Ctx,
			Stage: step, Attempt: attempt, Duration: wait, Err: err}
		if rejoin != nil {
			ev.Stage, ev.Batch = "", step
		}
		p.obs.Observe(ev)
	}
	rec.attempt++
	rec.retry = rejoin == nil
	rec.req.Err = nil
	rs.schedule(rec, wait, rejoin)
	return true
}

// unmarked returns err without the mark Retry put on it, if it is the
// mark itself; a mark deeper in err's chain stays, and errors.Is sees
// through it.
func unmarked(err error) error {
	if m, ok := err.(*retryMark); ok {
		return m.err
	}
	return err
}

// schedule has rec, which the caller owns, resumed after wait.
func (rs *retries[T]) schedule(rec *record[T], wait time.Duration, rejoin *Batcher[T]) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.started {
		rs.started = true
		// A worker or a flush calls this with a request inside, so Close
		// has not passed its drain and still waits for the engine.
		rs.p.goEngine(rs.run)
	}
	rs.tickets++
	w := &rec.waiting
	w.due, w.rejoin, w.ticket = clock()+int64(wait), rejoin, rs.tickets
	rs.push(rec)
	rs.waiting.Add(1)
	if w.at == 1 {
		select { // the earliest now: tell the goroutine
		case rs.wake <- struct{}{}:
		default:
		}
	}
	// Watch the context only if it can end; the watcher waits for rs.mu,
	// so it finds the request in place.
	if ctx := rec.req.Ctx; ctx.Done() != nil {
		ticket := w.ticket
		rs.watches.Add(1)
		w.stop = context.AfterFunc(ctx, func() {
			defer rs.watches.Done()
			engineCall(func() { rs.cancel(rec, ticket) })
		})
	}
}

// cancel sends a waiting request whose context ended out, with the
// context's error, unless its wait is over already.
func (rs *retries[T]) cancel(rec *record[T], ticket uint64) {
	rs.mu.Lock()
	if rec.waiting.at == 0 || rec.waiting.ticket != ticket {
		rs.mu.Unlock()
		return // resumed meanwhile: the worker sees the context's end
	}
	rs.remove(rec)
	rec.waiting = retryWait[T]{}
	rs.mu.Unlock()
	rec.retry = false
	rec.req.Err = rec.req.Ctx.Err()
	rs.p.resume(rec) // with Err set, the worker sends it out
}

// run resumes requests as their waits end, until Close.
func (rs *retries[T]) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []resumption[T]
	for {
		wait := rs.takeDue(&due)
		for i, d := range due {
			if d.rejoin != nil {
				d.rejoin.rejoin(d.rec)
			} else {
				rs.p.resume(d.rec)
			}
			due[i] = resumption[T]{}
		}
		due = due[:0]
		if wait > 0 {
			timer.Reset(time.Duration(wait))
		}
		select {
		case <-rs.wake:
		case <-timer.C:
		case <-rs.quit:
			return
		}
		timer.Stop()
	}
}

// resumption is a request whose wait is over, and where it goes back to:
// a batcher, or nil for its stage.
type resumption[T any] struct {
	rec    *record[T]
	rejoin *Batcher[T]
}

// takeDue moves the requests whose wait is over from the heap to due, and
// returns how long until the next one's is (0: none waits).
func (rs *retries[T]) takeDue(due *[]resumption[T]) int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := clock()
	for len(rs.heap) > 0 {
		rec := rs.heap[0]
		if rec.waiting.due > now {
			return rec.waiting.due - now
		}
		rs.remove(rec)
		if stop := rec.waiting.stop; stop != nil && stop() {
			rs.watches.Done() // the watcher will never run
		}
		// A watcher that fired finds the request resumed and leaves it:
		// the worker sees the context's end.
		*due = append(*due, resumption[T]{rec, rec.waiting.rejoin})
		rec.waiting = retryWait[T]{}
	}
	return 0
}

// close stops the goroutine and waits for the watchers; every request is
// out by now.
func (rs *retries[T]) close() {
	close(rs.quit)
	rs.watches.Wait()
}

// The heap is ordered by due time; each record knows its index (+1).

func (rs *retries[T]) push(rec *record[T]) {
	rs.heap = append(rs.heap, rec)
	rec.waiting.at = len(rs.heap)
	rs.up(len(rs.heap) - 1)
}

func (rs *retries[T]) remove(rec *record[T]) {
	i := rec.waiting.at - 1
	last := len(rs.heap) - 1
	if i != last {
		rs.swap(i, last)
	}
	rs.heap[last] = nil
	rs.heap = rs.heap[:last]
	rec.waiting.at = 0
	rs.waiting.Add(-1)
	if i != last {
		rs.down(i)
		rs.up(i)
	}
}

// less orders by due time, and requests due at once by when they began
// to wait: a batch's retried members rejoin in their order.
func (rs *retries[T]) less(i, j int) bool {
	a, b := &rs.heap[i].waiting, &rs.heap[j].waiting
	return a.due < b.due || a.due == b.due && a.ticket < b.ticket
}

func (rs *retries[T]) swap(i, j int) {
	h := rs.heap
	h[i], h[j] = h[j], h[i]
	h[i].waiting.at, h[j].waiting.at = i+1, j+1
}

func (rs *retries[T]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !rs.less(i, parent) {
			return
		}
		rs.swap(i, parent)
		i = parent
	}
}

func (rs *retries[T]) down(i int) {
	n := len(rs.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && rs.less(r, l) {
			c = r
		}
		if !rs.less(c, i) {
			return
		}
		rs.swap(i, c)
		i = c
	}
}
