package statepipe

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

type bsm struct {
	bulk  *Batcher[int]
	after Stage[int]
	calls int
}

func newBSM(opts ...BatchOption) *bsm {
	m := &bsm{}
	m.after = m.After
	m.bulk = NewBatcher(func(ctx context.Context, batch []Request[int]) error {
		m.calls++
		for i := range batch {
			batch[i].Data *= 10
		}
		return nil
	}, opts...)
	return m
}
func (m *bsm) Start(r Request[int]) Request[int] { r.Next = m.after; return m.bulk.Add(r) }
func (m *bsm) After(r Request[int]) Request[int] { r.Data++; return r }
func (m *bsm) Close()                            {}

func TestBatchSmoke(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newBSM(MaxItems(10), MaxWait(time.Second))
		p, err := New[int](m)
		if err != nil {
			t.Fatal(err)
		}
		g := p.NewGroup()
		for i := range 100 {
			if err := g.Submit(context.Background(), i); err != nil {
				t.Fatal(err)
			}
		}
		g.Close()
		sum := 0
		for r := range g.Out() {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			sum += r.Data
		}
		if want := 10*(99*100/2) + 100; sum != want {
			t.Fatalf("sum %d want %d", sum, want)
		}
		p.Close()
		t.Logf("calls=%d stats=%+v", m.calls, m.bulk.Stats())
	})
}
