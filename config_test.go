package statepipe

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
)

// Configuration: what New refuses, and the edges of what it accepts.

// wideM has 70 stages in a chain, Start -> S01 -> ... -> S69; with loop
// set, S69 goes back to S40: a cycle far past the 64 stages a word of
// bits tracks.
type wideM struct{ loop bool }

func (w wideM) Start(r Request[int]) Request[int] { r.Next = w.S01; return r }
func (wideM) Close()                              {}
func (w wideM) S01(r Request[int]) Request[int]   { r.Data++; r.Next = w.S02; return r }
func (w wideM) S02(r Request[int]) Request[int]   { r.Data++; r.Next = w.S03; return r }
func (w wideM) S03(r Request[int]) Request[int]   { r.Data++; r.Next = w.S04; return r }
func (w wideM) S04(r Request[int]) Request[int]   { r.Data++; r.Next = w.S05; return r }
func (w wideM) S05(r Request[int]) Request[int]   { r.Data++; r.Next = w.S06; return r }
func (w wideM) S06(r Request[int]) Request[int]   { r.Data++; r.Next = w.S07; return r }
func (w wideM) S07(r Request[int]) Request[int]   { r.Data++; r.Next = w.S08; return r }
func (w wideM) S08(r Request[int]) Request[int]   { r.Data++; r.Next = w.S09; return r }
func (w wideM) S09(r Request[int]) Request[int]   { r.Data++; r.Next = w.S10; return r }
func (w wideM) S10(r Request[int]) Request[int]   { r.Data++; r.Next = w.S11; return r }
func (w wideM) S11(r Request[int]) Request[int]   { r.Data++; r.Next = w.S12; return r }
func (w wideM) S12(r Request[int]) Request[int]   { r.Data++; r.Next = w.S13; return r }
func (w wideM) S13(r Request[int]) Request[int]   { r.Data++; r.Next = w.S14; return r }
func (w wideM) S14(r Request[int]) Request[int]   { r.Data++; r.Next = w.S15; return r }
func (w wideM) S15(r Request[int]) Request[int]   { r.Data++; r.Next = w.S16; return r }
func (w wideM) S16(r Request[int]) Request[int]   { r.Data++; r.Next = w.S17; return r }
func (w wideM) S17(r Request[int]) Request[int]   { r.Data++; r.Next = w.S18; return r }
func (w wideM) S18(r Request[int]) Request[int]   { r.Data++; r.Next = w.S19; return r }
func (w wideM) S19(r Request[int]) Request[int]   { r.Data++; r.Next = w.S20; return r }
func (w wideM) S20(r Request[int]) Request[int]   { r.Data++; r.Next = w.S21; return r }
func (w wideM) S21(r Request[int]) Request[int]   { r.Data++; r.Next = w.S22; return r }
func (w wideM) S22(r Request[int]) Request[int]   { r.Data++; r.Next = w.S23; return r }
func (w wideM) S23(r Request[int]) Request[int]   { r.Data++; r.Next = w.S24; return r }
func (w wideM) S24(r Request[int]) Request[int]   { r.Data++; r.Next = w.S25; return r }
func (w wideM) S25(r Request[int]) Request[int]   { r.Data++; r.Next = w.S26; return r }
func (w wideM) S26(r Request[int]) Request[int]   { r.Data++; r.Next = w.S27; return r }
func (w wideM) S27(r Request[int]) Request[int]   { r.Data++; r.Next = w.S28; return r }
func (w wideM) S28(r Request[int]) Request[int]   { r.Data++; r.Next = w.S29; return r }
func (w wideM) S29(r Request[int]) Request[int]   { r.Data++; r.Next = w.S30; return r }
func (w wideM) S30(r Request[int]) Request[int]   { r.Data++; r.Next = w.S31; return r }
func (w wideM) S31(r Request[int]) Request[int]   { r.Data++; r.Next = w.S32; return r }
func (w wideM) S32(r Request[int]) Request[int]   { r.Data++; r.Next = w.S33; return r }
func (w wideM) S33(r Request[int]) Request[int]   { r.Data++; r.Next = w.S34; return r }
func (w wideM) S34(r Request[int]) Request[int]   { r.Data++; r.Next = w.S35; return r }
func (w wideM) S35(r Request[int]) Request[int]   { r.Data++; r.Next = w.S36; return r }
func (w wideM) S36(r Request[int]) Request[int]   { r.Data++; r.Next = w.S37; return r }
func (w wideM) S37(r Request[int]) Request[int]   { r.Data++; r.Next = w.S38; return r }
func (w wideM) S38(r Request[int]) Request[int]   { r.Data++; r.Next = w.S39; return r }
func (w wideM) S39(r Request[int]) Request[int]   { r.Data++; r.Next = w.S40; return r }
func (w wideM) S40(r Request[int]) Request[int]   { r.Data++; r.Next = w.S41; return r }
func (w wideM) S41(r Request[int]) Request[int]   { r.Data++; r.Next = w.S42; return r }
func (w wideM) S42(r Request[int]) Request[int]   { r.Data++; r.Next = w.S43; return r }
func (w wideM) S43(r Request[int]) Request[int]   { r.Data++; r.Next = w.S44; return r }
func (w wideM) S44(r Request[int]) Request[int]   { r.Data++; r.Next = w.S45; return r }
func (w wideM) S45(r Request[int]) Request[int]   { r.Data++; r.Next = w.S46; return r }
func (w wideM) S46(r Request[int]) Request[int]   { r.Data++; r.Next = w.S47; return r }
func (w wideM) S47(r Request[int]) Request[int]   { r.Data++; r.Next = w.S48; return r }
func (w wideM) S48(r Request[int]) Request[int]   { r.Data++; r.Next = w.S49; return r }
func (w wideM) S49(r Request[int]) Request[int]   { r.Data++; r.Next = w.S50; return r }
func (w wideM) S50(r Request[int]) Request[int]   { r.Data++; r.Next = w.S51; return r }
func (w wideM) S51(r Request[int]) Request[int]   { r.Data++; r.Next = w.S52; return r }
func (w wideM) S52(r Request[int]) Request[int]   { r.Data++; r.Next = w.S53; return r }
func (w wideM) S53(r Request[int]) Request[int]   { r.Data++; r.Next = w.S54; return r }
func (w wideM) S54(r Request[int]) Request[int]   { r.Data++; r.Next = w.S55; return r }
func (w wideM) S55(r Request[int]) Request[int]   { r.Data++; r.Next = w.S56; return r }
func (w wideM) S56(r Request[int]) Request[int]   { r.Data++; r.Next = w.S57; return r }
func (w wideM) S57(r Request[int]) Request[int]   { r.Data++; r.Next = w.S58; return r }
func (w wideM) S58(r Request[int]) Request[int]   { r.Data++; r.Next = w.S59; return r }
func (w wideM) S59(r Request[int]) Request[int]   { r.Data++; r.Next = w.S60; return r }
func (w wideM) S60(r Request[int]) Request[int]   { r.Data++; r.Next = w.S61; return r }
func (w wideM) S61(r Request[int]) Request[int]   { r.Data++; r.Next = w.S62; return r }
func (w wideM) S62(r Request[int]) Request[int]   { r.Data++; r.Next = w.S63; return r }
func (w wideM) S63(r Request[int]) Request[int]   { r.Data++; r.Next = w.S64; return r }
func (w wideM) S64(r Request[int]) Request[int]   { r.Data++; r.Next = w.S65; return r }
func (w wideM) S65(r Request[int]) Request[int]   { r.Data++; r.Next = w.S66; return r }
func (w wideM) S66(r Request[int]) Request[int]   { r.Data++; r.Next = w.S67; return r }
func (w wideM) S67(r Request[int]) Request[int]   { r.Data++; r.Next = w.S68; return r }
func (w wideM) S68(r Request[int]) Request[int]   { r.Data++; r.Next = w.S69; return r }
func (w wideM) S69(r Request[int]) Request[int] {
	r.Data++
	if w.loop {
		r.Next = w.S40
	}
	return r
}

func TestNewInvalidConfig(t *testing.T) {
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] { return next(r) }
	strMW := func(stage string, r Request[string], next Stage[string]) Request[string] { return next(r) }
	cases := []struct {
		name string
		sm   StateMachine[int]
		opts []Option
		want []string // each must appear in the error
	}{
		{"nil state machine", nil, nil, []string{"nil state machine"}},
		{"nil state machine with options", nil, []Option{WithWorkers(2)}, []string{"nil state machine"}},
		{"WithPipelines(0)", newChainM(), []Option{WithPipelines(0)}, []string{"WithPipelines", "at least 1"}},
		{"WithPipelines(-3)", newChainM(), []Option{WithPipelines(-3)}, []string{"WithPipelines", "at least 1"}},
		{"WithWorkers(0)", newChainM(), []Option{WithWorkers(0)}, []string{"WithWorkers", "at least 1"}},
		{"WithWorkers(-1)", newChainM(), []Option{WithWorkers(-1)}, []string{"WithWorkers", "at least 1"}},
		{"WithMaxInFlight(0)", newChainM(), []Option{WithMaxInFlight(0)}, []string{"WithMaxInFlight", "at least 1"}},
		{"WithMaxInFlight(-7)", newChainM(), []Option{WithMaxInFlight(-7)}, []string{"WithMaxInFlight", "at least 1"}},
		{"WithPipelines and WithWorkers", newChainM(), []Option{WithPipelines(2), WithWorkers(4)}, []string{"WithPipelines", "WithWorkers"}},
		{"WithWorkers and WithPipelines", newChainM(), []Option{WithWorkers(4), WithPipelines(2)}, []string{"WithPipelines", "WithWorkers"}},
		{"nil Option", newChainM(), []Option{nil}, []string{"nil Option"}},
		{"nil Option among good ones", newChainM(), []Option{WithWorkers(1), nil, WithDAG()}, []string{"nil Option"}},
		{"nil logger", newChainM(), []Option{WithLogger(nil)}, []string{"WithLogger", "nil"}},
		{"nil middleware", newChainM(), []Option{WithMiddleware[int](nil)}, []string{"WithMiddleware", "nil middleware"}},
		{"nil middleware after a good one", newChainM(), []Option{WithMiddleware(mw, nil)}, []string{"nil middleware"}},
		{"middleware of another data type", newChainM(), []Option{WithMiddleware(strMW)}, []string{"WithMiddleware", "data type"}},
		{"empty middleware of another data type", newChainM(), []Option{WithMiddleware[string]()}, []string{"WithMiddleware", "data type"}},
		{"middleware of two data types", newChainM(), []Option{WithMiddleware(mw), WithMiddleware(strMW)}, []string{"WithMiddleware", "data type"}},
		{"every problem named", nil, []Option{WithPipelines(0), WithMaxInFlight(0), nil},
			[]string{"nil state machine", "WithPipelines", "WithMaxInFlight", "nil Option"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Inside a bubble: if New started anything, the bubble would
			// end with goroutines left and the test would fail.
			synctest.Test(t, func(t *testing.T) {
				p, err := newWithoutPanic(t, tc.sm, tc.opts...)
				if err == nil {
					p.Close()
					t.Fatal("New succeeded, want an error")
				}
				if p != nil {
					t.Errorf("New returned Pipelines %p with its error", p)
				}
				if !errors.Is(err, ErrInvalidOption) {
					t.Errorf("error %q does not wrap ErrInvalidOption", err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name the problem (%q)", err, w)
					}
				}
				if m, ok := tc.sm.(*chainM); ok && m.closes.Load() != 0 {
					t.Error("New called sm.Close on a configuration error")
				}
			})
		})
	}
}

// Configurations at the edges of the valid range work.
func TestNewValidEdgeConfig(t *testing.T) {
	mw := func(stage string, r Request[int], next Stage[int]) Request[int] { return next(r) }
	cases := []struct {
		name string
		sm   StateMachine[int]
		opts []Option
	}{
		{"no options", newChainM(), nil},
		{"one of everything", newChainM(), []Option{WithPipelines(1), WithMaxInFlight(1), WithDAG(), WithOrdered()}},
		{"one worker", newChainM(), []Option{WithWorkers(1)}},
		{"empty WithMiddleware", newChainM(), []Option{WithMiddleware[int]()}},
		{"WithMiddleware twice", newChainM(), []Option{WithMiddleware(mw), WithMiddleware(mw, mw)}},
		{"70 stages", wideM{}, []Option{WithWorkers(2), WithDAG()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := mustNew(t, tc.sm, tc.opts...)
				g := p.NewGroup()
				go func() {
					for i := range 5 {
						if err := g.Submit(context.Background(), i); err != nil {
							t.Error(err)
						}
					}
					g.Close()
				}()
				res := drain(g)
				if len(res) != 5 {
					t.Fatalf("%d results, want 5", len(res))
				}
				for _, r := range res {
					if r.Err != nil {
						t.Errorf("result %d: %v", r.Data, r.Err)
					}
				}
				if _, ok := tc.sm.(wideM); ok && len(p.Stages()) != 70 {
					t.Errorf("%d stages found, want 70", len(p.Stages()))
				}
				p.Close()
			})
		})
	}
}

// WithDAG detects a cycle whatever the number of stages. It used to track
// 63 stage ids, and a cycle among stages beyond them ran for ever.
func TestDAGDetectsCyclesPastSixtyFourStages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew[int](t, wideM{loop: true}, WithDAG(), WithWorkers(1))
		res := p.Do(context.Background(), 0)
		var cycle *CycleError
		if !errors.As(res[0].Err, &cycle) || cycle.Stage != "S40" {
			t.Fatalf("Err = %v, want a CycleError at S40", res[0].Err)
		}
		if want := []string{"S62", "S63", "S64", "S65", "S66", "S67", "S68", "S69"}; !slices.Equal(cycle.Path, want) {
			t.Errorf("path %v, want the last eight stages %v", cycle.Path, want)
		}
		if res[0].Data != 69 {
			t.Errorf("Data %d, want 69: every stage ran once", res[0].Data)
		}
		p.Close()
	})
}

// A bound too large to allocate is a bad configuration: New must report it
// as an error, not panic ("never a panic, never a hang").
func TestNewHugeMaxInFlightIsAnError(t *testing.T) {
	p, err := newWithoutPanic[int](t, newChainM(), WithMaxInFlight(math.MaxInt))
	if err == nil {
		p.Close()
		t.Fatal("New(WithMaxInFlight(math.MaxInt)) succeeded; want an error wrapping ErrInvalidOption")
	}
	if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithMaxInFlight") {
		t.Errorf("error %q should wrap ErrInvalidOption and name WithMaxInFlight", err)
	}
}

// newWithoutPanic is New that fails the test if New panics: bad
// configuration must be an error, never a panic.
func newWithoutPanic[T any](t *testing.T, sm StateMachine[T], opts ...Option) (p *Pipelines[T], err error) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Fatalf("New panicked: %v", v)
		}
	}()
	return New(sm, opts...)
}
