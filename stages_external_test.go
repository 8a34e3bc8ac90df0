package statepipe_test

import (
	"context"
	"testing"

	"github.com/statepipe/statepipe"
	dotted "github.com/statepipe/statepipe/internal/dotted.v2"
)

// The runtime escapes a dot in the last element of a package path
// ("dotted%2ev2") in symbol names, so the stages of a machine in such a
// package (gopkg.in/x.v3, say) were once not recognised as its own.
func TestStagesOfAMachineInADottedPackage(t *testing.T) {
	p, err := statepipe.New[int](&dotted.Machine{}, statepipe.WithDAG())
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Do(context.Background(), 0)[0]; r.Err != nil || r.Data != 11 {
		t.Errorf("result %+v, want 11", r)
	}
	p.Close()
	for _, s := range p.Stats().Stages {
		if s.Runs != 1 {
			t.Errorf("stage %q ran %d times, want once: the machine's Check is one of its stages", s.Name, s.Runs)
		}
	}
	if got := len(p.Stats().Stages); got != 2 {
		t.Errorf("%d stages in Stats, want Start and Check", got)
	}
}
