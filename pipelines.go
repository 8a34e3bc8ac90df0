package statepipe

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
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

	mu      sync.Mutex
	groups  map[*Group[T]]struct{}   // open groups, closed by Close
	parkers atomic.Pointer[[]parker] // copy on write, read when idle
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

// addParker registers a parker, once, to be told of idleness and shutdown.
// It reports whether Close has already begun, in which case the parker
// will not be told of it and must act as if it had been.
func (p *Pipelines[T]) addParker(pk parker) (closing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.parkers.Load()
	if !slices.Contains(old, pk) {
		grown := append(old[:len(old):len(old)], pk)
		p.parkers.Store(&grown)
	}
	return p.life.closed()
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
	p.mu.Unlock()
}

// worker is one goroutine running requests through the machine. Its
// statistics are its own, so that counting costs no contention.
type worker[T any] struct {
	p     *Pipelines[T]
	stats workerStats

	call      uint64 // counts stage calls; see Request.handOff
	handedOff bool   // the current stage handed its request to a parker

	// The middleware chain is built once per worker; the stage being run
	// and its name are kept here instead of in a closure per call.
	chain    Stage[T]
	curStage Stage[T]
	curName  string
}

func newWorker[T any](p *Pipelines[T]) *worker[T] {
	w := &worker[T]{p: p}
	w.stats.init()
	if len(p.mws) > 0 {
		next := Stage[T](func(r Request[T]) Request[T] { return w.curStage(r) })
		for i := len(p.mws) - 1; i >= 0; i-- {
			mw, inner := p.mws[i], next
			next = func(r Request[T]) Request[T] { return mw(w.curName, r, inner) }
		}
		w.chain = next
	}
	return w
}

func (w *worker[T]) loop() {
	closed := false
	defer func() {
		if !closed {
			// A stage called runtime.Goexit and took this goroutine with
			// it; run has delivered its request. Keep the worker count.
			w.p.wg.Add(1)
			go w.loop()
		}
		w.p.wg.Done()
	}()
	for {
		r, ok := w.receive()
		if !ok {
			w.stats.publish()
			w.p.exited.Add(1)
			closed = true
			return
		}
		if r.queued != 0 && r.started == 0 { // timed, and picked up for the first time
			r.started = clock()
			w.stats.local.queued.observe(r.started - r.queued)
		}
		w.run(r)
	}
}

// receive returns the next request; ok is false once the input is closed.
func (w *worker[T]) receive() (r Request[T], ok bool) {
	p := w.p
	select {
	case r, ok = <-p.in:
		return r, ok
	default:
	}
	w.stats.publish()
	if int(p.idle.Add(1)) == len(p.workers) && len(p.in) == 0 {
		// Nothing is running and nothing is queued: no request can join
		// a pending batch any more, so batches need not linger.
		for _, pk := range *p.parkers.Load() {
			pk.engineIdle()
		}
	}
	r, ok = <-p.in
	p.idle.Add(-1)
	return r, ok
}

// run carries r through the machine until it finishes, fails or is handed
// off to a parker. A panic in a stage or its middleware fails the request;
// one recover per request, not per stage, keeps the cost of a transition
// low.
func (w *worker[T]) run(r Request[T]) {
	p := w.p
	id := -1 // the stage running; -1 outside stages
	defer func() {
		if id < 0 {
			return // not a stage's panic: the engine's own, which must not be hidden
		}
		v := recover()
		if v == nil {
			v = errGoexit // the stage called runtime.Goexit: not even a panic
		}
		err := p.panicked(p.stages.name(id), v)
		if w.handedOff {
			return // a parker has the request and will resume it
		}
		r.Next, r.Err = nil, err
		w.stats.stage(id, true)
		w.finish(r)
	}()
	// keep is the bookkeeping to restore if a stage returns a Request it
	// made itself instead of the one it was given.
	keep := r
	for r.Err == nil && r.Next != nil {
		if err := r.Ctx.Err(); err != nil {
			r.Err = err
			break
		}
		stage := r.Next
		sid := p.stages.id(codeOf(stage))
		if p.cfg.dag && sid != otherStage {
			if r.visited&(1<<sid) != 0 {
				r.Err = p.cycleError(sid, &r.trail)
				break
			}
			r.visited |= 1 << sid
			r.trail.push(sid)
			keep.visited, keep.trail = r.visited, r.trail
		}
		r.Next = nil // a stage that sets nothing finishes the request
		w.call++
		w.handedOff = false
		r.worker, r.call = w, w.call
		id = sid
		if w.chain == nil {
			r = stage(r)
		} else {
			w.curStage, w.curName = stage, p.stages.name(sid)
			r = w.chain(r)
		}
		id = -1
		w.stats.stage(sid, r.Err != nil && !w.handedOff)
		if w.handedOff {
			return // whatever the stage returned: a parker has it now
		}
		r.worker = nil
		if r.group == nil || r.Ctx == nil {
			r.adopt(&keep)
		}
	}
	w.finish(r)
}

// errGoexit is the panic value recorded for a stage that called
// runtime.Goexit.
var errGoexit = errors.New("statepipe: stage called runtime.Goexit")

// adopt gives r, a Request made by a stage, the context and bookkeeping
// of the request the stage was given.
func (r *Request[T]) adopt(orig *Request[T]) {
	if r.Ctx == nil {
		r.Ctx = orig.Ctx
	}
	r.group, r.seq, r.queued, r.started = orig.group, orig.seq, orig.queued, orig.started
	r.visited, r.trail = orig.visited, orig.trail
}

// finish counts r and hands it to its group.
func (w *worker[T]) finish(r Request[T]) {
	var running int64 = -1
	if r.started != 0 {
		running = clock() - r.started
	}
	w.stats.finished(r.Err != nil, running)
	w.p.deliver(r)
}

func (p *Pipelines[T]) panicked(stage string, v any) *PanicError {
	err := &PanicError{Stage: stage, Value: v, Stack: debug.Stack()}
	p.log.Error("statepipe: recovered panic", "stage", stage, "panic", v)
	return err
}

func (p *Pipelines[T]) cycleError(id int, t *trail) *CycleError {
	ids := t.path()
	path := make([]string, len(ids))
	for i, v := range ids {
		path[i] = p.stages.name(v)
	}
	return &CycleError{Stage: p.stages.name(id), Path: path}
}

// deliver hands a finished request to its group's output and frees its
// place in the machine.
func (p *Pipelines[T]) deliver(r Request[T]) {
	r.group.deliver(r)
	p.life.done(1)
	p.room.signal()
}

// timingSample is how many requests of a group share one timed request:
// a clock reading costs 20-50ns, more than the rest of a transition.
const timingSample = 8

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
