// Package statepipecheck defines [Analyzer], which reports the pitfalls of
// code that uses [github.com/statepipe/statepipe] that the compiler cannot
// see. It knows the statepipe names by their types, not their spelling:
// a state machine is a type of the package whose method set has Start
// with the Stage signature and Close(), as statepipe.New requires, and
// a stage is what the engine discovers (stages.go): an exported method
// of that method set, promoted ones included, of exactly
// func(statepipe.Request[T]) statepipe.Request[T].
//
// Run it with the statepipevet command, on its own or as go vet's tool:
//
//	go install github.com/statepipe/statepipe/analysis/cmd/statepipevet@latest
//	statepipevet ./...
//	go vet -vettool=$(which statepipevet) ./...
//
// It is an ordinary [golang.org/x/tools/go/analysis.Analyzer], so gopls
// and golangci-lint (as a module plugin) can run it too. Each diagnostic
// has a Category naming its check.
//
// # Checks
//
// nextalloc: r.Next = m.B (or Request{Next: m.B}) in a function that takes
// a Request builds a method value on every transition; it escapes with
// the request, so it costs an allocation each time. The suggested fix is
// the idiom of the statepipe README: a field of type statepipe.Stage[T],
// set once in the constructor (m.b = m.B), named in the stage
// (r.Next = m.b). The fix is offered only when it can be placed: the
// type is a non-generic struct of the package, and exactly one function
// of the package returns it, from a local variable.
//
// batchadd: b.Add(r) whose result is not what the stage returns (return
// b.Add(r), or a variable holding it that is returned), and r read,
// returned, sent or changed after b.Add(r) on the paths that follow it:
// the batcher owns the request from Add on.
//
// closeinstage: Pipelines.Close called from a stage, a flush, an observer
// (Observe or FlushStarting of an Observer, an ObserverFunc) or a
// middleware (given to WithMiddleware), directly
// or through functions, methods and immediately called literals of the
// package (not through go statements). At run time it returns
// ErrCloseInStage and closes nothing.
//
// submitloop: Group.Submit in a loop, and the group's Out read only after
// the loop in the same goroutine, with no goroutine or literal of the
// function reading it: Submit blocks for good once the in-flight bound is
// reached. Loops with a constant trip count within the bound (1,024 by
// default, or a constant WithMaxInFlight or MaxInFlight in the function)
// are not reported. Use Pipelines.Do, or read Out in another goroutine.
//
// stagesig: an exported method of a state machine that takes or returns a
// Request (or *Request) but has not exactly the Stage signature (a
// pointer, another argument, another result, another T): the engine does
// not run it as a stage. And an exported method with the Stage signature
// that the package never names as a value (m.B, not a call m.B(r)) while
// it names other stages of the same machine: the engine runs it as a
// stage all the same, so it is probably a helper that became one. And,
// when the package gives statepipe.New the machine as a value (never a
// pointer), a method with the Stage signature and a pointer receiver:
// the value's method set, which the engine looks at, lacks it.
//
// flushkeep: a flush function given to statepipe.NewBatcher in the
// package that lets batch outlive the call: the slice, a part of it, an
// element's address, or a closure using them, stored in a field, a
// global or through a pointer, sent on a channel, returned inside a
// value, or used by a goroutine the flush does not wait for (no Wait call
// after the go statement). Copying the elements (append(kept, batch...),
// for _, r := range batch) is fine.
//
// # Limits
//
// The checks are intraprocedural except closeinstage, and textual where
// order matters ("after Add", "after the loop"). They do not follow a
// request or a batch into a function it is passed to.
package statepipecheck
