package statepipe

import "context"

// Request is one item on its way through a state machine. Stages receive it
// by value, change it and return it.
type Request[T any] struct {
	Ctx  context.Context // the submitter's context; cancelling it stops this request
	Data T               // the item
	Err  error           // set by a stage (or by statepipe) to fail this request
	Next Stage[T]        // the stage to run next; nil finishes the request

	// Bookkeeping owned by the engine; a stage copies it along untouched.
	// The small fields come last, packed together.
	group   *Group[T]
	seq     uint64 // submission position in its group: its id, and its order
	queued  int64  // clock reading at Submit
	started int64  // clock reading when a worker first picked it up
	visited uint64 // stage ids run so far, for WithDAG

	// The worker running the stage that holds the request, and which of
	// its stage calls this is: a parker checks both before taking the
	// request, so that only the running stage can hand it over, once.
	worker *worker[T]
	call   uint32

	trail trail // the last stages run, for CycleError
	from  uint8 // the graph node it comes from: nodeIn, a stage or a batcher
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

// trail records the ids of the last len(trail.ids) stages a request ran, so
// that a CycleError can name the path without an allocation per request.
type trail struct {
	ids  [8]uint8
	hops uint8
}

func (t *trail) push(id int) {
	t.ids[t.hops%uint8(len(t.ids))] = uint8(id)
	t.hops++
}

// path returns the recorded stage ids, oldest first.
func (t *trail) path() []int {
	n := min(int(t.hops), len(t.ids))
	out := make([]int, 0, n)
	for i := int(t.hops) - n; i < int(t.hops); i++ {
		out = append(out, int(t.ids[i%len(t.ids)]))
	}
	return out
}

// handOff takes r away from the worker running its stage, for a parker to
// resume later with Pipelines.resume. It fails if r is not held by a
// running stage or was already handed off in this stage call; on success
// the worker lets go of the request whatever the stage returns or does.
//
// node is the parker's node in the graph: the request comes from there
// when it resumes.
func (r *Request[T]) handOff(node uint8) error {
	w := r.worker
	if w == nil || w.call != r.call || w.handedOff {
		return ErrNotRunning
	}
	w.handedOff, w.parkedIn = true, node
	r.worker, r.from = nil, node
	return nil
}

// ID returns the request's id, unique within its Pipelines for the first
// 2^32 requests of each group: the Request of Observer events. It is 0 for
// a Request that no Pipelines admitted.
func (r Request[T]) ID() uint64 {
	if r.group == nil {
		return 0
	}
	return r.id()
}

// id returns the request's id; r.group must be set.
func (r *Request[T]) id() uint64 { return r.group.id<<32 | r.seq }
