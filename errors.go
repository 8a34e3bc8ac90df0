package statepipe

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrClosed is returned by [Group.Submit] once the group or its
	// [Pipelines] has been closed.
	ErrClosed = errors.New("statepipe: closed")

	// ErrInvalidOption is wrapped by every configuration error [New]
	// returns; the wrapping error names the problem.
	ErrInvalidOption = errors.New("statepipe: invalid option")

	// ErrNilContext is returned by [Group.Submit] when given a nil context.
	ErrNilContext = errors.New("statepipe: nil context")
)

// PanicError is the error of a request whose stage, middleware or batch
// flush panicked. The pipelines recover the panic and keep running.
type PanicError struct {
	Stage string // the stage (or "flush" of a batcher) that panicked
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("statepipe: panic in stage %s: %v", e.Stage, e.Value)
}

// Unwrap returns the panic value if it is an error, so that errors.Is and
// errors.As see through a panic(err).
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// CycleError is the error of a request that reached the same stage twice
// in a machine run with [WithDAG].
type CycleError struct {
	Stage string   // the stage reached a second time
	Path  []string // the stages the request went through, oldest first; the earliest may be cut
}

func (e *CycleError) Error() string {
	return fmt.Sprintf("statepipe: cycle: stage %s reached twice (path %s -> %s)",
		e.Stage, strings.Join(e.Path, " -> "), e.Stage)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, args...))
}
