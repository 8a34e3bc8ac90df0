package statepipe

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Stats is a snapshot of what the Pipelines have done. Each worker
// publishes its counts every 64 requests and whenever it waits for work,
// so while work goes on a snapshot may trail by up to 64 requests per
// worker; once the Pipelines are idle or closed it is exact.
type Stats struct {
	Submitted uint64 // requests accepted by Submit
	Completed uint64 // came out with Err == nil
	Failed    uint64 // came out with an error
	InFlight  int    // inside the machine: queued, running or parked
	Queued    int    // waiting for a worker
	Running   int    // on a worker right now
	Parked    int    // held by batchers
	Retrying  int    // waiting out a retry's backoff (WithRetry)
	Workers   int    // worker goroutines

	// Keys describe the keys inside, with WithKey; zero otherwise.
	Keys KeyStats

	// ObserverPanics counts panics recovered in the Observer's Observe
	// (WithObserver); their events were dropped.
	ObserverPanics uint64

	// Times are measured on one request in 32 (on every request while
	// an Observer is set), so that timing costs little; Count says how
	// many were measured.
	QueueTime Durations    // from Submit until a worker first picks the request up
	RunTime   Durations    // from that pick-up until the request is out, parked time included
	Stages    []StageStats // one per stage: discovered stages first, then other functions seen as Next
	Groups    []GroupStats // open groups
	Batchers  []BatchStats // batchers in use
}

// Durations summarises observed durations.
type Durations struct {
	Count         uint64
	Sum           time.Duration // of all of them: exporters derive rates from it
	Min, Avg, Max time.Duration
}

// StageStats counts the runs of one stage.
type StageStats struct {
	Name    string
	Runs    uint64    // times the stage was called
	Errors  uint64    // runs that ended with the request's Err set (panics included)
	Retries uint64    // of those, runs retried after a backoff (Retry)
	Latency Histogram // durations of the timed runs
}

// P50, P90 and P99 estimate latency quantiles of the stage's timed runs.
func (s StageStats) P50() time.Duration { return s.Latency.Quantile(0.50) }
func (s StageStats) P90() time.Duration { return s.Latency.Quantile(0.90) }
func (s StageStats) P99() time.Duration { return s.Latency.Quantile(0.99) }

// GroupStats describes one open group.
type GroupStats struct {
	ID        uint64
	Ordered   bool
	Limit     int    // its in-flight bound
	Submitted uint64 // requests accepted
	Pending   int    // admitted, not yet in its output
	Buffered  int    // in its output, not yet received
}

// Stats returns a snapshot of the counters. It is safe to call at any time,
// also after Close.
func (p *Pipelines[T]) Stats() Stats {
	var c counts
	p.collect(&c)
	names := p.stages.names()
	s := Stats{
		Submitted: uint64(p.admitted.Load() &^ closedBit),
		Completed: c.completed,
		Failed:    c.failed,
		InFlight:  int(p.inside()),
		Queued:    len(p.in),
		Workers:   len(p.workers),

		ObserverPanics: observerPanics(p.obs),
		QueueTime:      c.queued.durations(),
		RunTime:        c.running.durations(),
		Stages:         make([]StageStats, len(names)),
	}
	s.Running = max(0, s.Workers-int(p.idle.Load())-int(p.exited.Load()))
	for i, n := range names {
		st := c.stage(i)
		s.Stages[i] = StageStats{Name: n, Runs: st.runs, Errors: st.errs, Retries: st.retries, Latency: st.latency}
	}
	s.Retrying = int(p.retries.waiting.Load())
	if p.keys != nil {
		s.Keys = p.keys.stats()
	}
	p.mu.Lock()
	groups := p.groups.all()
	p.mu.Unlock()
	for _, g := range groups {
		s.Groups = append(s.Groups, g.stats())
	}
	slices.SortFunc(s.Groups, func(a, b GroupStats) int { return cmp.Compare(a.ID, b.ID) })
	for _, pk := range *p.parkers.Load() {
		bs := pk.stats()
		s.Parked += bs.Parked
		s.Batchers = append(s.Batchers, bs)
	}
	return s
}

// collect adds every published count to c: the workers', and those of
// requests finished by batchers.
func (p *Pipelines[T]) collect(c *counts) {
	for _, w := range p.workers {
		w.stats.mu.Lock()
		c.merge(&w.stats.pub)
		w.stats.mu.Unlock()
	}
	p.outside.mu.Lock()
	c.merge(&p.outside.c)
	p.outside.mu.Unlock()
}

// outTally counts the requests a batcher finished itself after a flush.
type outTally struct {
	n                 int
	completed, failed uint64
	running           localTiming
}

func (t *outTally) add(failed bool, running int64) {
	if t.n == 0 {
		t.running.reset()
	}
	t.n++
	if failed {
		t.failed++
	} else {
		t.completed++
	}
	if running >= 0 {
		t.running.observe(running)
	}
}

// countOut adds a batcher's tally of requests it finished to the stats,
// with their edges from its graph node.
func (p *Pipelines[T]) countOut(from node, t *outTally) {
	if t.n == 0 {
		return
	}
	p.outside.mu.Lock()
	defer p.outside.mu.Unlock()
	c := &p.outside.c
	c.completed += t.completed
	c.failed += t.failed
	c.running.merge(&t.running)
	if t.completed > 0 {
		c.edges.data(from, nodeDone).count += t.completed
	}
	if t.failed > 0 {
		c.edges.data(from, nodeFailed).count += t.failed
	}
}

// workerStats are one worker's counters. The worker counts in local, which
// only it touches, and merges local into pub under mu every publishEvery
// requests and whenever it waits for work: counting costs no atomic
// operation or lock per request, and Stats reads pub under mu.
type workerStats struct {
	local    counts
	requests int // since the last publish

	mu  sync.Mutex
	pub counts
}

const publishEvery = 64

// counts are what workers count.
type counts struct {
	completed, failed uint64
	queued, running   localTiming
	stages            []stageCounts // by stage id, grown as ids appear
	used              []int32       // ids of the stages counted since the last reset
	edges             edgeCounts
}

type stageCounts struct {
	runs, errs, retries uint64
	latency             Histogram
	used                bool // listed in counts.used
}

func (ws *workerStats) init() {
	ws.local.queued.reset()
	ws.local.running.reset()
	ws.pub.queued.reset()
	ws.pub.running.reset()
}

func (ws *workerStats) stage(id int, failed bool) {
	st := ws.local.stage(id)
	st.runs++
	if failed {
		st.errs++
	}
}

// stageTime records the duration of a timed run of stage id.
func (ws *workerStats) stageTime(id int, ns int64) {
	ws.local.stage(id).latency.observe(ns)
}

// stage returns the counts of stage id, noting that it is in use.
func (c *counts) stage(id int) *stageCounts {
	if id >= len(c.stages) {
		c.stages = append(c.stages, make([]stageCounts, id+1-len(c.stages))...)
	}
	st := &c.stages[id]
	if !st.used {
		st.used = true
		c.used = append(c.used, int32(id))
	}
	return st
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
	if ws.requests++; ws.requests >= publishEvery {
		ws.publish()
	}
}

// publish merges the local counts into the published ones.
func (ws *workerStats) publish() {
	ws.mu.Lock()
	ws.pub.merge(&ws.local)
	ws.mu.Unlock()
	ws.local.reset()
	ws.requests = 0
}

// merge adds o to c.
func (c *counts) merge(o *counts) {
	c.completed += o.completed
	c.failed += o.failed
	c.queued.merge(&o.queued)
	c.running.merge(&o.running)
	for _, i := range o.used {
		os := &o.stages[i]
		st := c.stage(int(i))
		st.runs += os.runs
		st.errs += os.errs
		st.retries += os.retries
		st.latency.add(&os.latency)
	}
	c.edges.merge(&o.edges)
}

// reset zeroes c after a merge, touching only what was used.
func (c *counts) reset() {
	for _, i := range c.used {
		c.stages[i] = stageCounts{}
	}
	c.completed, c.failed, c.used = 0, 0, c.used[:0]
	c.queued.reset()
	c.running.reset()
	c.edges.reset()
}

// localTiming accumulates durations in nanoseconds.
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

func (t *localTiming) merge(o *localTiming) {
	if o.count == 0 {
		return
	}
	if t.count == 0 || o.min < t.min {
		t.min = o.min
	}
	t.max = max(t.max, o.max)
	t.count += o.count
	t.sum += o.sum
}

func (t *localTiming) durations() Durations {
	if t.count == 0 {
		return Durations{}
	}
	return Durations{
		Count: uint64(t.count),
		Sum:   time.Duration(t.sum),
		Min:   time.Duration(t.min),
		Avg:   time.Duration(t.sum / t.count),
		Max:   time.Duration(t.max),
	}
}
