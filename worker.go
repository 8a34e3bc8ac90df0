package statepipe

import (
	"errors"
	"runtime/debug"
	"time"
)

// worker is one goroutine running requests through the machine. Its
// statistics are its own, so that counting costs no contention.
type worker[T any] struct {
	p     *Pipelines[T]
	stats workerStats

	call      uint32 // counts stage calls (wrapping); see Request.handOff
	handedOff bool   // the current stage handed its request to a parker
	parkedIn  uint8  // and the parker's graph node

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
	// Stage runs are timed for the sampled requests, and for all while an
	// Observer is set; the clock costs more than the rest of a transition.
	timed := r.queued != 0
	id := -1 // the stage running; -1 outside stages
	// now is the last clock reading of a timed request: the end of one
	// stage is the start of the next, so a stage costs one reading.
	var now, t0 int64
	if timed {
		now = clock()
		if r.started == 0 { // picked up for the first time
			r.started = now
			w.stats.local.queued.observe(now - r.queued)
			if p.obs != nil {
				p.obs.Observe(Event{Kind: RequestStarted, Request: r.id(), Group: r.group.id, Ctx: r.Ctx,
					Duration: nanos(now - r.queued)})
			}
		}
	}
	// keep is the bookkeeping to restore if a stage returns a Request it
	// made itself instead of the one it was given.
	keep := r
	defer func() {
		if id < 0 {
			return // not a stage's panic: the engine's own, which must not be hidden
		}
		v := recover()
		if v == nil {
			v = errGoexit // the stage called runtime.Goexit: not even a panic
		}
		err := p.panicked(p.stages.name(id), v)
		w.stats.stage(id, !w.handedOff) // a request handed off goes on
		d := int64(-1)
		if timed {
			d = clock() - t0
			w.stats.stageTime(id, d)
		}
		if p.obs != nil {
			w.observeStage(&keep, id, d, err)
		}
		if w.handedOff {
			w.stats.local.edges.add(uint8(id), w.parkedIn, -1)
			return // a parker has the request and will resume it
		}
		// The stage never returned: r still names this worker's call,
		// which no parker may take it under once it is out.
		r.Next, r.Err, r.worker = nil, err, nil
		w.stats.local.edges.add(uint8(id), nodeFailed, -1)
		w.finish(r)
	}()
	lastTime := int64(-1) // time spent in the last stage, if timed
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
		w.stats.local.edges.add(r.from, uint8(sid), lastTime)
		r.from = uint8(sid)
		keep.from = r.from
		r.Next = nil // a stage that sets nothing finishes the request
		w.call++
		w.handedOff = false
		r.worker, r.call = w, w.call
		id = sid
		t0 = now
		if p.obs != nil && timed {
			// A fresh reading: the observer's own time for the last
			// stage must not count in this one, whose start it infers.
			t0 = clock()
		}
		if w.chain == nil {
			r = stage(r)
		} else {
			w.curStage, w.curName = stage, p.stages.name(sid)
			r = w.chain(r)
		}
		id = -1
		lastTime = -1
		if timed {
			now = clock()
			lastTime = now - t0
			w.stats.stageTime(sid, lastTime)
		}
		if p.obs != nil {
			w.observeStage(&keep, sid, lastTime, r.Err)
		}
		w.stats.stage(sid, r.Err != nil && !w.handedOff)
		if w.handedOff {
			// Whatever the stage returned: a parker has the request now.
			w.stats.local.edges.add(uint8(sid), w.parkedIn, lastTime)
			return
		}
		r.worker = nil
		if r.group == nil || r.Ctx == nil {
			r.adopt(&keep)
		}
	}
	end := uint8(nodeDone)
	if r.Err != nil {
		end = nodeFailed
	}
	w.stats.local.edges.add(r.from, end, lastTime)
	w.finish(r)
}

// observeStage tells the observer of a stage run that took d (-1: not
// timed). r is the request as the stage got it: what it returned may be
// anything.
func (w *worker[T]) observeStage(r *Request[T], id int, d int64, err error) {
	obs := w.p.obs
	ev := Event{Kind: StageDone, Request: r.id(), Group: r.group.id, Ctx: r.Ctx,
		Stage: w.p.stages.name(id), Duration: nanos(d), Err: err}
	if w.handedOff {
		ev.Err = nil
	}
	obs.Observe(ev)
	if w.handedOff {
		obs.Observe(Event{Kind: Parked, Request: ev.Request, Group: ev.Group, Ctx: r.Ctx,
			Stage: ev.Stage, Batch: w.p.batchName(w.parkedIn)})
	}
}

// adopt gives r, a Request made by a stage, the context and bookkeeping
// of the request the stage was given.
func (r *Request[T]) adopt(orig *Request[T]) {
	if r.Ctx == nil {
		r.Ctx = orig.Ctx
	}
	r.group, r.seq, r.from, r.queued, r.started = orig.group, orig.seq, orig.from, orig.queued, orig.started
	r.visited, r.trail = orig.visited, orig.trail
}

// finish counts r and hands it to its group.
func (w *worker[T]) finish(r Request[T]) {
	failed, running := w.p.leaving(&r)
	w.p.deliver(r)
	w.stats.finished(failed, running)
}

// leaving readies a finished request to go out, on whatever goroutine
// finishes it, and returns what the caller counts: whether it failed, and
// its running time (-1 if not timed). Next is nil on every request out,
// also one that failed with Next set, and no request leaves naming a
// worker (a Batcher would take it for one in a stage).
func (p *Pipelines[T]) leaving(r *Request[T]) (failed bool, running int64) {
	r.Next, r.worker = nil, nil
	running = -1
	if r.started != 0 {
		running = clock() - r.started
	}
	if p.obs != nil {
		p.obs.Observe(Event{Kind: RequestDone, Request: r.id(), Group: r.group.id, Ctx: r.Ctx,
			Duration: nanos(running), Err: r.Err})
	}
	return r.Err != nil, running
}

// nanos converts a clock difference to a Duration; negative (not timed)
// becomes 0.
func nanos(d int64) time.Duration { return time.Duration(max(d, 0)) }

// errGoexit is the panic value recorded for a stage that called
// runtime.Goexit.
var errGoexit = errors.New("statepipe: stage called runtime.Goexit")

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
