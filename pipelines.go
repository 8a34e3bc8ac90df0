package statepipe

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Pipelines runs requests through a state machine on a fixed set of worker
// goroutines. Create it with [New], feed it through groups
// ([Pipelines.NewGroup]) or [Pipelines.Do], and stop it with
// [Pipelines.Close].
type Pipelines[T any] struct {
	sm      StateMachine[T]
	cfg     config
	mws     []Middleware[T]
	log     *slog.Logger
	obs     Observer // nil: no events; otherwise it recovers the user's panics
	stages  *stageIndex
	start   Stage[T]
	records records[T]

	// in carries new and resumed requests to the workers. It never fills:
	// its capacity is the bound on requests inside the machine. Submit
	// waits while queueDepth requests are in it.
	in         chan *record[T]
	queueDepth int

	// Places inside the machine (see closedBit): admitted counts requests
	// let in (so it is also their id), released those handed to their
	// group. Close sets closedBit in admitted.
	admitted  paddedCount
	released  paddedCount
	room      wakeup        // wakes a Submit waiting for room inside the machine
	watch     *roomWatch[T] // wakes a Submit waiting for room its group's consumer made
	drained   chan struct{} // closed once closing and nothing is inside
	drainOnce sync.Once
	closing   chan struct{} // closed when Close begins; wakes blocked Submits

	// The workers: a copy-on-write list (changed under mu), and their
	// number. Without autoscaling both stay as New made them.
	workers  atomic.Pointer[[]*worker[T]]
	nworkers atomic.Int32
	idle     atomic.Int32 // workers waiting for a request
	exited   atomic.Int32 // workers gone after Close
	scale    *scaler[T]   // with WithAutoscale; nil otherwise
	wg       sync.WaitGroup

	mu       sync.Mutex
	groups   groupList[T]  // open groups, closed by Close
	groupIDs atomic.Uint64 // the last group id given

	// Counts of the requests batchers finished themselves (see outTally).
	outside struct {
		mu sync.Mutex
		c  counts
	}
	parkers atomic.Pointer[[]parker] // copy on write, read when idle; index i is graph node batchNode(i)
	retries *retries[T]              // requests waiting out a retry's backoff
	keys    keyer[T]                 // with WithKey; nil otherwise
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
	parked() int // requests it holds: parked, or in a flush under way
}

// ErrCloseInStage is returned by [Pipelines.Close] when it is called from
// a goroutine of the engine (a stage, a middleware, a flush, or an
// Observer called there): Close waits for every request to finish, so
// from there it would wait for itself. Nothing is closed; call Close from
// another goroutine.
var ErrCloseInStage = errors.New("statepipe: Close called from a stage, a flush or an observer; it would wait for itself")

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
	p := &Pipelines[T]{
		sm:         sm,
		cfg:        cfg,
		mws:        mws,
		log:        cfg.logger,
		start:      sm.Start,
		in:         make(chan *record[T], cfg.maxInFlight),
		queueDepth: queueDepth(max(cfg.workers, cfg.scaleMax)),
		room:       newWakeup(),
		drained:    make(chan struct{}),
		closing:    make(chan struct{}),
		watch:      newRoomWatch[T](),
	}
	if cfg.observer != nil {
		p.obs = safeObserver(cfg.observer, p.log)
	}
	p.records.p = p
	p.retries = newRetries(p)
	if mk, ok := cfg.keys.(func(*Pipelines[T]) keyer[T]); ok {
		p.keys = mk(p)
	}
	p.stages = newStageIndex(sm, names, codeOf(p.start))
	p.parkers.Store(new([]parker))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.watch.run()
	}()
	p.workers.Store(new([]*worker[T]))
	if cfg.scaleMax > 0 {
		p.scale = newScaler(p, cfg.workers, cfg.scaleMax) // before the workers, which read it
	}
	p.addWorkers(cfg.workers)
	if p.scale != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.scale.run()
		}()
	}
	p.log.Info("statepipe: started", "stages", names, "workers", cfg.workers, "maxInFlight", cfg.maxInFlight)
	return p, nil
}

// goEngine starts f on a goroutine of the engine, which Close joins.
func (p *Pipelines[T]) goEngine(f func()) {
	p.wg.Add(1)
	go engineGoroutine(&p.wg, f)
}

// engineGoroutine is the first frame of every goroutine that runs user
// code for the engine (workers, flushes): Close looks for it on its
// caller's stack. It is not generic, so it has one entry point.
//
//go:noinline
func engineGoroutine(wg *sync.WaitGroup, f func()) {
	defer wg.Done()
	f()
}

// engineCall runs f on a frame that Close recognises as the engine's, on
// a goroutine the engine did not start (a context's AfterFunc).
//
//go:noinline
func engineCall(f func()) { f() }

var (
	engineEntry     = reflect.ValueOf(engineGoroutine).Pointer()
	engineCallEntry = reflect.ValueOf(engineCall).Pointer()
)

// onEngineGoroutine reports whether the caller runs for the engine, of
// any Pipelines: on a goroutine started by goEngine, or under engineCall.
func onEngineGoroutine() bool {
	pcs := make([]uintptr, 64)
	for {
		n := runtime.Callers(1, pcs)
		if n < len(pcs) {
			pcs = pcs[:n]
			break
		}
		pcs = make([]uintptr, 2*len(pcs))
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if f.Entry == engineEntry || f.Entry == engineCallEntry {
			return true
		}
		if !more {
			return false
		}
	}
}

// Stages returns the names of the stages found by New: Start first, then the
// other exported methods with the Stage signature, in name order.
func (p *Pipelines[T]) Stages() []string {
	return slices.Clone(p.stages.names()[:p.stages.discovered])
}

// Close stops intake (Submit returns ErrClosed), closes every group, lets
// the requests inside the machine finish (batches pending are flushed;
// requests waiting out a retry's backoff or for their key's turn are
// inside too, and are waited for: cancel their contexts to end them),
// waits for every goroutine it started, and then calls the machine's
// Close. It never waits for consumers: results not yet received stay in
// their group's Out, which closes after the last one (see [Group.Out] for
// what that costs a large group). Calling Close again waits for the first
// call and returns nil. Called from a stage, a flush or an observer it
// returns [ErrCloseInStage] and does nothing.
func (p *Pipelines[T]) Close() error {
	if onEngineGoroutine() {
		return ErrCloseInStage
	}
	p.once.Do(func() {
		close(p.closing)
		if p.scale != nil {
			close(p.scale.quit) // the count stays as it is for the drain
		}
		p.closeAdmission()

		p.mu.Lock()
		groups := p.groups.all()
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
		close(p.watch.quit)
		p.retries.close()
		if p.keys != nil {
			p.keys.close()
		}
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
func (p *Pipelines[T]) addParker(pk parker) (at node, closing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.parkers.Load()
	i := slices.Index(old, pk)
	if i < 0 {
		i = len(old)
		grown := append(old[:len(old):len(old)], pk)
		p.parkers.Store(&grown)
	}
	return batchNode(i), p.closed()
}

// batchName returns the name of the parker at a graph node.
func (p *Pipelines[T]) batchName(at node) string {
	parkers := *p.parkers.Load()
	if i := int(at - firstBatchNode); at >= firstBatchNode && i < len(parkers) {
		return parkers[i].name()
	}
	return "batch"
}

// idleNow reports whether every worker waits and nothing is queued.
func (p *Pipelines[T]) idleNow() bool {
	return p.idle.Load() == p.nworkers.Load() && len(p.in) == 0
}

// resume hands a parked request back to the workers, which continue it at
// its Next, or finish it if Next is nil or Err is set. It never blocks: a
// parked request is still counted inside the machine, so in has room.
func (p *Pipelines[T]) resume(rec *record[T]) {
	p.in <- rec
}

func (p *Pipelines[T]) register(g *Group[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed() {
		return false
	}
	p.groups.add(g)
	return true
}

func (p *Pipelines[T]) unregister(g *Group[T]) {
	p.mu.Lock()
	p.groups.remove(g)
	p.mu.Unlock()
}

// admit takes a place in the machine for a request, and returns its id.
// It gives up when ctx ends or the Pipelines or the group (groupDone)
// close.
func (p *Pipelines[T]) admit(ctx context.Context, groupDone <-chan struct{}) (uint64, error) {
	limit := int64(p.cfg.maxInFlight)
	for {
		a := p.admitted.Load()
		if a&closedBit != 0 {
			return 0, ErrClosed
		}
		if a-p.released.Load() < limit && len(p.in) < p.queueDepth {
			if !p.admitted.CompareAndSwap(a, a+1) {
				continue
			}
			if p.room.waiters.Load() > 0 && p.hasRoom() {
				p.room.signalNow() // room is left for the next waiter
			}
			return uint64(a + 1), nil
		}
		if err := p.room.wait(ctx, p.hasRoom, nil, p.closing, groupDone); err != nil {
			return 0, err
		}
	}
}

// hasRoom reports whether a request could be let in now.
func (p *Pipelines[T]) hasRoom() bool {
	return p.admitted.Load()&^closedBit-p.released.Load() < int64(p.cfg.maxInFlight) && len(p.in) < p.queueDepth
}

// tellIfIdle tells the parkers if the engine is idle: nothing is running,
// nothing is queued and no Submit is about to come in, so no request can
// join a pending batch any more and batches need not linger. A worker
// that goes to wait calls it, and so does a flush that sent nothing back
// to the workers (which then will not go to wait again).
func (p *Pipelines[T]) tellIfIdle() {
	if !p.idleNow() || p.submitting() {
		return
	}
	for _, pk := range *p.parkers.Load() {
		pk.engineIdle()
	}
}

// queueShorter wakes a Submit that may wait for the queue to get shorter,
// once it is half as deep as queueDepth: waking it for every request taken
// would have it sleep and wake once per request while the workers keep up.
func (p *Pipelines[T]) queueShorter() {
	if len(p.in) <= p.queueDepth/2 {
		p.room.signal()
	}
}

// submitting reports whether a Submit is about to come in: one waits only
// for the queue to get shorter, or one was let in and has not reached the
// queue yet (the requests inside are more than those parked). Either way
// the engine is not idle. A Submit that waits for the bound on requests
// inside does not count: it needs a batch to flush.
func (p *Pipelines[T]) submitting() bool {
	inside := p.inside()
	if p.room.waiters.Load() > 0 && inside < int64(p.cfg.maxInFlight) {
		return true
	}
	return inside > int64(p.parked())
}

// parked returns how many requests inside wait for something other than a
// worker: in batchers, for a retry's backoff, or for their key's turn.
func (p *Pipelines[T]) parked() int {
	n := int(p.retries.waiting.Load())
	if p.keys != nil {
		n += p.keys.waiting()
	}
	for _, pk := range *p.parkers.Load() {
		n += pk.parked()
	}
	return n
}

// queueDepth is how many requests may wait for a worker before Submit
// waits too: enough to keep every worker busy through the gaps of a
// submitter's scheduling, and no more, since a request in the queue only
// adds to the latency of those behind it. Measured: W3 (two workers, one
// submitter) needs about 128 or it slows by a third; W7 (eight CPU-bound
// workers) pays about 10µs of p99 per place. The bound on requests inside
// the machine still holds; requests resumed from batches may make the
// queue deeper for a moment.
func queueDepth(workers int) int { return max(128, 4*workers) }

// inside returns the number of requests inside the machine.
func (p *Pipelines[T]) inside() int64 {
	return p.admitted.Load()&^closedBit - p.released.Load()
}

// closed reports whether Close has begun.
func (p *Pipelines[T]) closed() bool { return p.admitted.Load()&closedBit != 0 }

// closeAdmission lets no more requests in; drained closes once every
// request inside is out.
func (p *Pipelines[T]) closeAdmission() {
	for {
		a := p.admitted.Load()
		if p.admitted.CompareAndSwap(a, a|closedBit) {
			break
		}
	}
	p.checkDrained()
}

// release frees the places of n requests that left the machine.
func (p *Pipelines[T]) release(n int64) {
	p.released.Add(n)
	p.room.signal()
	p.checkDrained()
}

func (p *Pipelines[T]) checkDrained() {
	if a := p.admitted.Load(); a&closedBit != 0 && a&^closedBit == p.released.Load() {
		p.drainOnce.Do(func() { close(p.drained) })
	}
}

// enqueue sends a request, admitted to g and to the machine with id, to
// the workers.
func (p *Pipelines[T]) enqueue(g *Group[T], ctx context.Context, data T, id, seq uint64) {
	rec := p.records.get()
	rec.group, rec.seq, rec.from = g, seq, nodeIn
	rec.req = Request[T]{Ctx: ctx, Data: data, Next: p.start, rec: rec, tag: (id & idMask) << callBits}
	if timed(id) || p.obs != nil {
		rec.queued = clock() // this one is timed; see Stats
	}
	if p.keys != nil && !p.keys.enter(rec) {
		return // it waits for its key's turn
	}
	p.in <- rec // never blocks: in has room for every request inside
}

// deliver hands a finished request to its group, and frees its record
// and its place in the machine.
func (p *Pipelines[T]) deliver(rec *record[T], r Request[T]) {
	p.handOut(rec, r)
	p.release(1)
}

// handOut hands a finished request to its group and frees its record; the
// caller releases its place. r is the request as it leaves: its record is
// forgotten, its id kept.
func (p *Pipelines[T]) handOut(rec *record[T], r Request[T]) {
	g, seq, line := rec.group, rec.seq, rec.line
	p.records.put(rec)
	r.rec, r.tag, r.Next = nil, r.tag&^callMask, nil
	g.put(seq, r)
	if line != nil {
		// Out now: the next request with its key may run. It is counted
		// inside already, so in has room for it.
		if next := line.leave(r.Err); next != nil {
			p.in <- next
		}
	}
}

// timingSample is how many requests share one timed request: a clock
// reading costs 20-50ns, more than the rest of a transition.
const (
	timingSampleBits = 5
	timingSample     = 1 << timingSampleBits
)

// timed picks about one request id in timingSample, by a hash of the id,
// so that routing by submission order (every 10th item takes another
// path) does not bias which stages get timed.
func timed(id uint64) bool {
	// Multiplying by 2^64/φ spreads consecutive ids evenly; the top bits
	// are zero for one id in timingSample.
	return (id*0x9E3779B97F4A7C15)>>(64-timingSampleBits) == 0
}

// epoch anchors clock readings; time.Since uses the monotonic clock.
var epoch = time.Now()

func clock() int64 { return int64(time.Since(epoch)) }
