package statepipe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// ---------------------------------------------------------------------------
// Random machines: k stages S1..Sk (k from 1 to 8), each request carrying its
// own plan, a list of hops that says which stage comes next and what that
// stage does (fail, panic, have the middleware panic, cancel the request's
// context, take time). The expected outcome of every request follows from
// its plan alone.

const (
	evNone = iota
	evFail
	evPanic
	evMWPanic
	evCancel
)

type hop struct {
	stage int8 // 1..k
	event int8
	sleep time.Duration
}

type randJob struct {
	gid, id  int
	plan     []hop // shared, never changed
	pos, sum int   // hops taken, and a hash of the path
	cancel   context.CancelFunc
}

// randJobErr is the error a failing hop sets.
type randJobErr struct{ gid, id, stage int }

func (e randJobErr) Error() string {
	return fmt.Sprintf("job %d/%d failed in S%d", e.gid, e.id, e.stage)
}

var errMisrouted = errors.New("request reached a stage its plan does not name")

var randStageNames = [9]string{"Start", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}

// randCore holds the behaviour of every random machine; randM1..randM8 only
// add the stage methods S1..Sk, so that a machine of k stages is a
// distinct type with exactly k+1 discovered stages.
type randCore struct {
	fake bool // sleep in fake time (synctest); otherwise yield
	next [9]Stage[randJob]

	runs, errs        [9]atomic.Int64 // by stage, Start at 0
	active, maxActive atomic.Int64
	misroutes         atomic.Int64
	closes            atomic.Int64
}

func (c *randCore) Start(r Request[randJob]) Request[randJob] {
	c.runs[0].Add(1)
	return c.route(r)
}

func (c *randCore) Close() { c.closes.Add(1) }

func (c *randCore) route(r Request[randJob]) Request[randJob] {
	if j := r.Data; j.pos < len(j.plan) {
		r.Next = c.next[j.plan[j.pos].stage]
	}
	return r
}

func (c *randCore) step(k int, r Request[randJob]) Request[randJob] {
	c.runs[k].Add(1)
	raiseMax(&c.maxActive, c.active.Add(1))
	defer c.active.Add(-1)
	j := &r.Data
	if j.pos >= len(j.plan) || int(j.plan[j.pos].stage) != k {
		c.misroutes.Add(1)
		c.errs[k].Add(1)
		r.Err = errMisrouted
		return r
	}
	h := j.plan[j.pos]
	j.pos++
	j.sum = j.sum*31 + k
	if h.sleep > 0 {
		if c.fake {
			time.Sleep(h.sleep)
		} else {
			runtime.Gosched()
		}
	}
	switch h.event {
	case evFail:
		c.errs[k].Add(1)
		r = c.route(r) // Next set as well: the engine must not run it
		r.Err = randJobErr{j.gid, j.id, k}
		return r
	case evPanic:
		c.errs[k].Add(1)
		panic(randJobErr{j.gid, j.id, k})
	case evMWPanic:
		c.errs[k].Add(1) // the middleware panics once this returns
	case evCancel:
		j.cancel()
	}
	return c.route(r)
}

type randM1 struct{ *randCore }
type randM2 struct{ *randCore }
type randM3 struct{ *randCore }
type randM4 struct{ *randCore }
type randM5 struct{ *randCore }
type randM6 struct{ *randCore }
type randM7 struct{ *randCore }
type randM8 struct{ *randCore }

// Each machine type declares its own stage methods (promoted stages have
// their own test, TestPromotedStagesKeepTheirNames).
func (m randM1) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }

func (m randM2) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM2) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }

func (m randM3) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM3) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }
func (m randM3) S3(r Request[randJob]) Request[randJob] { return m.step(3, r) }

func (m randM4) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM4) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }
func (m randM4) S3(r Request[randJob]) Request[randJob] { return m.step(3, r) }
func (m randM4) S4(r Request[randJob]) Request[randJob] { return m.step(4, r) }

func (m randM5) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM5) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }
func (m randM5) S3(r Request[randJob]) Request[randJob] { return m.step(3, r) }
func (m randM5) S4(r Request[randJob]) Request[randJob] { return m.step(4, r) }
func (m randM5) S5(r Request[randJob]) Request[randJob] { return m.step(5, r) }

func (m randM6) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM6) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }
func (m randM6) S3(r Request[randJob]) Request[randJob] { return m.step(3, r) }
func (m randM6) S4(r Request[randJob]) Request[randJob] { return m.step(4, r) }
func (m randM6) S5(r Request[randJob]) Request[randJob] { return m.step(5, r) }
func (m randM6) S6(r Request[randJob]) Request[randJob] { return m.step(6, r) }

func (m randM7) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM7) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }
func (m randM7) S3(r Request[randJob]) Request[randJob] { return m.step(3, r) }
func (m randM7) S4(r Request[randJob]) Request[randJob] { return m.step(4, r) }
func (m randM7) S5(r Request[randJob]) Request[randJob] { return m.step(5, r) }
func (m randM7) S6(r Request[randJob]) Request[randJob] { return m.step(6, r) }
func (m randM7) S7(r Request[randJob]) Request[randJob] { return m.step(7, r) }

func (m randM8) S1(r Request[randJob]) Request[randJob] { return m.step(1, r) }
func (m randM8) S2(r Request[randJob]) Request[randJob] { return m.step(2, r) }
func (m randM8) S3(r Request[randJob]) Request[randJob] { return m.step(3, r) }
func (m randM8) S4(r Request[randJob]) Request[randJob] { return m.step(4, r) }
func (m randM8) S5(r Request[randJob]) Request[randJob] { return m.step(5, r) }
func (m randM8) S6(r Request[randJob]) Request[randJob] { return m.step(6, r) }
func (m randM8) S7(r Request[randJob]) Request[randJob] { return m.step(7, r) }
func (m randM8) S8(r Request[randJob]) Request[randJob] { return m.step(8, r) }

// newRandM returns a machine of k stages and its core. The stage values
// are method values of the machine, as a user would write them
// (r.Next = m.S3).
func newRandM(k int, fake bool) (*randCore, StateMachine[randJob]) {
	c := &randCore{fake: fake}
	switch k {
	case 1:
		m := randM1{c}
		c.next = [9]Stage[randJob]{nil, m.S1}
		return c, m
	case 2:
		m := randM2{c}
		c.next = [9]Stage[randJob]{nil, m.S1, m.S2}
		return c, m
	case 3:
		m := randM3{c}
		c.next = [9]Stage[randJob]{nil, m.S1, m.S2, m.S3}
		return c, m
	case 4:
		m := randM4{c}
		c.next = [9]Stage[randJob]{nil, m.S1, m.S2, m.S3, m.S4}
		return c, m
	case 5:
		m := randM5{c}
		c.next = [9]Stage[randJob]{nil, m.S1, m.S2, m.S3, m.S4, m.S5}
		return c, m
	case 6:
		m := randM6{c}
		c.next = [9]Stage[randJob]{nil, m.S1, m.S2, m.S3, m.S4, m.S5, m.S6}
		return c, m
	case 7:
		m := randM7{c}
		c.next = [9]Stage[randJob]{nil, m.S1, m.S2, m.S3, m.S4, m.S5, m.S6, m.S7}
		return c, m
	}
	m := randM8{c}
	c.next = [9]Stage[randJob]{nil, m.S1, m.S2, m.S3, m.S4, m.S5, m.S6, m.S7, m.S8}
	return c, m
}

// randMiddleware checks that it is told the right stage name, checks the
// machine bound on every call, and panics after a stage whose hop says so.
func randMiddleware(p *atomic.Pointer[Pipelines[randJob]], bound int64, misnamed, overBound *atomic.Int64) Middleware[randJob] {
	return func(stage string, r Request[randJob], next Stage[randJob]) Request[randJob] {
		if n := p.Load().inside(); n > bound {
			raiseMax(overBound, n)
		}
		j := r.Data
		var hop hop
		if stage != "Start" && j.pos < len(j.plan) {
			hop = j.plan[j.pos]
			if stage != randStageNames[hop.stage] {
				misnamed.Add(1)
			}
		}
		out := next(r)
		if hop.event == evMWPanic {
			panic(fmt.Sprintf("middleware after %s", stage))
		}
		return out
	}
}

// randOutcome is what must come out for a job.
type randOutcome struct {
	pos, sum int
	err      error // nil, context.Canceled, randJobErr, *PanicError{Stage} or *CycleError{Stage, Path}
}

func randExpected(j randJob, dag bool) randOutcome {
	var o randOutcome
	visited := map[int8]bool{}
	path := []string{"Start"}
	cancelled := false
	for _, h := range j.plan {
		if cancelled {
			o.err = context.Canceled
			return o
		}
		name := randStageNames[h.stage]
		if dag && visited[h.stage] {
			o.err = &CycleError{Stage: name, Path: path[max(0, len(path)-8):]}
			return o
		}
		visited[h.stage] = true
		path = append(path, name)
		pre := o
		o.pos++
		o.sum = o.sum*31 + int(h.stage)
		switch h.event {
		case evFail:
			o.err = randJobErr{j.gid, j.id, int(h.stage)}
			return o
		case evPanic, evMWPanic:
			pre.err = &PanicError{Stage: name}
			return pre
		case evCancel:
			cancelled = true
		}
	}
	return o
}

// checkRandOutcome describes how r differs from what j should give, or
// returns "" if it is right. If cancelledOutside, the request's context
// was cancelled from outside at a random time: a context error is right
// too.
func checkRandOutcome(r Request[randJob], j randJob, dag, cancelledOutside bool) string {
	if cancelledOutside && errors.Is(r.Err, context.Canceled) {
		return ""
	}
	want := randExpected(j, dag)
	if r.Data.pos != want.pos || r.Data.sum != want.sum {
		return fmt.Sprintf("data pos %d sum %d, want %d %d (err %v, want %v)", r.Data.pos, r.Data.sum, want.pos, want.sum, r.Err, want.err)
	}
	switch w := want.err.(type) {
	case nil:
		if r.Err != nil {
			return fmt.Sprintf("err %v, want none", r.Err)
		}
	case randJobErr:
		if r.Err != w {
			return fmt.Sprintf("err %v, want %v", r.Err, w)
		}
	case *PanicError:
		var pe *PanicError
		if !errors.As(r.Err, &pe) || pe.Stage != w.Stage {
			return fmt.Sprintf("err %v, want a panic in %s", r.Err, w.Stage)
		}
	case *CycleError:
		var ce *CycleError
		if !errors.As(r.Err, &ce) || ce.Stage != w.Stage || !slices.Equal(ce.Path, w.Path) {
			return fmt.Sprintf("err %v, want a cycle at %s after %v", r.Err, w.Stage, w.Path)
		}
	default:
		if !errors.Is(r.Err, want.err) {
			return fmt.Sprintf("err %v, want %v", r.Err, want.err)
		}
	}
	return ""
}

// randPlan draws a plan of up to 6 hops over k stages.
func randPlan(rng *rand.Rand, k int, fake bool) []hop {
	plan := make([]hop, rng.IntN(7))
	for i := range plan {
		h := &plan[i]
		h.stage = int8(1 + rng.IntN(k))
		switch x := rng.IntN(100); {
		case x < 5:
			h.event = evFail
		case x < 8:
			h.event = evPanic
		case x < 11:
			h.event = evMWPanic
		case x < 15:
			h.event = evCancel
		}
		if rng.IntN(2) == 0 {
			h.sleep = time.Duration(1+rng.IntN(3000)) * time.Microsecond
		}
	}
	return plan
}

// runRandom builds a random machine and random groups from seed, runs
// them to the end and checks every invariant.
func runRandom(t *testing.T, seed uint64, fake bool) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	k := 1 + rng.IntN(8)
	core, sm := newRandM(k, fake)
	dag := rng.IntN(3) == 0
	bound := 1 + rng.IntN(24)
	if rng.IntN(6) == 0 {
		bound = 1024 // the default
	}
	var (
		pp                  atomic.Pointer[Pipelines[randJob]]
		misnamed, overBound atomic.Int64
	)
	opts := []Option{WithMiddleware(randMiddleware(&pp, int64(bound), &misnamed, &overBound))}
	if bound != 1024 || rng.IntN(2) == 0 {
		opts = append(opts, WithMaxInFlight(bound))
	}
	workers := 0
	switch rng.IntN(3) {
	case 0:
		pipes := 1 + rng.IntN(2)
		opts = append(opts, WithPipelines(pipes))
		workers = pipes * (k + 1)
	default:
		workers = 1 + rng.IntN(6)
		opts = append(opts, WithWorkers(workers))
	}
	if dag {
		opts = append(opts, WithDAG())
	}
	p := mustNew(t, sm, opts...)
	pp.Store(p)
	if got := len(p.Stages()); got != k+1 {
		t.Fatalf("seed %d: %d stages found, want %d", seed, got, k+1)
	}

	type submitted struct {
		job              randJob
		cancelledOutside bool
	}
	type groupRun struct {
		g        *Group[randJob]
		ordered  bool
		mu       sync.Mutex
		accepted []int // ids, in the order Submit returned nil (one submitter when ordered)
		jobs     map[int]submitted
		out      []Request[randJob]
	}
	nGroups := 1 + rng.IntN(6)
	maxItems := 80
	if testing.Short() {
		maxItems = 30
	}
	runs := make([]*groupRun, nGroups)
	var work, consumers sync.WaitGroup
	for gi := range runs {
		gr := &groupRun{ordered: rng.IntN(2) == 0, jobs: map[int]submitted{}}
		var gopts []GroupOption
		if gr.ordered {
			gopts = append(gopts, Ordered())
		}
		if rng.IntN(3) > 0 {
			gopts = append(gopts, MaxInFlight(rng.IntN(bound+4)))
		}
		gr.g = p.NewGroup(gopts...)
		runs[gi] = gr
		items := rng.IntN(maxItems + 1)
		submitters := 1
		if !gr.ordered && rng.IntN(2) == 0 {
			submitters = 2
		}
		// Draw everything now, from rng, so that a seed is one scenario.
		type draw struct {
			job          randJob
			preCancel    bool
			outsideAfter time.Duration // > 0: cancel from outside after this long
		}
		draws := make([]draw, items)
		for i := range draws {
			d := &draws[i]
			d.job = randJob{gid: gi, id: i, plan: randPlan(rng, k, fake)}
			switch x := rng.IntN(100); {
			case x < 3:
				d.preCancel = true
			case x < 7:
				d.outsideAfter = time.Duration(1+rng.IntN(5000)) * time.Microsecond
			}
		}
		consumerPause := time.Duration(0)
		if rng.IntN(3) == 0 {
			consumerPause = time.Duration(1+rng.IntN(2000)) * time.Microsecond
		}
		var subs sync.WaitGroup
		for s := range submitters {
			subs.Add(1)
			work.Go(func() {
				defer subs.Done()
				for i := s; i < items; i += submitters {
					d := draws[i]
					ctx := context.Background()
					var cancel context.CancelFunc
					if d.preCancel || d.outsideAfter > 0 || slices.ContainsFunc(d.job.plan, func(h hop) bool { return h.event == evCancel }) {
						ctx, cancel = context.WithCancel(ctx)
						d.job.cancel = cancel
					}
					if d.preCancel {
						cancel()
					}
					if d.outsideAfter > 0 {
						work.Go(func() {
							if fake {
								time.Sleep(d.outsideAfter)
							} else {
								time.Sleep(d.outsideAfter / 50)
							}
							cancel()
						})
					}
					err := gr.g.Submit(ctx, d.job)
					switch {
					case d.preCancel:
						if !errors.Is(err, context.Canceled) {
							t.Errorf("seed %d: Submit with a cancelled context = %v", seed, err)
						}
					case d.outsideAfter > 0 && errors.Is(err, context.Canceled):
						// cancelled while Submit waited for room
					case err != nil:
						t.Errorf("seed %d: Submit: %v", seed, err)
					default:
						gr.mu.Lock()
						gr.accepted = append(gr.accepted, i)
						gr.jobs[i] = submitted{d.job, d.outsideAfter > 0}
						gr.mu.Unlock()
					}
				}
			})
		}
		work.Go(func() {
			subs.Wait()
			gr.g.Close()
		})
		consumers.Go(func() {
			for r := range gr.g.Out() {
				gr.out = append(gr.out, r)
				if consumerPause > 0 && fake {
					time.Sleep(consumerPause)
				}
			}
		})
	}
	work.Wait()
	consumers.Wait()
	p.Close()

	var total, failed uint64
	for gi, gr := range runs {
		if len(gr.out) != len(gr.accepted) {
			t.Errorf("seed %d group %d: %d results for %d accepted requests", seed, gi, len(gr.out), len(gr.accepted))
		}
		seen := map[int]bool{}
		for i, r := range gr.out {
			if r.Data.gid != gi {
				t.Errorf("seed %d group %d: got request %d of group %d", seed, gi, r.Data.id, r.Data.gid)
				continue
			}
			sub, ok := gr.jobs[r.Data.id]
			if !ok {
				t.Errorf("seed %d group %d: request %d came out but was not accepted", seed, gi, r.Data.id)
				continue
			}
			if seen[r.Data.id] {
				t.Errorf("seed %d group %d: request %d came out twice", seed, gi, r.Data.id)
			}
			seen[r.Data.id] = true
			if gr.ordered && i < len(gr.accepted) && r.Data.id != gr.accepted[i] {
				t.Errorf("seed %d ordered group %d: result %d is request %d, want %d", seed, gi, i, r.Data.id, gr.accepted[i])
			}
			if msg := checkRandOutcome(r, sub.job, dag, sub.cancelledOutside); msg != "" {
				t.Errorf("seed %d group %d request %d (plan %v): %s", seed, gi, r.Data.id, sub.job.plan, msg)
			}
			if r.Err != nil {
				failed++
			}
		}
		total += uint64(len(gr.accepted))
	}

	s := p.Stats()
	if s.Submitted != total || s.Failed != failed || s.Completed != total-failed || s.InFlight != 0 {
		t.Errorf("seed %d: Stats Submitted %d Completed %d Failed %d InFlight %d, want %d %d %d 0",
			seed, s.Submitted, s.Completed, s.Failed, s.InFlight, total, total-failed, failed)
	}
	for i := 0; i <= k; i++ {
		st := stageStats(t, s, randStageNames[i])
		if st.Runs != uint64(core.runs[i].Load()) || st.Errors != uint64(core.errs[i].Load()) {
			t.Errorf("seed %d: stage %s: Stats Runs %d Errors %d, the stage counted %d %d",
				seed, st.Name, st.Runs, st.Errors, core.runs[i].Load(), core.errs[i].Load())
		}
	}
	if n := core.misroutes.Load(); n > 0 {
		t.Errorf("seed %d: %d requests reached the wrong stage", seed, n)
	}
	if n := misnamed.Load(); n > 0 {
		t.Errorf("seed %d: the middleware was told the wrong stage name %d times", seed, n)
	}
	if n := overBound.Load(); n > 0 {
		t.Errorf("seed %d: %d requests inside the machine, bound %d", seed, n, bound)
	}
	if n := core.maxActive.Load(); n > int64(workers) {
		t.Errorf("seed %d: %d stages ran at once on %d workers", seed, n, workers)
	}
	if n := core.closes.Load(); n != 1 {
		t.Errorf("seed %d: sm.Close called %d times", seed, n)
	}
}

// Random machines in fake time: stage latencies are real sleeps that cost
// nothing, so ordered groups see results finish in every order.
func TestStressRandomMachines(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 30
	}
	for seed := range uint64(n) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runRandom(t, seed, true) })
		})
	}
}

// The same on real time: no sleeps, real interleavings.
func TestStressRandomMachinesRealTime(t *testing.T) {
	n := 80
	if testing.Short() {
		n = 15
	}
	for seed := range uint64(n) {
		t.Run(fmt.Sprint("seed", 1000+seed), func(t *testing.T) {
			mustReturnWithin(t, 30*time.Second, "the random machine", func() { runRandom(t, 1000+seed, false) })
		})
	}
}

// A CycleError names the last eight stages of the path.
func TestDAGPathKeepsLastEight(t *testing.T) {
	_, sm := newRandM(8, false)
	p := mustNew(t, sm, WithDAG(), WithWorkers(2))
	g := p.NewGroup(Ordered())
	hops := func(stages ...int8) []hop {
		plan := make([]hop, len(stages))
		for i, s := range stages {
			plan[i].stage = s
		}
		return plan
	}
	cases := []struct {
		plan  []hop
		stage string
		path  []string
	}{
		{hops(1, 2, 3, 4, 5, 6, 7, 8, 1), "S1", []string{"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}},
		{hops(1, 2, 3, 4, 5, 6, 7, 8, 8), "S8", []string{"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}},
		{hops(3, 2, 3), "S3", []string{"Start", "S3", "S2"}},
		{hops(4, 4), "S4", []string{"Start", "S4"}},
		{hops(8, 7, 6, 5, 4, 3, 2, 1), "", nil},
	}
	for i, c := range cases {
		if err := g.Submit(context.Background(), randJob{id: i, plan: c.plan}); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	res := drainWithin(t, g, 10*time.Second)
	if len(res) != len(cases) {
		t.Fatalf("%d results, want %d", len(res), len(cases))
	}
	for i, c := range cases {
		var ce *CycleError
		switch {
		case c.stage == "":
			if res[i].Err != nil {
				t.Errorf("case %d: %v, want no error", i, res[i].Err)
			}
		case !errors.As(res[i].Err, &ce):
			t.Errorf("case %d: %v, want a CycleError", i, res[i].Err)
		case ce.Stage != c.stage || !slices.Equal(ce.Path, c.path):
			t.Errorf("case %d: CycleError{%s, %v}, want {%s, %v}", i, ce.Stage, ce.Path, c.stage, c.path)
		}
	}
	p.Close()
}

// ---------------------------------------------------------------------------
// Races between Submit, Group.Close, Pipelines.Close and cancellation.

func TestRaceSubmitCloseCancel(t *testing.T) {
	iters := 500
	if testing.Short() {
		iters = 60
	}
	for it := range iters {
		mustReturnWithin(t, 20*time.Second, fmt.Sprintf("iteration %d", it), func() { raceOnce(t, it) })
		if t.Failed() {
			return
		}
	}
}

func raceOnce(t *testing.T, it int) {
	m := newChainM()
	m.onA = func(m *chainM, r Request[int]) Request[int] {
		if rand.IntN(3) == 0 {
			runtime.Gosched()
		}
		return m.stageA(r)
	}
	p := mustNew[int](t, m, WithWorkers(1+rand.IntN(4)), WithMaxInFlight(1+rand.IntN(16)))
	spin := func(n int) {
		for range rand.IntN(n) {
			runtime.Gosched()
		}
	}
	type groupRun struct {
		g        *Group[int]
		mu       sync.Mutex
		accepted map[int]bool
		got      []int
	}
	var work, consumers sync.WaitGroup
	nGroups := 1 + rand.IntN(4)
	runs := make([]*groupRun, nGroups)
	for gi := range runs {
		var opts []GroupOption
		if rand.IntN(2) == 0 {
			opts = append(opts, Ordered())
		}
		if rand.IntN(2) == 0 {
			opts = append(opts, MaxInFlight(1+rand.IntN(4)))
		}
		gr := &groupRun{g: p.NewGroup(opts...), accepted: map[int]bool{}}
		runs[gi] = gr
		consumers.Go(func() {
			for r := range gr.g.Out() {
				gr.got = append(gr.got, r.Data/1000*1000) // the id, whatever the stages added
			}
		})
		for s := range 2 {
			work.Go(func() {
				for i := range 40 {
					id := ((gi*2+s)*100 + i) * 1000
					ctx := context.Background()
					if rand.IntN(3) == 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithCancel(ctx)
						work.Go(func() { spin(40); cancel() })
					}
					err := gr.g.Submit(ctx, id)
					switch {
					case err == nil:
						gr.mu.Lock()
						gr.accepted[id] = true
						gr.mu.Unlock()
					case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled):
					default:
						t.Errorf("Submit: %v", err)
					}
				}
			})
		}
		work.Go(func() { spin(400); gr.g.Close() })
	}
	for range 2 {
		work.Go(func() {
			spin(600)
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			// Close returns once everything is done, also when another
			// call did the work.
			if n := m.closes.Load(); n != 1 {
				t.Errorf("Close returned with sm.Close called %d times", n)
			}
		})
	}
	work.Wait()
	p.Close()
	consumers.Wait()

	var total uint64
	for gi, gr := range runs {
		seen := map[int]bool{}
		for _, id := range gr.got {
			if !gr.accepted[id] {
				t.Errorf("iteration %d group %d: %d came out but its Submit did not return nil", it, gi, id)
			}
			if seen[id] {
				t.Errorf("iteration %d group %d: %d came out twice", it, gi, id)
			}
			seen[id] = true
		}
		for id := range gr.accepted {
			if !seen[id] {
				t.Errorf("iteration %d group %d: %d accepted but never came out", it, gi, id)
			}
		}
		total += uint64(len(gr.accepted))
	}
	if n := m.closes.Load(); n != 1 {
		t.Errorf("iteration %d: sm.Close called %d times", it, n)
	}
	if n := m.closeActive.Load(); n != 0 {
		t.Errorf("iteration %d: sm.Close called while %d stages ran", it, n)
	}
	if n := m.lateStages.Load(); n != 0 {
		t.Errorf("iteration %d: %d stages ran after sm.Close", it, n)
	}
	if s := p.Stats(); s.Submitted != total || s.InFlight != 0 {
		t.Errorf("iteration %d: Stats Submitted %d InFlight %d, want %d 0", it, s.Submitted, s.InFlight, total)
	}
}
