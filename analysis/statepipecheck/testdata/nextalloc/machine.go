// Package nextalloc has stages that name the next stage by a method value
// built per request, and the near misses that do not.
package nextalloc

import "github.com/statepipe/statepipe"

type Order struct{ Amount int }

type Checkout struct {
	limit int

	approve statepipe.Stage[Order] // made once in NewCheckout: fine
}

func NewCheckout(limit int) *Checkout {
	c := &Checkout{limit: limit}
	c.approve = c.Approve // the constructor: built once, not per request
	return c
}

func (c *Checkout) Start(r statepipe.Request[Order]) statepipe.Request[Order] {
	if r.Data.Amount > c.limit {
		r.Next = c.Review // want `c\.Review allocates a method value on every transition: assign a statepipe\.Stage field made once in the constructor \(c\.review = c\.Review\)`
		return r
	}
	r.Next = c.approve // a field made once: no allocation
	return r
}

func (c *Checkout) Review(r statepipe.Request[Order]) statepipe.Request[Order] {
	r.Next = c.Approve // want `c\.Approve allocates a method value`
	return r
}

func (c *Checkout) Approve(r statepipe.Request[Order]) statepipe.Request[Order] {
	if r.Data.Amount == 0 {
		return statepipe.Request[Order]{Data: r.Data, Next: c.Review} // want `c\.Review allocates a method value`
	}
	r.Next = finish // a function, not a method value: nothing is built
	return r
}

func (c *Checkout) Close() {}

func finish(r statepipe.Request[Order]) statepipe.Request[Order] { return r }

// route is a helper the stages could call: it runs per request too.
func (c *Checkout) route(r *statepipe.Request[Order]) {
	r.Next = c.Review // want `c\.Review allocates a method value`
}
