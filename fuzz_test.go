package statepipe

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fuzzM runs request i according to lat[i]:
//
//	low nibble   Start sleeps that many milliseconds
//	0x10         Start routes to B (unless it fails)
//	0x20, 0x40   B sleeps 1 and 2 more milliseconds (if reached)
//	0xe0..0xef   Start panics
//	0xf0..0xff   Start fails with errStage
//
// Start adds 1<<20 to Data and B adds 1<<21, so the low bits keep the index.
type fuzzM struct {
	lat []byte
	b   Stage[int]
}

const fuzzIndex = 1<<20 - 1

func (m *fuzzM) Start(r Request[int]) Request[int] {
	c := m.lat[r.Data]
	time.Sleep(time.Duration(c&0x0f) * time.Millisecond)
	switch {
	case c >= 0xf0:
		r.Err = errStage
		return r
	case c >= 0xe0:
		panic(c)
	}
	r.Data += 1 << 20
	if c&0x10 != 0 {
		r.Next = m.b
	}
	return r
}

func (m *fuzzM) B(r Request[int]) Request[int] {
	c := m.lat[r.Data&fuzzIndex]
	time.Sleep(time.Duration(c>>5&3) * time.Millisecond)
	r.Data += 1 << 21
	return r
}

func (m *fuzzM) Close() {}

// FuzzOrderedOutput: the input bytes give every request's latency, route
// and fate, the consumer's pace, the group's bound and the worker count.
// An ordered group must release in submission order, every request exactly
// once with its own outcome, and never hold more than its bound admitted
// and not received.
func FuzzOrderedOutput(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0x00, 0x05, 0x03, 0x09, 0x01, 0x0f, 0x02})
	f.Add([]byte{0x03, 0xff, 0xe1, 0x0f, 0x00, 0x1f, 0x00, 0xf3, 0x21, 0x40, 0x7f, 0x10})
	f.Add(bytes.Repeat([]byte{0x0f, 0x00}, 40))
	f.Add(bytes.Repeat([]byte{0x50, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00}, 6))
	f.Add(bytes.Repeat([]byte{0xc5, 0x3f, 0xe0, 0x11, 0xf0, 0x9a}, 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 300 {
			data = data[:300]
		}
		bound, workers := 1, 4
		if len(data) > 0 {
			bound = 1 + int(data[0]%6)
			workers = 1 + int(data[0]>>4)%6
		}
		synctest.Test(t, func(t *testing.T) {
			m := &fuzzM{lat: data}
			m.b = m.B
			p := mustNew[int](t, m, WithWorkers(workers), WithMaxInFlight(bound+3))
			g := p.NewGroup(Ordered(), MaxInFlight(bound))
			var accepted atomic.Int64
			go func() {
				for i := range data {
					if err := g.Submit(context.Background(), i); err != nil {
						t.Errorf("Submit(%d): %v", i, err)
					}
					accepted.Add(1)
				}
				g.Close()
			}()
			received := 0
			for {
				// Every other goroutine is blocked: the counts are exact,
				// and this is the most the group can hold before the next
				// receive.
				synctest.Wait()
				if held := accepted.Load() - int64(received); held > int64(bound) {
					t.Fatalf("%d admitted and not received, bound %d", held, bound)
				}
				var r Request[int]
				select {
				case res, ok := <-g.Out():
					if !ok {
						if received != len(data) {
							t.Fatalf("Out closed after %d of %d results", received, len(data))
						}
						p.Close()
						return
					}
					r = res
				default:
					time.Sleep(time.Millisecond)
					continue
				}
				i := r.Data & fuzzIndex
				if i != received {
					t.Fatalf("result %d is request %d: not in submission order", received, i)
				}
				c := data[i]
				var pe *PanicError
				want := i + 1<<20
				switch {
				case c >= 0xf0:
					want = i
					if !errors.Is(r.Err, errStage) {
						t.Errorf("request %d: Err %v, want the stage's error", i, r.Err)
					}
				case c >= 0xe0:
					want = i
					if !errors.As(r.Err, &pe) || pe.Stage != "Start" || pe.Value != c {
						t.Errorf("request %d: Err %v, want a panic in Start", i, r.Err)
					}
				case r.Err != nil:
					t.Errorf("request %d: unexpected error %v", i, r.Err)
				case c&0x10 != 0:
					want += 1 << 21
				}
				if r.Data != want {
					t.Errorf("request %d: Data %#x, want %#x", i, r.Data, want)
				}
				received++
				// The consumer's pace.
				time.Sleep(time.Duration(c>>6) * time.Millisecond)
			}
		})
	})
}
