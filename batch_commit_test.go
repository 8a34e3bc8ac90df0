package statepipe

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// flushLog is a flush function that sleeps for pause (fake time, in a
// bubble), adds 1 to each member, and records batch sizes and how many
// flushes ran at once.
type flushLog struct {
	pause           time.Duration
	gate            chan struct{} // if set, every flush waits for it
	mu              sync.Mutex
	sizes           []int
	running, maxRun int
}

func (l *flushLog) flush(_ context.Context, batch []Request[int]) error {
	l.mu.Lock()
	l.sizes = append(l.sizes, len(batch))
	l.running++
	l.maxRun = max(l.maxRun, l.running)
	l.mu.Unlock()
	if l.gate != nil {
		<-l.gate
	}
	time.Sleep(l.pause)
	for i := range batch {
		batch[i].Data++
	}
	l.mu.Lock()
	l.running--
	l.mu.Unlock()
	return nil
}

func (l *flushLog) snapshot() (sizes []int, maxRun int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.sizes...), l.maxRun
}

// batched is a one-stage machine that parks every request in bulk.
type batched struct{ bulk *Batcher[int] }

func (m *batched) Start(r Request[int]) Request[int] { return m.bulk.Add(r) }
func (m *batched) Close()                            {}

// MaxWait(0) adds no wait, and still batches: what arrives while the
// flush slots are busy gathers into the next batch (group commit). It
// used to flush every request alone, even while flushes were backed up.
func TestMaxWaitZeroCommitsInGroups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const items = 5000
		log := &flushLog{pause: time.Millisecond}
		m := &batched{bulk: NewBatcher(log.flush, MaxWait(0), MaxItems(500))}
		p := mustNew[int](t, m, WithWorkers(8))
		var wg sync.WaitGroup
		for c := range 50 { // 50 callers, 100 requests each, one at a time
			wg.Go(func() {
				for i := range items / 50 {
					if r := p.Do(context.Background(), c*1000+i)[0]; r.Err != nil || r.Data != c*1000+i+1 {
						t.Errorf("result %+v", r)
					}
				}
			})
		}
		wg.Wait()
		p.Close()
		sizes, _ := log.snapshot()
		if len(sizes) > items/10 {
			t.Errorf("%d flushes for %d requests, want at most %d: MaxWait(0) must gather while a flush runs", len(sizes), items, items/10)
		}
		t.Logf("%d flushes, mean %.1f requests each", len(sizes), float64(items)/float64(len(sizes)))
	})
}

// Under request/response load (every caller waits for its own result), a
// batch is due as soon as the engine is idle; with MaxFlushes(n), n such
// batches flush at once instead of one after another. Idle flushes used
// to wait for the flush under way.
func TestIdleFlushesUseEveryFlushSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const slots = 4
		log := &flushLog{pause: 10 * time.Millisecond}
		m := &batched{bulk: NewBatcher(log.flush, MaxWait(time.Hour), MaxFlushes(slots))}
		p := mustNew[int](t, m, WithWorkers(2))
		var wg sync.WaitGroup
		for c := range slots {
			wg.Go(func() {
				time.Sleep(time.Duration(c) * time.Millisecond) // one after another, each while the others flush
				if r := p.Do(context.Background(), c)[0]; r.Err != nil || r.Data != c+1 {
					t.Errorf("caller %d: %+v", c, r)
				}
			})
		}
		wg.Wait()
		p.Close()
		if sizes, maxRun := log.snapshot(); maxRun != slots {
			t.Errorf("at most %d flushes at once (sizes %v), want %d", maxRun, sizes, slots)
		}
		if s := m.bulk.Stats(); s.Flushes[FlushIdle] != slots {
			t.Errorf("flushes by reason %v, want %d idle ones", s.Flushes, slots)
		}
	})
}

// The default in-flight bound leaves room for every batch a batcher of the
// machine may flush at once: a 500 x 4 batcher runs 4 full flushes at
// once. The default of 1,024 used to cap it silently at two.
func TestDefaultBoundRunsEveryFlushFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &flushLog{gate: make(chan struct{})}
		// NoIdleFlush: batches flush full, whenever the one submitter
		// lets the workers idle.
		m := &batched{bulk: NewBatcher(log.flush, MaxItems(500), MaxFlushes(4), MaxWait(time.Hour), NoIdleFlush())}
		p := mustNew[int](t, m, WithWorkers(4))
		if got, want := cap(p.in), 1024+500*4; got != want {
			t.Errorf("default bound %d, want %d", got, want)
		}
		items := make([]int, 2000)
		done := make(chan []Request[int])
		go func() { done <- p.Do(context.Background(), items...) }()
		synctest.Wait() // four batches of 500 in their flushes, all held at the gate
		if sizes, maxRun := log.snapshot(); maxRun != 4 || len(sizes) != 4 || sizes[0] != 500 {
			t.Errorf("flushes %v, %d at once; want 4 full ones at once", sizes, maxRun)
		}
		close(log.gate)
		for i, r := range <-done {
			if r.Err != nil || r.Data != 1 {
				t.Fatalf("result %d: %+v", i, r)
			}
		}
		p.Close()
	})
}

// An explicit bound too small for a batcher of the machine fails New,
// naming both; for a batcher New cannot find, the first use logs it and
// its BatchStats carry the warning.
func TestTooSmallBoundIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		flush := func(context.Context, []Request[int]) error { return nil }
		m := &batched{bulk: NewBatcher(flush, MaxItems(500), MaxFlushes(4), BatchName("orders"))}
		_, err := New[int](m, WithMaxInFlight(1000))
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithMaxInFlight(1000)") || !strings.Contains(err.Error(), `"orders"`) {
			t.Errorf("New: %v; want ErrInvalidOption naming the bound and the batcher", err)
		}
		if p, err := New[int](m, WithMaxInFlight(2000)); err != nil {
			t.Errorf("a bound that fits: %v", err)
		} else {
			p.Close()
		}

		var logs syncBuffer
		hidden := &hiddenBatcher{add: NewBatcher(flush, MaxItems(500), MaxFlushes(4), BatchName("hidden")).Add}
		p := mustNew[int](t, hidden, WithMaxInFlight(1000), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if r := p.Do(context.Background(), 1)[0]; r.Err != nil {
			t.Errorf("request: %v", r.Err)
		}
		p.Close()
		if s := p.Stats().Batchers; len(s) != 1 || !strings.Contains(s[0].Warning, "WithMaxInFlight(1000)") {
			t.Errorf("batcher stats %+v; want a warning about the bound", s)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "hidden") {
			t.Errorf("log %q; want a warning naming the batcher", logs.String())
		}
	})
}

// New finds the machine's batchers wherever its fields hold them, exported
// or not, once each, and reads their configuration.
func TestNewFindsTheMachinesBatchers(t *testing.T) {
	flush := func(context.Context, []Request[int]) error { return nil }
	shared := NewBatcher(flush, MaxItems(10), MaxFlushes(2), BatchName("shared"))
	m := &findMe{
		inner:  &findInner{b: NewBatcher(flush, MaxItems(7), MaxFlushes(3), BatchName("inner"))},
		list:   []*Batcher[int]{shared, NewBatcher(flush, MaxItems(5), BatchName("listed"))},
		byName: map[string]*Batcher[int]{"again": shared},
		Public: NewBatcher(flush, BatchName("public")),
	}
	m.self = m
	var found []string
	total := 0
	for _, b := range discoverBatchers[int](m) {
		found = append(found, b.name)
		total += b.maxItems * b.maxFlushes
	}
	if want := "inner listed public shared"; strings.Join(sortedCopy(found), " ") != want {
		t.Errorf("found %v, want %s, each once", found, want)
	}
	if want := 7*3 + 10*2 + 5 + 100; total != want {
		t.Errorf("room for %d parked requests, want %d", total, want)
	}
}

type findInner struct{ b *Batcher[int] }

type findMe struct {
	batched
	inner  *findInner
	list   []*Batcher[int]
	byName map[string]*Batcher[int]
	Public *Batcher[int]
	self   *findMe // a cycle: walked once
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }
