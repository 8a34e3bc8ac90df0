package statepipe

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of what the Pipelines have done. Each worker publishes
// its counts every 64 requests and whenever it waits for work, so while
// work goes on a snapshot may trail by up to 64 requests per worker; once
// the Pipelines are idle or closed it is exact.
type Stats struct {
	Submitted uint64 // requests accepted by Submit
	Completed uint64 // came out with Err == nil
	Failed    uint64 // came out with an error
	InFlight  int    // inside the machine: queued, running or parked
	Running   int    // on a worker right now
	Workers   int    // worker goroutines

	// Durations are measured on every 8th request admitted to a group, so
	// that timing costs little; Count says how many were measured.
	QueueTime Durations    // from Submit until a worker first picks the request up
	RunTime   Durations    // from that pick-up until the request is out, parked time included
	Stages    []StageStats // one per stage: discovered stages first, then other functions seen as Next
}

// Durations summarises observed durations.
type Durations struct {
	Count         uint64
	Min, Avg, Max time.Duration
}

// StageStats counts the runs of one stage.
type StageStats struct {
	Name   string
	Runs   uint64 // times the stage was called
	Errors uint64 // runs that ended with the request's Err set (panics included)
}

// Stats returns a snapshot of the counters. It is safe to call at any time,
// also after Close, and takes no lock the workers use.
func (p *Pipelines[T]) Stats() Stats {
	var s Stats
	names := p.stages.names()
	s.Stages = make([]StageStats, len(names))
	for i, n := range names {
		s.Stages[i].Name = n
	}
	var queued, running Durations
	for _, w := range p.workers {
		ws := &w.stats
		s.Completed += ws.completed.Load()
		s.Failed += ws.failed.Load()
		queued = queued.merge(&ws.queued)
		running = running.merge(&ws.running)
		for i := range s.Stages {
			s.Stages[i].Runs += ws.stageRuns[i].Load()
			s.Stages[i].Errors += ws.stageErrs[i].Load()
		}
	}
	s.InFlight = int(p.life.count())
	s.Submitted = s.Completed + s.Failed + uint64(s.InFlight)
	s.Workers = len(p.workers)
	s.Running = max(0, s.Workers-int(p.idle.Load())-int(p.exited.Load()))
	s.QueueTime, s.RunTime = queued, running
	return s
}

// workerStats are one worker's counters. The worker counts in plain
// fields (local) and publishes them to atomics every publishEvery requests
// and whenever it waits for work, so that counting costs no atomic
// operation per request and Stats can read while the worker runs.
type workerStats struct {
	local struct {
		requests        int
		completed       uint64
		failed          uint64
		queued, running localTiming
		runs, errs      [maxStageIDs]uint64
		used            uint64 // bit i set: runs[i] or errs[i] may be non-zero
	}
	completed       atomic.Uint64 // requests out with Err nil
	failed          atomic.Uint64 // requests out with an error
	queued, running timing
	stageRuns       [maxStageIDs]atomic.Uint64
	stageErrs       [maxStageIDs]atomic.Uint64
	_               [64]byte // keep the next worker's counters off this cache line
}

const publishEvery = 64

func (ws *workerStats) init() {
	ws.queued.min.Store(-1)
	ws.running.min.Store(-1)
	ws.local.queued.reset()
	ws.local.running.reset()
}

func (ws *workerStats) stage(id int, failed bool) {
	ws.local.runs[id]++
	if failed {
		ws.local.errs[id]++
	}
	ws.local.used |= 1 << id
}

// finished counts a request going out, and its running time unless that
// is negative (not timed); it publishes every publishEvery.
func (ws *workerStats) finished(failed bool, running int64) {
	l := &ws.local
	if failed {
		l.failed++
	} else {
		l.completed++
	}
	if running >= 0 {
		l.running.observe(running)
	}
	if l.requests++; l.requests >= publishEvery {
		ws.publish()
	}
}

// publish moves the local counts to the atomics Stats reads.
func (ws *workerStats) publish() {
	l := &ws.local
	if l.completed > 0 {
		ws.completed.Add(l.completed)
	}
	if l.failed > 0 {
		ws.failed.Add(l.failed)
	}
	ws.queued.add(&l.queued)
	ws.running.add(&l.running)
	for used := l.used; used != 0; used &= used - 1 {
		i := bits.TrailingZeros64(used)
		if l.runs[i] > 0 {
			ws.stageRuns[i].Add(l.runs[i])
		}
		if l.errs[i] > 0 {
			ws.stageErrs[i].Add(l.errs[i])
		}
		l.runs[i], l.errs[i] = 0, 0
	}
	l.used, l.requests, l.completed, l.failed = 0, 0, 0, 0
}

// localTiming accumulates durations in nanoseconds between publications.
type localTiming struct{ count, sum, min, max int64 }

func (t *localTiming) reset() { *t = localTiming{min: -1} }

func (t *localTiming) observe(d int64) {
	t.count++
	t.sum += d
	if t.min < 0 || d < t.min {
		t.min = d
	}
	t.max = max(t.max, d)
}

// timing is the published form of localTiming; one goroutine writes it.
type timing struct {
	count, sum, min, max atomic.Int64
}

func (t *timing) add(l *localTiming) {
	if l.count == 0 {
		return
	}
	t.count.Add(l.count)
	t.sum.Add(l.sum)
	if m := t.min.Load(); m < 0 || l.min < m {
		t.min.Store(l.min)
	}
	if l.max > t.max.Load() {
		t.max.Store(l.max)
	}
	l.reset()
}

// merge adds t's observations to d.
func (d Durations) merge(t *timing) Durations {
	n := t.count.Load()
	if n == 0 {
		return d
	}
	total := int64(d.Avg)*int64(d.Count) + t.sum.Load()
	lo, hi := time.Duration(t.min.Load()), time.Duration(t.max.Load())
	if d.Count == 0 || lo < d.Min {
		d.Min = lo
	}
	d.Max = max(d.Max, hi)
	d.Count += uint64(n)
	d.Avg = time.Duration(total / int64(d.Count))
	return d
}
