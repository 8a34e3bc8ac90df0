// Package dotted holds a state machine in a package whose import path has
// a dot in its last element, which the runtime escapes in symbol names
// ("dotted%2ev2"): the engine must still recognise its stages.
package dotted

import "github.com/statepipe/statepipe"

// Machine routes Start to Check through a method value built in the stage.
type Machine struct{}

func (m *Machine) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Data++
	r.Next = m.Check
	return r
}

func (m *Machine) Check(r statepipe.Request[int]) statepipe.Request[int] {
	r.Data += 10
	return r
}

func (m *Machine) Close() {}
