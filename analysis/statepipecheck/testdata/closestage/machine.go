// Package closestage closes the Pipelines from where it must not, and
// from where it may.
package closestage

import (
	"context"

	"github.com/statepipe/statepipe"
)

type Job struct {
	p    *statepipe.Pipelines[int]
	bulk *statepipe.Batcher[int]
	stop chan struct{}
	last statepipe.Stage[int]
}

func NewJob() *Job {
	j := &Job{stop: make(chan struct{})}
	j.last = func(r statepipe.Request[int]) statepipe.Request[int] {
		j.p.Close() // want `Pipelines\.Close is called from a stage literal: there it returns ErrCloseInStage`
		return r
	}
	j.bulk = statepipe.NewBatcher(func(ctx context.Context, batch []statepipe.Request[int]) error {
		if len(batch) == 0 {
			j.p.Close() // want `Pipelines\.Close is called from a flush literal: there it returns ErrCloseInStage`
		}
		return nil
	})
	return j
}

func (j *Job) Start(r statepipe.Request[int]) statepipe.Request[int] {
	if r.Data < 0 {
		j.p.Close() // want `Pipelines\.Close is called from stage Start: there it returns ErrCloseInStage and closes nothing; signal the code that owns the Pipelines`
	}
	return r
}

// Fail closes through two helpers of the package.
func (j *Job) Fail(r statepipe.Request[int]) statepipe.Request[int] {
	j.giveUp() // want `Pipelines\.Close is called from stage Fail \(through giveUp, shutdown\)`
	return r
}

// Later closes in a deferred literal: still inside the stage.
func (j *Job) Later(r statepipe.Request[int]) statepipe.Request[int] {
	defer func() { // want `Pipelines\.Close is called from stage Later \(through a function literal\)`
		_ = j.p.Close()
	}()
	return r
}

// Signal asks the owner to close: the right way.
func (j *Job) Signal(r statepipe.Request[int]) statepipe.Request[int] {
	select {
	case j.stop <- struct{}{}:
	default:
	}
	return r
}

// Beside closes in a goroutine of its own, not inside the stage.
func (j *Job) Beside(r statepipe.Request[int]) statepipe.Request[int] {
	go j.shutdown()
	return r
}

func (j *Job) Close() {}

func (j *Job) giveUp() { j.shutdown() }

func (j *Job) shutdown() { _ = j.p.Close() }

// flush is a method given to NewBatcher.
func (j *Job) flush(ctx context.Context, batch []statepipe.Request[int]) error {
	j.shutdown() // want `Pipelines\.Close is called from flush flush \(through shutdown\)`
	return nil
}

func NewFlushing() *Job {
	j := &Job{}
	j.bulk = statepipe.NewBatcher(j.flush)
	return j
}

// Owner runs the Pipelines and closes them when asked: not a stage.
func Owner(j *Job) {
	<-j.stop
	j.shutdown()
}

// Watcher is an observer: the engine calls it on its own goroutines.
type Watcher struct{ p *statepipe.Pipelines[int] }

func (w *Watcher) Observe(e statepipe.Event) {
	if e.Kind == statepipe.EventKind(0) {
		w.p.Close() // want `Pipelines\.Close is called from observer Observe`
	}
}

// Options installs an observer function and a middleware that close.
func Options(p *statepipe.Pipelines[int]) []statepipe.Option {
	return []statepipe.Option{
		statepipe.WithObserver(statepipe.ObserverFunc(func(e statepipe.Event) {
			p.Close() // want `Pipelines\.Close is called from an observer literal`
		})),
		statepipe.WithMiddleware(func(stage string, r statepipe.Request[int], next statepipe.Stage[int]) statepipe.Request[int] {
			p.Close() // want `Pipelines\.Close is called from a middleware literal`
			return next(r)
		}),
	}
}
