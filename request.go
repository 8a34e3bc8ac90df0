package statepipe

import "context"

// Request is one item on its way through a state machine. Stages receive it
// by value, change it and return it.
//
// A Request carries two words of bookkeeping besides its four fields: which
// of the engine's records it is, and which stage call of that record it
// belongs to. A copy kept past the stage that got it is therefore stale and
// recognised as such everywhere: [Batcher.Add] refuses it, and a stage that
// returns it (or any other Request) only passes on its four fields.
type Request[T any] struct {
	Ctx  context.Context // the submitter's context; cancelling it stops this request
	Data T               // the item
	Err  error           // set by a stage (or by statepipe) to fail this request
	Next Stage[T]        // the stage to run next; nil finishes the request

	rec *record[T] // the engine's record while inside the machine; nil outside
	tag uint64     // id<<callBits | stage call; see record.owner
}

// callBits of a tag count the stage calls of one request on its record,
// so that a copy kept from an earlier call no longer matches; the other
// bits are its id (47 bits, below parkedBit).
const (
	callBits = 16
	callMask = 1<<callBits - 1
	idMask   = 1<<(63-callBits) - 1
)

// parkedBit marks the Request a parker returns for the stage to return
// (return b.Add(r)): it names the parker's graph node, so that the worker
// counts the transition into it and names it in the Parked event.
const parkedBit = 1 << 63

// parkedAt returns the Request a parker at node at gives back to the stage.
func parkedAt[T any](at node) Request[T] { return Request[T]{tag: parkedBit | uint64(at)} }

// parker returns the node of the parker that made r with parkedAt.
func (r *Request[T]) parker() (at node, ok bool) {
	if r.rec != nil || r.tag&parkedBit == 0 {
		return 0, false
	}
	return node(r.tag), true
}

// Stage is one step of a state machine. It sets r.Next to the stage to run
// next, or leaves it nil to finish the request, and returns r.
//
// Naming the next stage with a method value built inside a stage
// (r.Next = s.Validate) costs one small heap allocation per transition,
// because the method value escapes with the request. To avoid it, make the
// stage values once when the machine is built and assign those:
//
//	m.validate = m.Validate // in the constructor, once
//	r.Next = m.validate     // in a stage: no allocation
//
// A stage is identified by its function's code: every method value of
// one method is the same stage, and so are closures made from one
// function literal. In a generic machine type, make the stage values in a
// constructor that is not generic (func NewMachine() *Machine[int]):
// inside generic code Go builds a method value as a closure of that code,
// which runs as a stage of its own, named after where it is built.
type Stage[T any] func(r Request[T]) Request[T]

// StateMachine is implemented by the type whose exported methods are the
// stages. Every exported method with the signature of a [Stage] is found by
// [New]; Start is the first stage of every request.
type StateMachine[T any] interface {
	Start(r Request[T]) Request[T]
	// Close is called once, after the Pipelines have shut down and no
	// stage is running.
	Close()
}

// ID returns the request's id, unique within its Pipelines: the Request of
// Observer events. It is 0 for a Request that no Pipelines admitted.
func (r Request[T]) ID() uint64 { return r.tag >> callBits }

// Attempt returns which attempt of the current step this is: 1 on the
// first run of a stage (or of the flush a request is in), 2 on its first
// retry ([Retry]), and so on. It is meant for the stage or flush that has
// the request; it is 0 for a Request no Pipelines holds.
func (r Request[T]) Attempt() int {
	if r.rec == nil {
		return 0
	}
	return int(r.rec.attempt)
}
