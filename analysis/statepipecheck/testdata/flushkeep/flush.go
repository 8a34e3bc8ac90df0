// Package flushkeep has flush functions that keep their batch past the
// call, and ones that only use it during the call.
package flushkeep

import (
	"context"
	"errors"
	"sync"

	"github.com/statepipe/statepipe"
)

type Sink struct {
	last    []statepipe.Request[int]
	first   *statepipe.Request[int]
	data    *int
	values  []statepipe.Request[int]
	ptrs    []*statepipe.Request[int]
	pending chan []statepipe.Request[int]
	later   func()
	sum     int
}

var lastBatch []statepipe.Request[int]

// BatchError keeps the requests it failed.
type BatchError struct{ Items []statepipe.Request[int] }

func (e *BatchError) Error() string { return "batch failed" }

func (s *Sink) keepsField(ctx context.Context, batch []statepipe.Request[int]) error {
	s.last = batch // want `flush keeps its batch past the call \(stored in s\.last\): the batcher reuses it and resumes the requests when flush returns; copy the values you need`
	return nil
}

func (s *Sink) keepsGlobal(ctx context.Context, batch []statepipe.Request[int]) error {
	lastBatch = batch[1:] // want `stored in lastBatch`
	return nil
}

func (s *Sink) keepsAddress(ctx context.Context, batch []statepipe.Request[int]) error {
	for i := range batch {
		p := &batch[i]
		s.first = p                        // want `stored in s\.first`
		s.data = &batch[i].Data            // want `stored in s\.data`
		s.ptrs = append(s.ptrs, &batch[i]) // want `stored in s\.ptrs`
	}
	return nil
}

func (s *Sink) sends(ctx context.Context, batch []statepipe.Request[int]) error {
	s.pending <- batch // want `sent on a channel`
	return nil
}

func (s *Sink) returnsInError(ctx context.Context, batch []statepipe.Request[int]) error {
	return &BatchError{Items: batch} // want `returned`
}

func (s *Sink) keepsClosure(ctx context.Context, batch []statepipe.Request[int]) error {
	s.later = func() { batch[0].Data = 1 } // want `stored in s\.later`
	return nil
}

func (s *Sink) unjoinedGoroutine(ctx context.Context, batch []statepipe.Request[int]) error {
	go func() { // want `used by a goroutine that flush does not wait for`
		for i := range batch {
			batch[i].Data++
		}
	}()
	return nil
}

// The near misses: all of these are fine.

func (s *Sink) setsInPlace(ctx context.Context, batch []statepipe.Request[int]) error {
	for i := range batch {
		batch[i].Data *= 2
		if batch[i].Data < 0 {
			batch[i].Err = errors.New("negative")
		}
	}
	return nil
}

func (s *Sink) copiesValues(ctx context.Context, batch []statepipe.Request[int]) error {
	s.values = append(s.values[:0], batch...) // copies the elements
	for _, r := range batch {
		s.sum += r.Data // r is a copy
	}
	local := batch[:len(batch)/2]
	local[0].Data = 0
	return nil
}

func (s *Sink) joinedGoroutines(ctx context.Context, batch []statepipe.Request[int]) error {
	var wg sync.WaitGroup
	half := len(batch) / 2
	for _, part := range [][]statepipe.Request[int]{batch[:half], batch[half:]} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range part {
				part[i].Data++
			}
		}()
	}
	wg.Wait()
	return nil
}

func NewSinks() []*statepipe.Batcher[int] {
	s := &Sink{}
	return []*statepipe.Batcher[int]{
		statepipe.NewBatcher(s.keepsField),
		statepipe.NewBatcher(s.keepsGlobal),
		statepipe.NewBatcher(s.keepsAddress),
		statepipe.NewBatcher(s.sends),
		statepipe.NewBatcher(s.returnsInError),
		statepipe.NewBatcher(s.keepsClosure),
		statepipe.NewBatcher(s.unjoinedGoroutine),
		statepipe.NewBatcher(s.setsInPlace),
		statepipe.NewBatcher(s.copiesValues),
		statepipe.NewBatcher(s.joinedGoroutines),
		statepipe.NewBatcher(func(ctx context.Context, batch []statepipe.Request[int]) error {
			s.last = batch // want `stored in s\.last`
			return nil
		}),
	}
}

// notAFlush has the same shape but is never given to NewBatcher.
func (s *Sink) notAFlush(ctx context.Context, batch []statepipe.Request[int]) error {
	s.last = batch
	return nil
}
