package statepipe

// Fixtures shared by the package's tests: helpers that build, feed and
// drain Pipelines, and the machines that tests in several files are built
// on. A fixture that serves one test file only lives in that file.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// ---------------------------------------------------------------------------
// Building, feeding and draining Pipelines.

// mustNew is New that fails the test on error.
func mustNew[T any](t testing.TB, sm StateMachine[T], opts ...Option) *Pipelines[T] {
	t.Helper()
	p, err := New(sm, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// mustSubmit submits data to g or fails the test.
func mustSubmit[T any](t testing.TB, g *Group[T], ctx context.Context, data T) {
	t.Helper()
	if err := g.Submit(ctx, data); err != nil {
		t.Fatalf("Submit(%v): %v", data, err)
	}
}

// submitNThenClose submits 0..n-1 to g in order, then closes g; run it in a
// goroutine of its own.
func submitNThenClose(t testing.TB, g *Group[int], n int) {
	for i := range n {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Error(err)
		}
	}
	g.Close()
}

// submitN submits 0..n-1 to g in order, failing the test at once if a
// Submit fails.
func submitN(t testing.TB, g *Group[int], n int) {
	t.Helper()
	for i := range n {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
}

// submitAsync runs Submit on its own goroutine; the channel gets its error.
func submitAsync[T any](g *Group[T], ctx context.Context, data T) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- g.Submit(ctx, data) }()
	return errc
}

// pollSubmit reports whether the Submit behind errc has returned, and its
// error, without blocking.
func pollSubmit(errc <-chan error) (err error, returned bool) {
	select {
	case err = <-errc:
		return err, true
	default:
		return nil, false
	}
}

// drain receives from g's Out until it closes.
func drain[T any](g *Group[T]) []Request[T] {
	var out []Request[T]
	for r := range g.Out() {
		out = append(out, r)
	}
	return out
}

// drainWithin is drain that fails the test instead of hanging if Out does
// not close within d. On real time, d bounds the wait. In a synctest
// bubble the timeout fires only once every goroutine is blocked (after any
// batch linger), so a d far beyond any linger (1000*time.Hour) turns a
// request that never comes out into a failure instead of a hang.
func drainWithin[T any](t testing.TB, g *Group[T], d time.Duration) []Request[T] {
	t.Helper()
	var out []Request[T]
	timeout := time.After(d)
	for {
		select {
		case r, ok := <-g.Out():
			if !ok {
				return out
			}
			out = append(out, r)
		case <-timeout:
			t.Fatalf("Out did not close within %v (%d results received)", d, len(out))
			return out
		}
	}
}

// drainReady receives what is ready in g's output, without waiting for
// more; in a synctest bubble only, as it lets the bubble settle first.
func drainReady[T any](g *Group[T]) []Request[T] {
	var out []Request[T]
	for waited := false; ; {
		select {
		case r, ok := <-g.Out():
			if !ok {
				return out
			}
			out = append(out, r)
			waited = false
		default:
			if waited {
				return out
			}
			// A large group moves results into Out as the consumer
			// takes them: let it, then look again.
			synctest.Wait()
			waited = true
		}
	}
}

// tryRecv receives from g's Out without blocking.
func tryRecv[T any](g *Group[T]) (r Request[T], ok, closed bool) {
	select {
	case r, open := <-g.Out():
		return r, open, !open
	default:
		return r, false, false
	}
}

// stageStats returns the statistics of the stage called name.
func stageStats(t testing.TB, s Stats, name string) StageStats {
	t.Helper()
	for _, st := range s.Stages {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no stage %q in Stats (have %+v)", name, s.Stages)
	return StageStats{}
}

// mustReturnWithin runs f and fails the test if it does not return within
// d (for tests on real time, where a hang would otherwise stall the whole
// suite).
func mustReturnWithin(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// ---------------------------------------------------------------------------
// Goroutines, stages and parking.

// raiseMax raises *hi to n if n is larger.
func raiseMax(hi *atomic.Int64, n int64) {
	for {
		old := hi.Load()
		if n <= old || hi.CompareAndSwap(old, n) {
			return
		}
	}
}

// goroutineStacks returns the stack of every goroutine, one string each.
func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutinesIn counts the goroutines whose stack mentions fn.
func goroutinesIn(fn string) int {
	n := 0
	for _, s := range goroutineStacks() {
		if strings.Contains(s, fn) {
			n++
		}
	}
	return n
}

// batcherGoroutines counts goroutines running a Batcher method: after
// Close, there must be none.
func batcherGoroutines() int {
	return goroutinesIn("statepipe.(*Batcher[")
}

// handOff takes r from the worker running its stage, the way a Batcher
// parks a request: from then on the worker lets go of it, whatever the
// stage returns or does, and the caller must resume it exactly once with
// resumeParked. All the engine tests park through here.
func handOff[T any](r *Request[T]) {
	rec, ok := r.take()
	if !ok {
		panic("handOff: not the request of the running stage call")
	}
	rec.park(r, firstBatchNode)
}

// resumeParked resumes a request parked with handOff, as r says: at
// r.Next, or out if Next is nil or Err is set.
func resumeParked[T any](r Request[T]) {
	rec := r.rec
	rec.req = r
	rec.p.resume(rec)
}

// ---------------------------------------------------------------------------
// chainM: three stages in a row, with hooks and counters.

// chainM is a three-stage machine, Start -> A -> B, adding 1, 10 and 100 to
// Data, so a request that went the whole way comes out as chainOut(in).
// A test replaces a stage's body by setting its hook before New (the hooks
// are only read once the machine runs); a hook can call the default body
// (m.start, m.stageA, m.stageB). The machine counts its stage runs, the
// stages running right now, and calls of Close, and notes a stage that
// runs after Close or a Close that comes while a stage runs.
type chainM struct {
	a, b Stage[int]

	onStart, onA, onB func(m *chainM, r Request[int]) Request[int]

	runs        [3]atomic.Int64 // Start, A, B
	active      atomic.Int64    // stages running now
	maxActive   atomic.Int64
	closes      atomic.Int64
	lateStages  atomic.Int64 // stages entered after Close
	closeActive atomic.Int64 // stages running when Close was called
}

func newChainM() *chainM {
	m := &chainM{}
	m.a, m.b = m.A, m.B
	return m
}

func chainOut(in int) int { return in + 111 }

func (m *chainM) Start(r Request[int]) Request[int] { return m.run(0, r, m.onStart, m.start) }
func (m *chainM) A(r Request[int]) Request[int]     { return m.run(1, r, m.onA, m.stageA) }
func (m *chainM) B(r Request[int]) Request[int]     { return m.run(2, r, m.onB, m.stageB) }

func (m *chainM) Close() {
	m.closeActive.Store(m.active.Load())
	m.closes.Add(1)
}

func (m *chainM) start(r Request[int]) Request[int]  { r.Data += 1; r.Next = m.a; return r }
func (m *chainM) stageA(r Request[int]) Request[int] { r.Data += 10; r.Next = m.b; return r }
func (m *chainM) stageB(r Request[int]) Request[int] { r.Data += 100; return r }

func (m *chainM) run(i int, r Request[int], hook func(*chainM, Request[int]) Request[int], def func(Request[int]) Request[int]) Request[int] {
	if m.closes.Load() > 0 {
		m.lateStages.Add(1)
	}
	m.runs[i].Add(1)
	n := m.active.Add(1)
	defer m.active.Add(-1)
	raiseMax(&m.maxActive, n)
	if hook != nil {
		return hook(m, r)
	}
	return def(r)
}

// gatedData is the data value that gatedChainM holds in Start until the
// gate closes.
const gatedData = -1000

// gatedChainM is a chainM whose Start holds gatedData until gate is closed.
func gatedChainM(gate <-chan struct{}) *chainM {
	m := newChainM()
	m.onStart = func(m *chainM, r Request[int]) Request[int] {
		if r.Data == gatedData {
			<-gate
		}
		return m.start(r)
	}
	return m
}

// ---------------------------------------------------------------------------
// hookM: a Start hook, a batcher and an After stage.

// hookM is a two-stage machine: Start runs the test's hook (by default it
// finishes the request), After adds 1000 to Data. With markFlush as flush, a
// request that went through the batcher and then After comes out as
// Data+1100.
type hookM struct {
	b     *Batcher[int]
	after Stage[int]
	start func(m *hookM, r Request[int]) Request[int]

	afterRuns atomic.Int64
}

func newHookM(b *Batcher[int], start func(m *hookM, r Request[int]) Request[int]) *hookM {
	m := &hookM{b: b, start: start}
	m.after = m.After
	return m
}

func (m *hookM) Start(r Request[int]) Request[int] {
	if m.start != nil {
		return m.start(m, r)
	}
	return r
}

func (m *hookM) After(r Request[int]) Request[int] {
	m.afterRuns.Add(1)
	r.Data += 1000
	return r
}

func (m *hookM) Close() {}

// parkThenAfter is the usual batch stage: continue at After once flushed.
func parkThenAfter(m *hookM, r Request[int]) Request[int] {
	r.Next = m.after
	return m.b.Add(r)
}

// markFlush is a flush that marks every element, so that a result shows
// whether it went through a flush (and through only one).
func markFlush(_ context.Context, batch []Request[int]) error {
	for i := range batch {
		batch[i].Data += 100
	}
	return nil
}

// fullMachine returns Pipelines with room for one request, taken by a
// request of other that stays in its stage until gate is closed.
func fullMachine(t *testing.T) (p *Pipelines[int], other *Group[int], gate chan struct{}) {
	t.Helper()
	gate = make(chan struct{})
	m := newHookM(nil, func(m *hookM, r Request[int]) Request[int] {
		if r.Data < 0 {
			<-gate
		}
		return r
	})
	p = mustNew[int](t, m, WithWorkers(2), WithMaxInFlight(1))
	other = p.NewGroup()
	mustSubmit(t, other, context.Background(), -1)
	return p, other, gate
}

// fourFlushedThenAfter submits 0..3 to a new group of p, a hookM whose
// Start parks them (parkThenAfter, with markFlush), checks that each came
// out once, flushed and then through After, and closes p.
func fourFlushedThenAfter(t *testing.T, p *Pipelines[int]) {
	t.Helper()
	g := p.NewGroup()
	for i := range 4 {
		mustSubmit(t, g, context.Background(), i)
	}
	g.Close()
	for id, r := range exactlyOnce(t, drainWithin(t, g, 1000*time.Hour), 0, 1, 2, 3) {
		if r.Err != nil || r.Data != id+1100 {
			t.Errorf("request %d: Data %d, Err %v; want %d, nil (flushed, then After)", id, r.Data, r.Err, id+1100)
		}
	}
	p.Close()
}

// exactlyOnce checks that every id in want came out exactly once and nothing
// else did, and returns the results by id.
func exactlyOnce(t *testing.T, out []Request[int], want ...int) map[int]Request[int] {
	t.Helper()
	byID := map[int]Request[int]{}
	count := map[int]int{}
	for _, r := range out {
		id := r.Data % 100 // the marks markFlush and After add are multiples of 100
		count[id]++
		byID[id] = r
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("request %d came out %d times, want once", id, count[id])
		}
		delete(count, id)
	}
	for id, n := range count {
		t.Errorf("request %d came out %d times, never submitted", id, n)
	}
	return byID
}

// ---------------------------------------------------------------------------
// batchM: the batch tests' machine, its flush log and its rig.

// Most batch tests run one small machine, batchM, whose behaviour is
// steered by the data of each request (batchItem), and record every flush
// call in a batchLog. Everything runs inside a testing/synctest bubble:
// time is fake, so "at 10ms" means exactly 10ms after the bubble's start.

// batchItem is the data of the batch tests' requests.
type batchItem struct {
	G, N  int           // group and position within it: identifies the request
	Key   int           // batch key, for keyed batchers
	Size  int           // bytes, for MaxBytes
	Sleep time.Duration // Start sleeps this long first, keeping its worker busy
	Solo  bool          // Start finishes the request without batching
	Fault int           // fault injection, see fault*

	Val    int       // flush multiplies it by 10
	Flush  int       // the flush (1-based, by call order) that served it
	Flush2 int       // the same for the second batcher
	After  int       // runs of After
	Alt    int       // runs of Alt
	At     time.Time // set by the test when it submits
}

type itemID struct{ G, N int }

func (d batchItem) id() itemID { return itemID{d.G, d.N} }

// Faults a request can carry (batchItem.Fault). The flush faults are acted
// on by the flush hooks of the tests that use them.
const (
	faultNone       = iota
	faultStartPanic // Start panics
	faultAfterPanic // After panics
	faultAfterErr   // After fails the request with errBatchStage
	faultOwnErr     // the first flush sets errBatchOwn on this member
	faultFlushPanic // the first flush panics
	faultFlushErr   // the first flush returns errBatchBulk
	faultFlush2     // the second flush panics
	numFaults
)

var (
	errBatchStage = errors.New("batch: stage failed")
	errBatchOwn   = errors.New("batch: member failed in flush")
	errBatchBulk  = errors.New("batch: bulk call failed")
)

// batchM: Start -> bulk -> After (or Alt, if flush routes there).
// With bulk2 set, After parks again in bulk2 and the request ends in Alt.
type batchM struct {
	bulk, bulk2 *Batcher[batchItem]
	after, alt  Stage[batchItem]
}

func newBatchM(bulk *Batcher[batchItem]) *batchM {
	m := &batchM{bulk: bulk}
	m.after, m.alt = m.After, m.Alt
	return m
}

func (m *batchM) Start(r Request[batchItem]) Request[batchItem] {
	if r.Data.Sleep > 0 {
		time.Sleep(r.Data.Sleep)
	}
	if r.Data.Fault == faultStartPanic {
		panic("start boom")
	}
	if r.Data.Solo {
		return r
	}
	r.Next = m.after
	return m.bulk.Add(r)
}

func (m *batchM) After(r Request[batchItem]) Request[batchItem] {
	switch r.Data.Fault {
	case faultAfterPanic:
		panic("after boom")
	case faultAfterErr:
		r.Err = errBatchStage
		return r
	}
	r.Data.After++
	if m.bulk2 != nil {
		r.Next = m.alt
		return m.bulk2.Add(r)
	}
	return r
}

func (m *batchM) Alt(r Request[batchItem]) Request[batchItem] { r.Data.Alt++; return r }
func (m *batchM) Close()                                      {}

// batchLog records flush calls: when, what, and how many ran at once.
type batchLog struct {
	t0 time.Time

	mu         sync.Mutex
	calls      []flushCall
	running    int
	maxRunning int

	field func(d *batchItem) *int // which field gets the flush id; Flush by default
	// hook, if set, runs inside the flush after the log has stamped the
	// batch, and its result is the flush's.
	hook func(ctx context.Context, batch []Request[batchItem]) error
}

type flushCall struct {
	At, End time.Duration // since t0
	Items   []batchItem   // as given to flush
}

func newBatchLog() *batchLog { return &batchLog{t0: time.Now()} }

func (l *batchLog) flush(ctx context.Context, batch []Request[batchItem]) error {
	now := time.Since(l.t0)
	items := make([]batchItem, len(batch))
	for i := range batch {
		items[i] = batch[i].Data
	}
	l.mu.Lock()
	l.calls = append(l.calls, flushCall{At: now, Items: items})
	id := len(l.calls)
	l.running++
	l.maxRunning = max(l.maxRunning, l.running)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running--
		l.calls[id-1].End = time.Since(l.t0)
		l.mu.Unlock()
	}()
	for i := range batch {
		d := &batch[i].Data
		d.Val *= 10
		if l.field != nil {
			*l.field(d) = id
		} else {
			d.Flush = id
		}
	}
	if l.hook != nil {
		return l.hook(ctx, batch)
	}
	return nil
}

// snapshot returns a copy of the calls so far.
func (l *batchLog) snapshot() []flushCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]flushCall, len(l.calls))
	copy(out, l.calls)
	return out
}

func (l *batchLog) sizes() []int {
	var s []int
	for _, c := range l.snapshot() {
		s = append(s, len(c.Items))
	}
	return s
}

func (l *batchLog) maxConcurrent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxRunning
}

// batchRig is a running machine with its flush log.
type batchRig struct {
	t   *testing.T
	log *batchLog
	m   *batchM
	p   *Pipelines[batchItem]
}

// newBatchRig builds the machine with a batcher made of log and bopts, and
// starts Pipelines with popts (WithPipelines(2) unless given).
func newBatchRig(t *testing.T, bopts []BatchOption, popts ...Option) *batchRig {
	t.Helper()
	log := newBatchLog()
	m := newBatchM(NewBatcher(log.flush, bopts...))
	if len(popts) == 0 {
		popts = []Option{WithPipelines(2)}
	}
	p, err := New[batchItem](m, popts...)
	if err != nil {
		t.Fatal(err)
	}
	return &batchRig{t: t, log: log, m: m, p: p}
}

// since is the fake time elapsed since the rig was made.
func (rg *batchRig) since() time.Duration { return time.Since(rg.log.t0) }

func (rg *batchRig) submit(g *Group[batchItem], ctx context.Context, d batchItem) {
	rg.t.Helper()
	d.At = time.Now()
	if err := g.Submit(ctx, d); err != nil {
		rg.t.Fatalf("Submit(%v): %v", d.id(), err)
	}
}

// sleeper submits, in a group of its own, a request that sleeps in Start
// for d without batching: while it runs, the engine is never idle, so
// batches flush only by size, bytes, linger or shutdown. It returns once
// the sleeper is asleep.
func (rg *batchRig) sleeper(d time.Duration) {
	rg.t.Helper()
	rg.submit(rg.p.NewGroup(), context.Background(), batchItem{G: -1, N: -1, Sleep: d, Solo: true})
	synctest.Wait()
}

// bg is the context of the batch tests' requests that are not cancelled.
var bg = context.Background()

// checkFlushedThenAfter checks a request that went Start -> flush -> After.
func checkFlushedThenAfter(t *testing.T, r Request[batchItem]) {
	t.Helper()
	if r.Err != nil || r.Data.Val != 10*r.Data.N || r.Data.After != 1 || r.Data.Flush == 0 {
		t.Errorf("request %v: Err=%v Val=%d After=%d Flush=%d; want nil, %d, 1, >0",
			r.Data.id(), r.Err, r.Data.Val, r.Data.After, r.Data.Flush, 10*r.Data.N)
	}
}

// stamped is a result and when it came out.
type stamped struct {
	r  Request[batchItem]
	at time.Duration
}

// collector receives g's output in a goroutine, stamping each result.
type collector struct {
	mu   sync.Mutex
	got  []stamped
	done chan struct{}
}

func collectAsync(g *Group[batchItem], t0 time.Time) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for r := range g.Out() {
			c.mu.Lock()
			c.got = append(c.got, stamped{r, time.Since(t0)})
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) results() []stamped {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]stamped(nil), c.got...)
}

func (c *collector) wait() []stamped { <-c.done; return c.results() }

// checkOnceInGroup fails unless got holds each id in want exactly once,
// all from group g, and nothing else.
func checkOnceInGroup(t *testing.T, g int, want []itemID, got []Request[batchItem]) {
	t.Helper()
	seen := make(map[itemID]int, len(got))
	for _, r := range got {
		if r.Data.G != g {
			t.Errorf("group %d received request %v of group %d", g, r.Data.id(), r.Data.G)
		}
		seen[r.Data.id()]++
	}
	for _, id := range want {
		if n := seen[id]; n != 1 {
			t.Errorf("group %d: request %v came out %d times, want once", g, id, n)
		}
		delete(seen, id)
	}
	for id, n := range seen {
		t.Errorf("group %d: unexpected request %v came out %d times", g, id, n)
	}
}

func itemIDs(g, n int) []itemID {
	out := make([]itemID, n)
	for i := range out {
		out[i] = itemID{g, i}
	}
	return out
}

func requestsOf(s []stamped) []Request[batchItem] {
	out := make([]Request[batchItem], len(s))
	for i := range s {
		out[i] = s[i].r
	}
	return out
}

func describeFlushes(calls []flushCall) string {
	var b strings.Builder
	for i, c := range calls {
		fmt.Fprintf(&b, "\n  flush %d at %v (end %v): %d items", i+1, c.At, c.End, len(c.Items))
	}
	return b.String()
}
