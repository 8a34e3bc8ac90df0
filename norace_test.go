//go:build !race

package statepipe

// raceEnabled reports whether the race detector is on. Tests that measure
// CPU time or count allocations skip under it: its instrumentation
// multiplies every cost, and sync.Pool drops items at random.
const raceEnabled = false
