package statepipe

import (
	"fmt"
	"sync"
	"time"
)

// WithAutoscale lets the number of workers follow the work, between min
// and max. It starts at min and grows while requests wait for a worker and
// more workers raise the requests finished per second (stages that wait
// on the network or a disk); it never grows further for stages that are
// CPU-bound, where more workers would only share the same cores. It
// shrinks while workers idle. Requests parked in batchers, waiting for a
// retry or for their key are not waiting for a worker.
//
// The decision is made every 50ms or so, from what the engine already
// counts: a step that did not raise throughput is undone at once and not
// tried again for a second; a step up doubles the workers (or halves the
// gap to the count known to be too many), so a stage blocked on I/O gets
// 64 workers within a few hundred milliseconds. [Stats].Workers is the
// current count and [Stats].Scaling says why the last change was made.
//
// It conflicts with [WithWorkers] and [WithPipelines], which fix the
// count; min must be at least 1 and max at least min.
func WithAutoscale(min, max int) Option {
	return optionFunc(func(c *config) {
		switch {
		case min < 1:
			c.problems = append(c.problems, fmt.Sprintf("WithAutoscale: min %d must be at least 1", min))
		case max < min:
			c.problems = append(c.problems, fmt.Sprintf("WithAutoscale: max %d is below min %d", max, min))
		case max > maxWorkers:
			c.problems = append(c.problems, fmt.Sprintf("WithAutoscale: max %d is above %d", max, maxWorkers))
		}
		c.scaleMin, c.scaleMax = min, max
	})
}

// maxWorkers bounds autoscaling: beyond it a machine waits on something
// that more goroutines will not fix.
const maxWorkers = 1 << 14

// ScaleReason says why autoscaling last changed the number of workers.
type ScaleReason int

const (
	ScaleNone ScaleReason = iota // no change yet
	ScaleUp                      // requests waited for a worker, and the last step up raised throughput (or is the first)
	ScaleUndo                    // the last step up did not raise throughput: the stages are CPU-bound, or the bottleneck is elsewhere
	ScaleDown                    // workers idled while no request waited
	numScaleReasons
)

var scaleReasonNames = [numScaleReasons]string{"none", "up", "undo", "down"}

func (r ScaleReason) String() string {
	if r < 0 || r >= numScaleReasons {
		return "unknown"
	}
	return scaleReasonNames[r]
}

// ScaleStats describe autoscaling ([WithAutoscale]); zero without it.
type ScaleStats struct {
	Min, Max int
	Changes  [numScaleReasons]uint64 // changes made, by reason: Changes[ScaleUp]...
	Last     ScaleReason             // why the last change was made
	LastAt   time.Time               // when
	Ceiling  int                     // a count found not to raise throughput, not tried again for now; 0 if none
}

// The controller's clock: it samples every scaleTick and decides once a
// window has at least scaleMinWindow and enough finished requests to
// measure throughput, or scaleMaxWindow has passed.
const (
	scaleTick      = 10 * time.Millisecond
	scaleIdleTick  = 100 * time.Millisecond // with nothing inside and min workers
	scaleMinWindow = 50 * time.Millisecond
	scaleMaxWindow = 500 * time.Millisecond
	scaleMinDone   = 32 // requests finished in a window, to trust its throughput

	// scaleHold is how long a count found too many is not tried again.
	scaleHold = time.Second

	// A step up from n to m workers is kept if throughput rose by at
	// least scaleGain of what m/n would give stages that only wait.
	scaleGain = 0.3
)

// scaler is the autoscaling controller: one goroutine per Pipelines.
type scaler[T any] struct {
	p        *Pipelines[T]
	min, max int
	retire   chan struct{} // a token makes an idle worker leave; never fills (cap max)
	quit     chan struct{} // closed by Close

	// The window being measured.
	start    time.Time
	released int64 // p.released at its start
	samples  int
	waited   int // samples in which requests waited for a worker
	idleSum  int // idle workers, summed over samples

	// The step under trial, if any: throughput before it and the count
	// it started from.
	probing bool
	before  float64
	from    int

	ceiling   int
	heldUntil time.Time

	mu    sync.Mutex // guards stats
	stats ScaleStats
}

func newScaler[T any](p *Pipelines[T], min, max int) *scaler[T] {
	return &scaler[T]{p: p, min: min, max: max, retire: make(chan struct{}, max), quit: make(chan struct{}),
		stats: ScaleStats{Min: min, Max: max}}
}

// run samples and decides until Close.
func (s *scaler[T]) run() {
	timer := time.NewTimer(scaleTick)
	defer timer.Stop()
	s.begin(time.Now())
	for {
		select {
		case <-timer.C:
		case <-s.quit:
			return
		}
		now := time.Now()
		s.sample()
		if s.windowDone(now) {
			s.decide(now)
			s.begin(now)
		}
		tick := scaleTick
		if s.p.inside() == 0 && s.workers() == s.min && !s.probing {
			tick = scaleIdleTick // nothing to decide: wake less
		}
		timer.Reset(tick)
	}
}

// workers returns the count the controller aims at: those running, less
// those told to leave that have not yet.
func (s *scaler[T]) workers() int { return int(s.p.nworkers.Load()) - len(s.retire) }

func (s *scaler[T]) begin(now time.Time) {
	s.start, s.released = now, s.p.released.Load()
	s.samples, s.waited, s.idleSum = 0, 0, 0
}

func (s *scaler[T]) sample() {
	p := s.p
	s.samples++
	if p.waitingForWorker() {
		s.waited++
	}
	s.idleSum += int(p.idle.Load())
}

// windowDone reports whether the window has lasted long enough to decide
// on: a step up needs the throughput of enough finished requests; a step
// down needs none, only a window in which nothing waited.
func (s *scaler[T]) windowDone(now time.Time) bool {
	d := now.Sub(s.start)
	if d < scaleMinWindow {
		return false
	}
	return d >= scaleMaxWindow || s.p.released.Load()-s.released >= scaleMinDone || !s.probing && s.waited == 0
}

// decide looks at the window just ended and changes the count if it
// should.
func (s *scaler[T]) decide(now time.Time) {
	n := s.workers()
	throughput := float64(s.p.released.Load()-s.released) / now.Sub(s.start).Seconds()
	waited := s.waited*2 >= s.samples // requests waited most of the window
	idle := float64(s.idleSum) / float64(s.samples)

	if s.probing {
		s.probing = false
		want := s.before * (1 + scaleGain*(float64(n)/float64(s.from)-1))
		if s.before > 0 && throughput < want {
			// More workers, no more work done: go back, and do not try
			// this count again for a while.
			s.ceiling, s.heldUntil = n, now.Add(scaleHold)
			s.set(s.from, ScaleUndo, now)
			return
		}
	}
	switch {
	case waited && n < s.max && !now.Before(s.heldUntil):
		to := min(s.max, 2*n)
		if s.ceiling > n {
			to = n + max(1, (s.ceiling-n)/2) // between what works and what did not
		} else if s.ceiling > 0 {
			to = min(s.max, n+max(1, n/4)) // the hold is over: a small step
		}
		if to <= n {
			return
		}
		s.probing, s.before, s.from = true, throughput, n
		s.set(to, ScaleUp, now)
	case s.waited == 0 && idle >= max(1, float64(n)/4) && n > s.min:
		// Let half the idle workers go: under a steady load the count
		// settles where few idle, with no step up to undo.
		s.set(max(s.min, n-int(idle/2)), ScaleDown, now)
		if s.ceiling > 0 && now.After(s.heldUntil) {
			s.ceiling = 0 // the load changed: what was too many may not be now
		}
	}
}

// set moves the count to n.
func (s *scaler[T]) set(n int, why ScaleReason, now time.Time) {
	cur := s.workers()
	switch {
	case n > cur:
		// Take back tokens not yet taken before starting new workers.
		for ; n > cur && len(s.retire) > 0; cur++ {
			select {
			case <-s.retire:
			default:
			}
		}
		if n > cur {
			s.p.addWorkers(n - cur)
		}
	case n < cur:
		for range cur - n {
			s.retire <- struct{}{} // never blocks: at most max tokens
		}
	default:
		return
	}
	s.mu.Lock()
	s.stats.Changes[why]++
	s.stats.Last, s.stats.LastAt, s.stats.Ceiling = why, now, s.ceiling
	s.mu.Unlock()
	if obs := s.p.obs; obs != nil {
		// On a frame of the engine: Close from the observer is refused
		// rather than waiting for this goroutine.
		engineCall(func() { obs.Observe(Event{Kind: WorkersScaled, Size: n, Scale: why}) })
	}
	s.p.log.Debug("statepipe: workers", "from", cur, "to", n, "reason", why.String())
}

func (s *scaler[T]) snapshot() ScaleStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// waitingForWorker reports whether requests wait for a worker now: queued,
// or a Submit waiting for the queue to get shorter.
func (p *Pipelines[T]) waitingForWorker() bool {
	return len(p.in) > 0 || p.room.waiters.Load() > 0 && p.inside() < int64(p.cfg.maxInFlight)
}
