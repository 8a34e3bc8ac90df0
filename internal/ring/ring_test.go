package ring

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Queue gives out what it was given, in order, however pushes and pops
// interleave and however often it grows.
func FuzzQueueIsFIFO(f *testing.F) {
	f.Add(uint64(1), uint16(300))
	f.Add(uint64(7), uint16(5))
	f.Fuzz(func(t *testing.T, seed uint64, ops uint16) {
		rng := rand.New(rand.NewPCG(seed, seed))
		var q Queue[int]
		var model []int
		next := 0
		for range ops {
			if rng.IntN(3) > 0 {
				q.Push(next)
				model = append(model, next)
				next++
				continue
			}
			got, ok := q.Pop()
			if ok != (len(model) > 0) || ok && got != model[0] {
				t.Fatalf("Pop = %d, %v; want the head of %v", got, ok, model)
			}
			if ok {
				model = model[1:]
			}
			if head, ok := q.Peek(); ok && head != model[0] {
				t.Fatalf("Peek = %d, want %d", head, model[0])
			}
		}
		if q.Len() != len(model) || q.Reset() != len(model) || q.Len() != 0 {
			t.Fatalf("Len or Reset disagree with %d elements", len(model))
		}
	})
}

// Reorder gives out every position once, in order, whatever order they
// are set in, as long as each is set within the window its user bounds.
func FuzzReorderGivesOutInOrder(f *testing.F) {
	f.Add(uint64(1), uint16(500), uint8(16))
	f.Add(uint64(3), uint16(50), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16, window uint8) {
		w := int(window)%64 + 1
		rng := rand.New(rand.NewPCG(seed, ^seed))
		var q Reorder[int]
		var out []int
		next, set := 0, 0 // next position to take out; positions set so far
		pending := []int{}
		for next < int(n) {
			// Set a random position among those not yet set in the window.
			for set < int(n) && set < next+w {
				pending = append(pending, set)
				set++
			}
			if len(pending) > 0 {
				i := rng.IntN(len(pending))
				pos := pending[i]
				pending = slices.Delete(pending, i, i+1)
				q.Set(pos-next, pos)
			}
			for {
				v, ok := q.Next()
				if !ok {
					break
				}
				out = append(out, v)
				next++
			}
		}
		for i, v := range out {
			if v != i {
				t.Fatalf("position %d gave out %d", i, v)
			}
		}
		if q.Len() != 0 {
			t.Fatalf("%d left", q.Len())
		}
	})
}
