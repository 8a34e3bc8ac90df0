package statepipe

import (
	"errors"
	"runtime/debug"
	"time"
)

// The worker set: fixed by New, or changed by autoscaling.

// addWorkers starts n more workers.
func (p *Pipelines[T]) addWorkers(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.workers.Load()
	ws := append(old[:len(old):len(old)], make([]*worker[T], n)...)
	for i := len(old); i < len(ws); i++ {
		ws[i] = newWorker(p)
		p.nworkers.Add(1)
		p.goEngine(ws[i].loop)
	}
	p.workers.Store(&ws)
}

// removeWorker takes a worker that is leaving (autoscaling) off the list,
// and keeps what it counted: the lock order is that of collect. The
// engine may be idle once it is gone, with no worker left to notice.
func (p *Pipelines[T]) removeWorker(w *worker[T]) {
	p.mu.Lock()
	old := *p.workers.Load()
	ws := make([]*worker[T], 0, len(old))
	for _, o := range old {
		if o != w {
			ws = append(ws, o)
		}
	}
	p.workers.Store(&ws)
	w.stats.publish()
	w.stats.mu.Lock()
	p.outside.mu.Lock()
	p.outside.c.merge(&w.stats.pub)
	p.outside.mu.Unlock()
	w.stats.pub.reset()
	w.stats.mu.Unlock()
	p.nworkers.Add(-1)
	p.mu.Unlock()
	p.tellIfIdle() // outside p.mu: a batcher's engineIdle takes its own lock, which bind holds before p.mu
}

// worker is one goroutine running requests through the machine. Its
// statistics are its own, so that counting costs no contention.
type worker[T any] struct {
	p     *Pipelines[T]
	stats workerStats

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
			w.p.goEngine(w.loop)
		}
	}()
	for {
		rec, next := w.receive()
		switch next {
		case closedDown:
			w.stats.publish()
			w.p.exited.Add(1)
			closed = true
			return
		case retired:
			w.p.removeWorker(w)
			closed = true
			return
		}
		w.run(rec)
	}
}

// What a worker does after receive.
const (
	runIt      = iota // run the request received
	closedDown        // the input is closed: Close is done with the workers
	retired           // autoscaling has one worker too many: leave
)

// receive returns the next request, or why there is none.
func (w *worker[T]) receive() (*record[T], int) {
	p := w.p
	select {
	case rec, ok := <-p.in:
		p.queueShorter()
		return rec, received(ok)
	default:
	}
	w.stats.publish()
	p.idle.Add(1)
	p.tellIfIdle()
	var retire <-chan struct{} // nil without autoscaling: never ready
	if p.scale != nil {
		retire = p.scale.retire
	}
	select {
	case rec, ok := <-p.in:
		p.idle.Add(-1)
		p.queueShorter()
		return rec, received(ok)
	case <-retire:
		p.idle.Add(-1)
		return nil, retired
	}
}

func received(ok bool) int {
	if ok {
		return runIt
	}
	return closedDown
}

// run carries a request through the machine until it finishes, fails or
// is taken by a parker. A panic in a stage or its middleware fails the
// request; one recover per request, not per stage, keeps the cost of a
// transition low.
//
// The worker owns the request between stage calls. Each call has a fresh
// tag, published in the record's owner while the call runs; when the
// stage returns, the worker takes the request back by swapping that tag
// for the next call's (or 0): one atomic operation per call. If the swap
// fails, a parker (Batcher.Add) took the request during the call, and the
// worker lets go of it whatever the stage returned.
func (w *worker[T]) run(rec *record[T]) {
	p := w.p
	r := rec.req
	// The group's id, for events: read now, while the worker owns the
	// record, which a parker may recycle once it has the request.
	gid := rec.group.id
	// Stage runs are timed for the sampled requests, and for all while an
	// Observer is set; the clock costs more than the rest of a transition.
	timed := rec.queued != 0
	id := -1 // the stage running; -1 outside stages
	var tag uint64
	// now is the last clock reading of a timed request: the end of one
	// stage is the start of the next, so a stage costs one reading.
	var now, t0 int64
	if timed {
		now = clock()
		if rec.started == 0 { // picked up for the first time
			rec.started = now
			w.stats.local.queued.observe(now - rec.queued)
			if p.obs != nil {
				p.obs.Observe(Event{Kind: RequestStarted, Request: r.ID(), Group: gid, Ctx: r.Ctx,
					Duration: nanos(now - rec.queued)})
			}
		}
	}
	defer func() {
		if id < 0 {
			return // not a stage's panic: the engine's own, which must not be hidden
		}
		v := recover()
		if v == nil {
			v = errGoexit // the stage called runtime.Goexit: not even a panic
		}
		err := p.panicked(p.stages.name(id), v)
		kept := rec.owner.CompareAndSwap(tag, 0) // false: a parker took it before the panic
		w.stats.stage(id, kept)
		d := int64(-1)
		if timed {
			d = clock() - t0
			w.stats.stageTime(id, d)
		}
		if p.obs != nil {
			w.observeStage(&r, gid, id, d, err, !kept, 0)
		}
		if !kept {
			return // the parker has the request and will resume it
		}
		r.Next, r.Err = nil, err
		w.stats.local.edges.add(node(id), nodeFailed, -1)
		w.finish(rec, r)
	}()
	lastTime := int64(-1) // time spent in the last stage, if timed
	tag = r.tag           // of the last call; the first call of this run takes the next
	first := true
	for r.Err == nil && r.Next != nil {
		if err := r.Ctx.Err(); err != nil {
			r.Err = err
			break
		}
		stage := r.Next
		sid := p.stages.id(codeOf(stage))
		if rec.retry {
			// The same stage again, after a retry's backoff: not a new
			// step, so no transition and no cycle.
			rec.retry = false
		} else {
			rec.attempt = 1
			if p.cfg.dag {
				if rec.visited.add(sid) {
					r.Err = p.cycleError(sid, &rec.trail)
					break
				}
				rec.trail.push(sid)
			}
			w.stats.local.edges.add(rec.from, node(sid), lastTime)
			rec.from = node(sid)
		}
		r.Next = nil // a stage that sets nothing finishes the request
		if first {
			// Later calls get their tag when the previous one returns.
			tag = nextCall(tag)
			rec.owner.Store(tag)
			first = false
		}
		r.tag = tag
		id = sid
		t0 = now
		if p.obs != nil && timed {
			// A fresh reading: the observer's own time for the last
			// stage must not count in this one, whose start it infers.
			t0 = clock()
		}
		var out Request[T]
		if w.chain == nil {
			out = stage(r)
		} else {
			w.curStage, w.curName = stage, p.stages.name(sid)
			out = w.chain(r)
		}
		id = -1
		// Take the request back, and in the same swap publish the tag of
		// the next call, if any: a copy from this call is stale from now.
		// After 2^16 calls the call count would come round again, so the
		// request moves to a fresh record instead (copies kept name the
		// old one, which nothing will take from again).
		next := uint64(0)
		if out.Next != nil && out.Err == nil && nextCall(tag)&callMask != 0 {
			next = nextCall(tag)
		}
		kept := rec.owner.CompareAndSwap(tag, next)
		if kept && next == 0 && out.Next != nil && out.Err == nil {
			rec = p.records.move(rec)
			r.rec = rec
			first = true
		}
		lastTime = -1
		if timed {
			now = clock()
			lastTime = now - t0
			w.stats.stageTime(sid, lastTime)
		}
		if !kept {
			// A parker took the request during the call. The stage
			// returned what it gave back (return b.Add(r)), which names
			// it; a stage that returned something else loses only the
			// transition in the graph and the name in the Parked event.
			w.stats.stage(sid, false)
			at, named := out.parker()
			if named {
				w.stats.local.edges.add(node(sid), at, lastTime)
			}
			if p.obs != nil {
				w.observeStage(&r, gid, sid, lastTime, nil, true, at)
			}
			return
		}
		// Only the four fields pass from what the stage returned: the
		// bookkeeping is the worker's, whatever Request came back.
		if out.Ctx != nil {
			r.Ctx = out.Ctx
		}
		r.Data, r.Err, r.Next = out.Data, out.Err, out.Next
		if !first {
			tag = next
		}
		w.stats.stage(sid, r.Err != nil)
		if p.obs != nil {
			w.observeStage(&r, gid, sid, lastTime, r.Err, false, 0)
		}
		if r.Err != nil {
			// A marked error runs the stage again after a backoff.
			r.Next = stage
			rec.req = r
			if p.retries.retry(rec, p.stages.name(sid), nil) {
				w.stats.local.stage(sid).retries++
				return
			}
			r.Err = rec.req.Err // unchanged, or a *RetryError
		}
	}
	end := nodeDone
	if r.Err != nil {
		end = nodeFailed
	}
	w.stats.local.edges.add(rec.from, end, lastTime)
	w.finish(rec, r)
}

// nextCall returns the tag of the stage call after the one tagged tag.
func nextCall(tag uint64) uint64 { return tag&^callMask | (tag+1)&callMask }

// observeStage tells the observer of a stage run that took d (-1: not
// timed), and of the park if a parker (at node at, if known) took the
// request.
func (w *worker[T]) observeStage(r *Request[T], group uint64, id int, d int64, err error, parked bool, at node) {
	obs := w.p.obs
	ev := Event{Kind: StageDone, Request: r.ID(), Group: group, Ctx: r.Ctx,
		Stage: w.p.stages.name(id), Duration: nanos(d), Err: err}
	obs.Observe(ev)
	if parked {
		obs.Observe(Event{Kind: Parked, Request: ev.Request, Group: group, Ctx: r.Ctx, Stage: ev.Stage,
			Batch: w.p.batchName(at)})
	}
}

// finish counts a request going out and hands it to its group.
func (w *worker[T]) finish(rec *record[T], r Request[T]) {
	failed, running := w.p.leaving(rec, &r)
	w.p.deliver(rec, r)
	w.stats.finished(failed, running)
}

// leaving readies a finished request to go out, on whatever goroutine
// finishes it, and returns what the caller counts: whether it failed, and
// its running time (-1 if not timed). Next is nil on every request out,
// also one that failed with Next set.
func (p *Pipelines[T]) leaving(rec *record[T], r *Request[T]) (failed bool, running int64) {
	r.Next = nil
	running = -1
	if rec.started != 0 {
		running = clock() - rec.started
	}
	if p.obs != nil {
		p.obs.Observe(Event{Kind: RequestDone, Request: r.ID(), Group: rec.group.id, Ctx: r.Ctx,
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
