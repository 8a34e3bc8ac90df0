package statepipe

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Pipelines runs requests through a state machine on a fixed set of worker
// goroutines. Create it with [New], feed it through groups
// ([Pipelines.NewGroup]) and stop it with [Pipelines.Close].
type Pipelines[T any] struct {
	sm     StateMachine[T]
	cfg    config
	mws    []Middleware[T]
	log    *slog.Logger
	obs    Observer // nil: no events
	stages *stageIndex
	start  Stage[T]

	// in carries new and resumed requests to the workers. It never fills:
	// its capacity is the bound on requests inside the machine.
	in      chan Request[T]
	life    lifecycle     // requests inside the machine; drained closes drained
	room    wakeup        // wakes a Submit waiting for room inside the machine
	drained chan struct{} // closed once closing and nothing is inside
	closing chan struct{} // closed when Close begins; wakes blocked Submits

	workers []*worker[T]
	idle    atomic.Int32 // workers waiting for a request
	exited  atomic.Int32 // workers gone after Close
	wg      sync.WaitGroup

	mu              sync.Mutex
	groups          map[*Group[T]]struct{} // open groups, closed by Close
	groupIDs        atomic.Uint64          // the last group id given
	closedSubmitted uint64                 // requests submitted to groups gone from groups

	// Counts of the requests batchers finished themselves (see outTally).
	outside struct {
		mu sync.Mutex
		c  counts
	}
	parkers atomic.Pointer[[]parker] // copy on write, read when idle; index i is graph node firstBatchNode+i
	once    sync.Once
}

// parker holds parked requests on behalf of the engine: a Batcher. The
// engine tells it when nothing is left running that could join a batch
// (idle), when shutdown begins (closing: flush what is pending, and from
// then on whenever the engine is idle, even while a flush runs) and when
// every request is out (closed: stop its goroutines).
type parker interface {
	engineIdle()
	engineClosing()
	engineClosed()
	stats() BatchStats
	name() string
}

// batchName returns the name of the parker at a graph node.
func (p *Pipelines[T]) batchName(node uint8) string {
	parkers := *p.parkers.Load()
	if i := int(node) - firstBatchNode; i >= 0 && i < len(parkers) {
		return parkers[i].name()
	}
	return "batch"
}

// New finds the stages of sm, starts the workers and returns the running
// Pipelines. Configuration problems are reported as one error wrapping
// [ErrInvalidOption]; nothing is started then.
func New[T any](sm StateMachine[T], opts ...Option) (*Pipelines[T], error) {
	var names []string
	if sm != nil {
		names = discoverStages(sm)
	}
	cfg, mws, err := validate(sm, len(names), opts)
	if err != nil {
		return nil, err
	}
	n := cfg.maxInFlight
	p := &Pipelines[T]{
		sm:      sm,
		cfg:     cfg,
		mws:     mws,
		log:     cfg.logger,
		obs:     cfg.observer,
		start:   sm.Start,
		in:      make(chan Request[T], n),
		room:    newWakeup(),
		drained: make(chan struct{}),
		closing: make(chan struct{}),
		groups:  make(map[*Group[T]]struct{}),
	}
	p.stages = newStageIndex(sm, names, codeOf(p.start))
	p.life.drained = func() { close(p.drained) }
	p.parkers.Store(new([]parker))
	p.workers = make([]*worker[T], cfg.workers)
	p.wg.Add(cfg.workers)
	for i := range p.workers {
		w := newWorker(p)
		p.workers[i] = w
		go w.loop()
	}
	p.log.Info("statepipe: started", "stages", names, "workers", cfg.workers, "maxInFlight", n)
	return p, nil
}

// Stages returns the names of the stages found by New: Start first, then the
// other exported methods with the Stage signature, in name order.
func (p *Pipelines[T]) Stages() []string {
	return slices.Clone(p.stages.names()[:p.stages.discovered])
}

// Close stops intake (Submit returns ErrClosed), closes every group, lets
// the requests inside the machine finish (batches pending are flushed),
// waits for every goroutine it started, and then calls the machine's
// Close. It never waits for consumers: results not yet received stay in
// their group's Out, which closes after the last one. Calling Close again
// waits for the first call and returns nil. Close must not be called from
// a stage.
func (p *Pipelines[T]) Close() error {
	p.once.Do(func() {
		close(p.closing)
		p.life.close()

		p.mu.Lock()
		groups := make([]*Group[T], 0, len(p.groups))
		for g := range p.groups {
			groups = append(groups, g)
		}
		p.mu.Unlock()
		for _, g := range groups {
			g.Close()
		}

		// A batcher first used from now on learns of the shutdown from
		// addParker instead, and is in the list read after the drain.
		p.mu.Lock()
		parkers := *p.parkers.Load()
		p.mu.Unlock()
		for _, pk := range parkers {
			pk.engineClosing()
		}
		<-p.drained
		close(p.in) // nothing can send any more: every request is out
		p.wg.Wait()
		for _, pk := range *p.parkers.Load() {
			pk.engineClosed()
		}
		p.sm.Close()
		p.log.Info("statepipe: closed")
	})
	return nil
}

// addParker registers a parker, once, to be told of idleness and shutdown,
// and returns its node in the graph. It also reports whether Close has
// already begun, in which case the parker will not be told of it and must
// act as if it had been.
func (p *Pipelines[T]) addParker(pk parker) (node uint8, closing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.parkers.Load()
	i := slices.Index(old, pk)
	if i < 0 {
		i = len(old)
		grown := append(old[:len(old):len(old)], pk)
		p.parkers.Store(&grown)
	}
	return uint8(firstBatchNode + min(i, maxBatchers-1)), p.life.closed()
}

// idleNow reports whether every worker waits and nothing is queued.
func (p *Pipelines[T]) idleNow() bool {
	return int(p.idle.Load()) == len(p.workers) && len(p.in) == 0
}

// resume hands a request taken with handOff back to the workers, which
// continue it at r.Next, or finish it if r.Next is nil or r.Err is set. It
// never blocks: a parked request is still counted inside the machine, so
// in has room.
func (p *Pipelines[T]) resume(r Request[T]) {
	p.in <- r
}

func (p *Pipelines[T]) register(g *Group[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.closed() {
		return false
	}
	p.groups[g] = struct{}{}
	return true
}

func (p *Pipelines[T]) unregister(g *Group[T]) {
	p.mu.Lock()
	delete(p.groups, g)
	p.closedSubmitted += g.submitted.Load() // final: g takes no more
	p.mu.Unlock()
}

// deliver hands finished requests to their groups' outputs and frees their
// places in the machine.
func (p *Pipelines[T]) deliver(rs ...Request[T]) {
	if len(rs) == 0 {
		return // life.done(0) on a drained, closed count would drain it twice
	}
	for i := 0; i < len(rs); {
		g, j := rs[i].group, i+1
		for j < len(rs) && rs[j].group == g {
			j++
		}
		g.deliver(rs[i:j]...) // one count update per run of one group
		i = j
	}
	p.life.done(int64(len(rs)))
	p.room.signal()
}

// timingSample is how many requests of a group share one timed request:
// a clock reading costs 20-50ns, more than the rest of a transition.
const (
	timingSampleBits = 3
	timingSample     = 1 << timingSampleBits
)

// timed picks about one submission position in timingSample, by a hash of
// the position, so that routing by submission order (every 10th item
// takes another path) does not bias which stages get timed.
func timed(seq uint64) bool {
	// Multiplying by 2^64/φ spreads consecutive positions evenly; the top
	// bits are zero for one position in timingSample.
	return (seq*0x9E3779B97F4A7C15)>>(64-timingSampleBits) == 0
}

// epoch anchors clock readings; time.Since uses the monotonic clock.
var epoch = time.Now()

func clock() int64 { return int64(time.Since(epoch)) }

// admit takes a place in the machine for a request its group has admitted.
// It gives up when ctx ends or the Pipelines or the group (groupDone)
// close.
func (p *Pipelines[T]) admit(ctx context.Context, groupDone <-chan struct{}) error {
	limit := int64(p.cfg.maxInFlight)
	none := func() int64 { return 0 }
	room := func() bool { return p.life.count() < limit }
	for {
		ok, closed := p.life.add(none, limit)
		if ok {
			if room() {
				p.room.signal() // room is left for the next waiter
			}
			return nil
		}
		if closed {
			return ErrClosed
		}
		if err := p.room.wait(ctx, room, nil, p.closing, groupDone); err != nil {
			return err
		}
	}
}
