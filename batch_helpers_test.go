package statepipe

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The batch tests run one small machine, bxMachine, whose behaviour is
// steered by the data of each request (bxItem), and record every flush call
// in a bxLog. Everything runs inside a testing/synctest bubble: time is
// fake, so "at 10ms" means exactly 10ms after the bubble's start.

// bxItem is the data of the batch tests' requests.
type bxItem struct {
	G, N  int           // group and position within it: identifies the request
	Key   int           // batch key, for keyed batchers
	Size  int           // bytes, for MaxBytes
	Sleep time.Duration // Start sleeps this long first, keeping its worker busy
	Solo  bool          // Start finishes the request without batching
	Fault int           // fault injection, see bxFault*

	Val    int       // flush multiplies it by 10
	Flush  int       // the flush (1-based, by call order) that served it
	Flush2 int       // the same for the second batcher
	After  int       // runs of After
	Alt    int       // runs of Alt
	At     time.Time // set by the test when it submits
}

type bxID struct{ G, N int }

func (d bxItem) id() bxID { return bxID{d.G, d.N} }

// Faults a request can carry (bxItem.Fault). The flush faults are acted
// on by the flush hooks of the tests that use them.
const (
	bxFaultNone       = iota
	bxFaultStartPanic // Start panics
	bxFaultAfterPanic // After panics
	bxFaultAfterErr   // After fails the request with errBxStage
	bxFaultOwnErr     // the first flush sets errBxOwn on this member
	bxFaultFlushPanic // the first flush panics
	bxFaultFlushErr   // the first flush returns errBxBulk
	bxFaultFlush2     // the second flush panics
	bxNumFaults
)

var (
	errBxStage = errors.New("bx: stage failed")
	errBxOwn   = errors.New("bx: member failed in flush")
	errBxBulk  = errors.New("bx: bulk call failed")
)

// bxMachine: Start -> bulk -> After (or Alt, if flush routes there).
// With bulk2 set, After parks again in bulk2 and the request ends in Alt.
type bxMachine struct {
	bulk, bulk2 *Batcher[bxItem]
	after, alt  Stage[bxItem]
}

func newBxMachine(bulk *Batcher[bxItem]) *bxMachine {
	m := &bxMachine{bulk: bulk}
	m.after, m.alt = m.After, m.Alt
	return m
}

func (m *bxMachine) Start(r Request[bxItem]) Request[bxItem] {
	if r.Data.Sleep > 0 {
		time.Sleep(r.Data.Sleep)
	}
	if r.Data.Fault == bxFaultStartPanic {
		panic("start boom")
	}
	if r.Data.Solo {
		return r
	}
	r.Next = m.after
	return m.bulk.Add(r)
}

func (m *bxMachine) After(r Request[bxItem]) Request[bxItem] {
	switch r.Data.Fault {
	case bxFaultAfterPanic:
		panic("after boom")
	case bxFaultAfterErr:
		r.Err = errBxStage
		return r
	}
	r.Data.After++
	if m.bulk2 != nil {
		r.Next = m.alt
		return m.bulk2.Add(r)
	}
	return r
}

func (m *bxMachine) Alt(r Request[bxItem]) Request[bxItem] { r.Data.Alt++; return r }
func (m *bxMachine) Close()                                {}

// bxLog records flush calls: when, what, and how many ran at once.
type bxLog struct {
	t0 time.Time

	mu         sync.Mutex
	calls      []bxCall
	running    int
	maxRunning int

	field func(d *bxItem) *int // which field gets the flush id; Flush by default
	// hook, if set, runs inside the flush after the log has stamped the
	// batch, and its result is the flush's.
	hook func(ctx context.Context, batch []Request[bxItem]) error
}

type bxCall struct {
	At, End time.Duration // since t0
	Items   []bxItem      // as given to flush
}

func newBxLog() *bxLog { return &bxLog{t0: time.Now()} }

func (l *bxLog) flush(ctx context.Context, batch []Request[bxItem]) error {
	now := time.Since(l.t0)
	items := make([]bxItem, len(batch))
	for i := range batch {
		items[i] = batch[i].Data
	}
	l.mu.Lock()
	l.calls = append(l.calls, bxCall{At: now, Items: items})
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
func (l *bxLog) snapshot() []bxCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]bxCall, len(l.calls))
	copy(out, l.calls)
	return out
}

func (l *bxLog) sizes() []int {
	var s []int
	for _, c := range l.snapshot() {
		s = append(s, len(c.Items))
	}
	return s
}

func (l *bxLog) maxConcurrent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxRunning
}

// bxRig is a running machine with its flush log.
type bxRig struct {
	t   *testing.T
	log *bxLog
	m   *bxMachine
	p   *Pipelines[bxItem]
}

// newBxRig builds the machine with a batcher made of log and bopts, and
// starts Pipelines with popts (WithPipelines(2) unless given).
func newBxRig(t *testing.T, bopts []BatchOption, popts ...Option) *bxRig {
	t.Helper()
	log := newBxLog()
	m := newBxMachine(NewBatcher(log.flush, bopts...))
	if len(popts) == 0 {
		popts = []Option{WithPipelines(2)}
	}
	p, err := New[bxItem](m, popts...)
	if err != nil {
		t.Fatal(err)
	}
	return &bxRig{t: t, log: log, m: m, p: p}
}

// since is the fake time elapsed since the rig was made.
func (rg *bxRig) since() time.Duration { return time.Since(rg.log.t0) }

func (rg *bxRig) submit(g *Group[bxItem], ctx context.Context, d bxItem) {
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
func (rg *bxRig) sleeper(d time.Duration) {
	rg.t.Helper()
	rg.submit(rg.p.NewGroup(), context.Background(), bxItem{G: -1, N: -1, Sleep: d, Solo: true})
	synctest.Wait()
}

// bxDrain receives what is ready in g's output without blocking.
func bxDrain(g *Group[bxItem]) []Request[bxItem] {
	var out []Request[bxItem]
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

// bxCollect receives everything from g's output until it closes.
func bxCollect(g *Group[bxItem]) []Request[bxItem] {
	var out []Request[bxItem]
	for r := range g.Out() {
		out = append(out, r)
	}
	return out
}

// bxStamped is a result and when it came out.
type bxStamped struct {
	r  Request[bxItem]
	at time.Duration
}

// bxCollector receives g's output in a goroutine, stamping each result.
type bxCollector struct {
	mu   sync.Mutex
	got  []bxStamped
	done chan struct{}
}

func bxCollectAsync(g *Group[bxItem], t0 time.Time) *bxCollector {
	c := &bxCollector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for r := range g.Out() {
			c.mu.Lock()
			c.got = append(c.got, bxStamped{r, time.Since(t0)})
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *bxCollector) results() []bxStamped {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bxStamped(nil), c.got...)
}

func (c *bxCollector) wait() []bxStamped { <-c.done; return c.results() }

// bxCheckOnce fails unless got holds each id in want exactly once, all from
// group g, and nothing else.
func bxCheckOnce(t *testing.T, g int, want []bxID, got []Request[bxItem]) {
	t.Helper()
	seen := make(map[bxID]int, len(got))
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

func bxIDs(g, n int) []bxID {
	out := make([]bxID, n)
	for i := range out {
		out[i] = bxID{g, i}
	}
	return out
}

// bxBatcherGoroutines counts goroutines running a Batcher method: after
// Close, there must be none.
func bxBatcherGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "statepipe.(*Batcher[") {
			count++
		}
	}
	return count
}

func bxDescribe(calls []bxCall) string {
	var b strings.Builder
	for i, c := range calls {
		fmt.Fprintf(&b, "\n  flush %d at %v (end %v): %d items", i+1, c.At, c.End, len(c.Items))
	}
	return b.String()
}
