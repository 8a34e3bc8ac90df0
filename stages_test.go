package statepipe

import (
	"context"
	"testing"
	"testing/synctest"
)

// idBase is embedded by idMachine: its stage is promoted.
type idBase struct{}

func (*idBase) Promoted(r Request[int]) Request[int] { r.Data += 1000; return r }

// idMachine reaches each of its stages every way a stage names the next:
// a method value built in the stage, a stage value made once, a value
// receiver's method value, and a promoted method's.
type idMachine struct {
	*idBase
	ptr Stage[int] // made once
}

func newIDMachine() *idMachine {
	m := &idMachine{idBase: &idBase{}}
	m.ptr = m.Pointer
	return m
}

func (m *idMachine) Start(r Request[int]) Request[int] {
	switch r.Data {
	case 0:
		r.Next = m.Pointer // built here
	case 1:
		r.Next = m.ptr // made once
	case 2:
		r.Next = idMachine{}.Value // a value receiver's
	case 3:
		r.Next = m.Promoted // promoted from idBase
	case 4:
		r.Next = m.idBase.Promoted // the embedded type's own
	}
	return r
}

func (m *idMachine) Pointer(r Request[int]) Request[int] { r.Data += 10; return r }
func (idMachine) Value(r Request[int]) Request[int]      { r.Data += 100; return r }
func (m *idMachine) Close()                              {}

// However a stage names the next one, the machine's own stages are the
// ones New found, with their names, one entry each in Stats: identity is
// a function's code, read through reflect, and the method values of the
// machine are matched to its stages by their whole runtime names. It used
// to rest on unsafe and on parsing those names, and changed with inlining
// (CI runs this package with -gcflags=all=-l too).
func TestStagesAreFoundHoweverTheyAreNamed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := etNew[int](t, newIDMachine(), WithDAG(), WithWorkers(2))
		res := p.Do(context.Background(), 0, 1, 2, 3, 4)
		for i, want := range []int{10, 11, 102, 1003, 1004} {
			if res[i].Err != nil || res[i].Data != want {
				t.Errorf("request %d: %+v, want %d", i, res[i], want)
			}
		}
		p.Close()
		stats := p.Stats()
		if got, want := len(stats.Stages), len(p.Stages()); got != want {
			t.Errorf("%d stages in Stats, want the %d found by New: %+v", got, want, stats.Stages)
		}
		runs := map[string]uint64{}
		for _, s := range stats.Stages {
			runs[s.Name] = s.Runs
		}
		for name, want := range map[string]uint64{"Start": 5, "Pointer": 2, "Value": 1, "Promoted": 2} {
			if runs[name] != want {
				t.Errorf("stage %s ran %d times, want %d (runs %v)", name, runs[name], want, runs)
			}
		}
	})
}

// genMachine is a generic state machine: its stages' runtime names carry
// type arguments ("[...]"), matched whole like any other. Its next stage
// is a value made in newGenMachine, which is not generic: inside generic
// code, Go builds a method value as a closure of that code, which runs as
// a stage of its own (see Stage).
type genMachine[X any] struct {
	next Stage[int]
	zero X
}

func newGenMachine() *genMachine[string] {
	m := &genMachine[string]{}
	m.next = m.Next
	return m
}

func (m *genMachine[X]) Start(r Request[int]) Request[int] { r.Next = m.next; return r }
func (m *genMachine[X]) Next(r Request[int]) Request[int]  { r.Data++; return r }
func (m *genMachine[X]) Close()                            {}

func TestStagesOfAGenericMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := etNew[int](t, newGenMachine(), WithDAG())
		if r := p.Do(context.Background(), 0)[0]; r.Err != nil || r.Data != 1 {
			t.Errorf("result %+v", r)
		}
		p.Close()
		if s := p.Stats().Stages; len(s) != 2 || s[1].Name != "Next" || s[1].Runs != 1 {
			t.Errorf("stages %+v, want Start and Next, which ran once", s)
		}
	})
}

// Functions that are not the machine's stages (closures, other types'
// methods) are stages of their own, each with its own entry, however many.
func TestOtherFunctionsAreStagesOfTheirOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		add := func(n int) Stage[int] {
			return func(r Request[int]) Request[int] { r.Data += n; return r }
		}
		double := func(r Request[int]) Request[int] { r.Data *= 2; r.Next = add(1); return r }
		m := &routed{next: double}
		p := etNew[int](t, m, WithDAG())
		if r := p.Do(context.Background(), 5)[0]; r.Err != nil || r.Data != 11 {
			t.Errorf("result %+v, want 11", r)
		}
		p.Close()
		if s := p.Stats().Stages; len(s) != 3 || s[1].Runs != 1 || s[2].Runs != 1 {
			t.Errorf("stages %+v: want Start and the two closures, once each", s)
		}
	})
}

// routed's Start goes on to next.
type routed struct{ next Stage[int] }

func (m *routed) Start(r Request[int]) Request[int] { r.Next = m.next; return r }
func (m *routed) Close()                            {}
