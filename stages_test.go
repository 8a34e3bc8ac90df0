package statepipe

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"
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
		p := mustNew[int](t, newIDMachine(), WithDAG(), WithWorkers(2))
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
	_    [0]X // the type argument is in the machine's type, not its data
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
		p := mustNew[int](t, newGenMachine(), WithDAG())
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
		p := mustNew[int](t, m, WithDAG())
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

type otherValidator struct{}

func (otherValidator) Validate(r Request[int]) Request[int] { r.Data += 10; return r }

// twoValidatesM's Validate hands over to the Validate of another type.
type twoValidatesM struct {
	sub            otherValidator
	validate, subV Stage[int]
}

func (m *twoValidatesM) Start(r Request[int]) Request[int]    { r.Next = m.validate; return r }
func (m *twoValidatesM) Validate(r Request[int]) Request[int] { r.Data++; r.Next = m.subV; return r }
func (m *twoValidatesM) Close()                               {}

// Stages were told apart by short name, so m.sub.Validate shared the id of
// the machine's own Validate and WithDAG failed the request with a cycle
// that does not exist.
func TestSameNamedStagesOfTwoTypesAreDistinct(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &twoValidatesM{}
		m.validate, m.subV = m.Validate, m.sub.Validate
		p := mustNew[int](t, m, WithDAG(), WithWorkers(1))
		g := p.NewGroup()
		mustSubmit(t, g, context.Background(), 0)
		g.Close()
		out := drainWithin(t, g, 1000*time.Hour)
		if len(out) != 1 {
			t.Fatalf("%d results, want 1", len(out))
		}
		if r := out[0]; r.Err != nil || r.Data != 11 {
			t.Errorf("Data %d, Err %v; want 11 (both Validates ran), nil", r.Data, r.Err)
		}
		p.Close()
		validates := 0
		for _, s := range p.Stats().Stages {
			if strings.HasSuffix(s.Name, "Validate") {
				validates++
				if s.Runs != 1 {
					t.Errorf("stage %q ran %d times, want 1: two functions share its id", s.Name, s.Runs)
				}
			}
		}
		if validates != 2 {
			t.Errorf("%d stages named *Validate in Stats, want 2 (the machine's and otherValidator's)", validates)
		}
	})
}

type codeM struct{ n int }

func (m *codeM) Ptr(r Request[int]) Request[int] { r.Data += m.n; return r }
func (m codeM) Val(r Request[int]) Request[int]  { r.Data += m.n; return r }

type genCodeM[X any] struct{ x X }

func (m *genCodeM[X]) Ptr(r Request[int]) Request[int] { return r }
func (m genCodeM[X]) Val(r Request[int]) Request[int]  { return r }

func plainStage(r Request[int]) Request[int] { return r }

// Stage ids rest on the code pointer of a func value (codeOf): the values
// of one method must share their code, whatever their receiver, or each
// method value would be a stage of its own; and different functions must
// not, for every kind of func a stage can be, or their requests would be
// counted, named and cycle-checked as one stage.
func TestMethodValuesShareCodeAndFunctionsDoNot(t *testing.T) {
	m1, m2 := &codeM{n: 1}, &codeM{n: 2}
	g1 := &genCodeM[string]{}
	k := 3
	closure := func(r Request[int]) Request[int] { r.Data += k; return r }
	fns := []struct {
		name string
		fn   Stage[int]
	}{
		{"pointer receiver", m1.Ptr},
		{"value receiver", m1.Val},
		{"generic pointer receiver", g1.Ptr},
		{"generic value receiver", g1.Val},
		{"closure", closure},
		{"plain func", plainStage},
		{"closure over a method expression", func(r Request[int]) Request[int] { return (*codeM).Ptr(m1, r) }},
	}
	seen := map[uintptr]string{}
	for _, f := range fns {
		got := codeOf(f.fn)
		if got == 0 {
			t.Errorf("%s: codeOf is 0", f.name)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("%s and %s share code %#x", f.name, other, got)
		}
		seen[got] = f.name
	}
	same := []struct {
		name string
		a, b Stage[int]
	}{
		{"pointer receiver", m1.Ptr, m2.Ptr},
		{"value receiver", m1.Val, m2.Val},
		{"generic pointer receiver", g1.Ptr, (&genCodeM[string]{x: "y"}).Ptr},
	}
	for _, s := range same {
		if a, b := codeOf(s.a), codeOf(s.b); a != b {
			t.Errorf("%s: two method values of one method have code %#x and %#x", s.name, a, b)
		}
	}
}

// Distinct functions that resolve to the same name (a package-level func
// named like a stage, two instances of a generic type's method) shared one
// stage id, so WithDAG failed their requests with a false cycle.
func TestDistinctFunctionsOfOneNameAreDistinctStages(t *testing.T) {
	m := &sameNamesM{}
	p, err := New[int](m, WithDAG())
	if err != nil {
		t.Fatal(err)
	}
	g := p.NewGroup()
	for i := range 2 {
		if err := g.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	for r := range g.Out() {
		if r.Err != nil {
			t.Errorf("request %d: %v", r.Data, r.Err)
		}
	}
	p.Close()
	names := map[string]bool{}
	for _, s := range p.Stats().Stages {
		names[s.Name] = true
	}
	for _, want := range []string{"Validate", "Validate#2", "genChecker.Check", "genChecker.Check#2"} {
		if !names[want] {
			t.Errorf("no stage named %q in %v", want, names)
		}
	}
}

type genChecker[X any] struct{}

func (genChecker[X]) Check(r Request[int]) Request[int] { return r }

type sameNamesM struct{}

func (m *sameNamesM) Start(r Request[int]) Request[int] {
	if r.Data == 0 {
		r.Next = m.Validate // then the package-level Validate, then Check
	} else {
		r.Next = genChecker[int]{}.Check
	}
	return r
}

func (m *sameNamesM) Validate(r Request[int]) Request[int] {
	r.Next = Validate
	return r
}

func (m *sameNamesM) Close() {}

// Validate is a package-level function named like the machine's stage.
func Validate(r Request[int]) Request[int] {
	r.Next = genChecker[string]{}.Check
	return r
}
