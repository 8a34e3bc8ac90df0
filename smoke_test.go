package statepipe

import (
	"context"
	"testing"
)

type sm1 struct{ b, c Stage[int] }

func newSM1() *sm1                               { s := &sm1{}; s.b, s.c = s.B, s.C; return s }
func (s *sm1) Start(r Request[int]) Request[int] { r.Data++; r.Next = s.b; return r }
func (s *sm1) B(r Request[int]) Request[int]     { r.Data++; r.Next = s.c; return r }
func (s *sm1) C(r Request[int]) Request[int]     { r.Data++; return r }
func (s *sm1) Close()                            {}

func TestSmoke(t *testing.T) {
	p, err := New[int](newSM1())
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup(Ordered())
	go func() {
		for i := 0; i < 5000; i++ {
			g.Submit(context.Background(), i)
		}
		g.Close()
	}()
	i := 0
	for r := range g.Out() {
		if r.Data != i+3 || r.Err != nil {
			t.Fatal(r.Data, i, r.Err)
		}
		i++
	}
	p.Close()
}

type fresh struct{}

func (fresh) Start(r Request[int]) Request[int] { return Request[int]{Data: r.Data + 1} }
func (fresh) Close()                            {}

func TestFreshLiteral(t *testing.T) {
	p, _ := New[int](fresh{})
	g := p.NewGroup()
	for i := range 100 {
		g.Submit(context.Background(), i)
	}
	g.Close()
	n := 0
	for r := range g.Out() {
		if r.Err != nil || r.Ctx == nil {
			t.Fatal(r)
		}
		n++
	}
	if n != 100 {
		t.Fatal(n)
	}
	p.Close()
}
