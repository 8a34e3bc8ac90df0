package nextalloc

import "github.com/statepipe/statepipe"

// Counter is built by value in two constructors: its fix cannot know which
// to edit, so the finding comes without one.
type Counter struct{ n int }

func NewCounter() Counter          { return Counter{} }
func NewCounterFrom(n int) Counter { return Counter{n: n} }

func (c Counter) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = c.Count // want `c\.Count allocates a method value`
	return r
}

func (c Counter) Count(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (c Counter) Close() {}

// Empty has no fields yet and a constructor that returns a variable.
type Empty struct{}

func NewEmpty() *Empty {
	e := new(Empty)
	return e
}

func (e *Empty) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = e.Done // want `e\.Done allocates a method value`
	return r
}

func (e *Empty) Done(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (e *Empty) Close() {}
