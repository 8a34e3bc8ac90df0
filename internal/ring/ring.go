// Package ring has the growable ring buffers of the engine's output
// queues. They grow as they fill, so that they cost what they have held,
// not the most they may ever hold, and keep their buffer once grown: a
// queue that fills and empties over and over allocates once.
package ring

// Queue is a FIFO queue. The zero value is an empty queue.
type Queue[E any] struct {
	buf  []E
	head int
	n    int
}

// Len returns the number of elements queued.
func (q *Queue[E]) Len() int { return q.n }

// Push appends e.
func (q *Queue[E]) Push(e E) {
	if q.n == len(q.buf) {
		q.buf, q.head = regrow(q.buf, q.head, q.n, q.n+1), 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
}

// Peek returns the first element without removing it; ok is false if q is
// empty.
func (q *Queue[E]) Peek() (e E, ok bool) {
	if q.n == 0 {
		return e, false
	}
	return q.buf[q.head], true
}

// Pop removes and returns the first element; ok is false if q is empty.
func (q *Queue[E]) Pop() (e E, ok bool) {
	if q.n == 0 {
		return e, false
	}
	e = q.buf[q.head]
	var zero E
	q.buf[q.head] = zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return e, true
}

// Reset empties q, lets go of its buffer, and returns how many elements
// it held.
func (q *Queue[E]) Reset() int {
	n := q.n
	*q = Queue[E]{}
	return n
}

// Reorder holds elements by position, counted from the next one to take
// out, and gives them out in order of position, each once it is there.
// The zero value is empty, waiting for position 0.
type Reorder[E any] struct {
	buf  []E
	have []bool
	head int // position 0 is at buf[head]
	n    int
}

// Len returns the number of elements held.
func (q *Reorder[E]) Len() int { return q.n }

// Set puts e at position i (0 is the next to take out). Each position is
// set once before it is taken out.
func (q *Reorder[E]) Set(i int, e E) {
	if i >= len(q.buf) {
		size := len(q.buf)
		q.buf = regrow(q.buf, q.head, size, i+1)
		q.have, q.head = regrow(q.have, q.head, size, i+1), 0
	}
	j := (q.head + i) % len(q.buf)
	q.buf[j], q.have[j] = e, true
	q.n++
}

// Next takes out the element at position 0, if it is there: every other
// position then moves one down.
func (q *Reorder[E]) Next() (e E, ok bool) {
	if q.n == 0 || !q.have[q.head] {
		return e, false
	}
	e = q.buf[q.head]
	var zero E
	q.buf[q.head], q.have[q.head] = zero, false
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return e, true
}

// regrow returns a copy of the first n positions of the ring buf (head
// first), in a buffer of at least need elements, at position 0.
func regrow[E any](buf []E, head, n, need int) []E {
	size := max(8, len(buf))
	for size < need {
		size *= 2
	}
	grown := make([]E, size)
	for i := range n {
		grown[i] = buf[(head+i)%len(buf)]
	}
	return grown
}
