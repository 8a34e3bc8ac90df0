package statepipe

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// twoBatchers parks even requests in a and odd ones in b.
type twoBatchers struct{ a, b *Batcher[int] }

func (m *twoBatchers) Start(r Request[int]) Request[int] {
	if r.Data%2 == 0 {
		return m.a.Add(r)
	}
	return m.b.Add(r)
}
func (m *twoBatchers) Close() {}

// Idleness is the engine's, not a batcher's: while one batcher's flush
// runs, a lone request parked in another batcher is due as soon as the
// workers wait, and does not wait for its MaxWait.
func TestALoneRequestFlushesWhileAnotherBatcherFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		m := &twoBatchers{
			a: NewBatcher(func(context.Context, []Request[int]) error { <-release; return nil }, BatchName("a"), MaxWait(time.Hour)),
			b: NewBatcher(func(context.Context, []Request[int]) error { return nil }, BatchName("b"), MaxWait(time.Hour)),
		}
		p, err := New[int](m, WithWorkers(2))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		even := make(chan []Request[int])
		go func() { even <- p.Do(context.Background(), 0) }() // a's flush, held at release
		synctest.Wait()
		odd := make(chan []Request[int])
		go func() { odd <- p.Do(context.Background(), 1) }() // b's lone request
		synctest.Wait()
		<-odd // idle: b flushes at once
		close(release)
		<-even
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %v of fake time, want no MaxWait", d)
		}
		p.Close()
	})
}
