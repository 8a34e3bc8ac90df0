// Package nofix has findings whose fix cannot be placed: no constructor,
// or one that returns a literal.
package nofix

import "github.com/statepipe/statepipe"

type Bare struct{}

func (b *Bare) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = b.Next // want `b\.Next allocates a method value`
	return r
}

func (b *Bare) Next(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (b *Bare) Close() {}

type Lit struct{ n int }

func NewLit() *Lit { return &Lit{n: 1} }

func (l *Lit) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = l.Done // want `l\.Done allocates a method value`
	return r
}

func (l *Lit) Done(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (l *Lit) Close() {}

// Value is used by value: a method value made in its constructor would
// bind a copy without the field, so no fix is offered.
type Value struct{ n int }

func NewValue() Value {
	v := Value{n: 1}
	return v
}

func (v Value) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = v.Done // want `v\.Done allocates a method value`
	return r
}

func (v Value) Done(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (v Value) Close() {}

// Copied is made as a value and returned by copy; its stages have pointer
// receivers. A field set in the constructor would hold a method value of
// the local, not of the copy the caller gets: no fix.
type Copied struct{ n int }

func NewCopied() Copied {
	c := Copied{}
	return c
}

func (c *Copied) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = c.Done // want `c\.Done allocates a method value`
	return r
}

func (c *Copied) Done(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (c *Copied) Close() {}
