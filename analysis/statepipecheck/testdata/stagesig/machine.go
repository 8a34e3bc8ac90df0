// Package stagesig has methods that look like stages and are not, and a
// helper that is a stage by accident.
package stagesig

import (
	"context"

	"github.com/statepipe/statepipe"
)

type Item struct{ N int }

type Flow struct {
	check, store statepipe.Stage[Item]
}

func NewFlow() *Flow {
	f := &Flow{}
	f.check, f.store = f.Check, f.Store
	return f
}

func (f *Flow) Start(r statepipe.Request[Item]) statepipe.Request[Item] {
	r.Next = f.check
	return r
}

func (f *Flow) Check(r statepipe.Request[Item]) statepipe.Request[Item] {
	r.Data = f.Normalize(r).Data
	r.Next = f.store
	return r
}

func (f *Flow) Store(r statepipe.Request[Item]) statepipe.Request[Item] { return r }

// Normalize is a helper with the Stage signature: the engine runs it as
// a stage too.
func (f *Flow) Normalize(r statepipe.Request[Item]) statepipe.Request[Item] { // want `Flow\.Normalize has the Stage signature, so the engine runs it as a stage of Flow, but nothing names it as a Next: unexport it if it is a helper, or route to it`
	r.Data.N = max(r.Data.N, 0)
	return r
}

// Audit takes a pointer: not a stage.
func (f *Flow) Audit(r *statepipe.Request[Item]) statepipe.Request[Item] { // want `Flow\.Audit is not a stage of Flow: a stage is exactly func\(statepipe\.Request\[Item\]\) statepipe\.Request\[Item\]; fix the signature, or unexport it if it is a helper`
	return *r
}

// Retry has an extra argument: not a stage.
func (f *Flow) Retry(r statepipe.Request[Item], n int) statepipe.Request[Item] { // want `Flow\.Retry is not a stage of Flow`
	return r
}

// Report returns no Request: not a stage.
func (f *Flow) Report(r statepipe.Request[Item]) error { return r.Err } // want `Flow\.Report is not a stage of Flow`

// Other is for another item type: not a stage of this machine.
func (f *Flow) Other(r statepipe.Request[int]) statepipe.Request[int] { return r } // want `Flow\.Other is not a stage of Flow`

// Submit has another purpose and says so by its types: fine.
func (f *Flow) Submit(ctx context.Context, it Item) error { return nil }

// summarize is unexported: the engine does not see it.
func (f *Flow) summarize(r *statepipe.Request[Item]) {}

func (f *Flow) Close() {}

// Base provides a stage to the machines that embed it.
type Base struct{}

func (Base) Shared(r statepipe.Request[Item]) statepipe.Request[Item] { return r } // want `Base\.Shared has the Stage signature, so the engine runs it as a stage of Outer`

type Outer struct {
	Base
	next statepipe.Stage[Item]
}

func NewOuter() *Outer {
	o := &Outer{}
	o.next = o.Mid
	return o
}

func (o *Outer) Start(r statepipe.Request[Item]) statepipe.Request[Item] {
	r.Next = o.next
	return r
}

func (o *Outer) Mid(r statepipe.Request[Item]) statepipe.Request[Item] { return r }

func (o *Outer) Close() {}

// Single routes by data through a table nobody names as Next: with no
// stage named at all, nothing is reported.
type Single struct{}

func (Single) Start(r statepipe.Request[int]) statepipe.Request[int]    { return r }
func (Single) Unrouted(r statepipe.Request[int]) statepipe.Request[int] { return r }
func (Single) Close()                                                   {}

// NotAMachine has no Close: it is not a state machine, and its methods
// are not checked.
type NotAMachine struct{}

func (NotAMachine) Start(r statepipe.Request[int]) statepipe.Request[int] { return r }
func (NotAMachine) Take(r *statepipe.Request[int])                        {}

// Tally is given to New by value: its pointer-receiver method is not in
// the method set the engine looks at.
type Tally struct{ done statepipe.Stage[int] }

func RunTally() (*statepipe.Pipelines[int], error) { return statepipe.New[int](Tally{}) }

func (t Tally) Start(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (t *Tally) Count(r statepipe.Request[int]) statepipe.Request[int] { return r } // want `Tally\.Count has a pointer receiver, but statepipe\.New is given a Tally value: the engine does not run it as a stage; pass a \*Tally to New`

func (t Tally) Close() {}
