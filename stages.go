package statepipe

import (
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// discoverStages returns the names of sm's exported methods that have the
// Stage signature: Start first, then the rest in name order (the order
// package reflect lists methods in).
func discoverStages[T any](sm StateMachine[T]) []string {
	want := reflect.TypeFor[Stage[T]]()
	t := reflect.TypeOf(sm)
	names := []string{"Start"}
	for i := range t.NumMethod() {
		m := t.Method(i)
		// m.Type includes the receiver; compare the signature without it.
		if m.Name == "Start" || m.Type.NumIn() != 2 || m.Type.NumOut() != 1 ||
			m.Type.In(1) != want.In(0) || m.Type.Out(0) != want.Out(0) {
			continue
		}
		names = append(names, m.Name)
	}
	return names
}

// codeOf returns the code pointer of fn, as package reflect reports it.
// Every method value of one method has the same code wherever and on
// whichever receiver it is built, and distinct functions never share code,
// so it identifies a stage. (Closures made from one function literal share
// their code too: to the engine they are one stage.) A func value is
// pointer-shaped, so this allocates nothing.
func codeOf[T any](fn Stage[T]) uintptr { return reflect.ValueOf(fn).Pointer() }

// stageIndex gives every function run as a stage a dense id, for
// statistics, cycle checks and names: the stages discovered by New first,
// then any other function the first time it is seen as Next. Ids are never
// reused and there is no limit on their number.
type stageIndex struct {
	discovered int

	// wrappers maps the runtime name of the method-value wrapper of each
	// discovered stage ("pkg.(*M).Validate-fm", and those of the types
	// whose methods M promotes) to its id. The names are compared whole,
	// both sides coming from the runtime's own symbol table, so package
	// path escapes and type arguments need no parsing.
	wrappers map[string]int

	// table is read on every transition and replaced (copy on write) when
	// a function is seen for the first time.
	table atomic.Pointer[stageTable]
	mu    sync.Mutex // serialises writers of table
}

type stageTable struct {
	known  []codeID        // searched linearly while small
	byCode map[uintptr]int // and through a map beyond that
	names  []string        // by id
}

type codeID struct {
	code uintptr
	id   int
}

// linearStages is how many functions a table searches linearly before it
// builds a map: a scan of a few words beats hashing.
const linearStages = 16

// newStageIndex indexes the stages discovered on machine. start is the
// code of the value the engine runs as the first stage.
func newStageIndex(machine any, discovered []string, start uintptr) *stageIndex {
	ix := &stageIndex{discovered: len(discovered), wrappers: map[string]int{}}
	t := reflect.TypeOf(machine)
	for id, name := range discovered {
		for _, w := range methodValueNames(t, name) {
			ix.wrappers[w] = id
		}
	}
	ix.table.Store(&stageTable{names: discovered, known: []codeID{{start, 0}}})
	return ix
}

// methodValueNames returns the runtime names that a method value of the
// method called name may have when built on a value of type t: the
// wrapper of t's own method, of its value or pointer form, and of every
// embedded type that provides it (a promoted method's value is built from
// the embedded type's method).
func methodValueNames(t reflect.Type, name string) []string {
	var names []string
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		if seen[t] {
			return
		}
		seen[t] = true
		for _, typ := range []reflect.Type{t, reflect.PointerTo(t)} {
			if m, ok := typ.MethodByName(name); ok {
				if f := runtime.FuncForPC(m.Func.Pointer()); f != nil {
					names = append(names, f.Name()+"-fm")
				}
			}
		}
		if t.Kind() == reflect.Pointer {
			walk(t.Elem())
			return
		}
		if t.Kind() == reflect.Struct {
			for i := range t.NumField() {
				if f := t.Field(i); f.Anonymous {
					walk(f.Type)
				}
			}
		}
	}
	walk(t)
	return names
}

// id returns the id of the stage function with the given code.
func (ix *stageIndex) id(code uintptr) int {
	t := ix.table.Load()
	if t.byCode != nil {
		if id, ok := t.byCode[code]; ok {
			return id
		}
	} else {
		for _, k := range t.known {
			if k.code == code {
				return k.id
			}
		}
	}
	return ix.learn(code)
}

// learn gives a function seen for the first time its id.
func (ix *stageIndex) learn(code uintptr) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.table.Load()
	for _, k := range old.known {
		if k.code == code { // learnt by another worker meanwhile
			return k.id
		}
	}
	full := "(unknown)"
	if f := runtime.FuncForPC(code); f != nil {
		full = f.Name()
	}
	names := old.names[:len(old.names):len(old.names)]
	id, own := ix.wrappers[full]
	if !own {
		id = len(names)
		names = append(names, uniqueName(names, displayName(full)))
	}
	t := &stageTable{known: append(old.known[:len(old.known):len(old.known)], codeID{code, id}), names: names}
	if len(t.known) > linearStages {
		t.byCode = make(map[uintptr]int, len(t.known))
		for _, k := range t.known {
			t.byCode[k.code] = k.id
		}
	}
	ix.table.Store(t)
	return id
}

// name returns the name of stage id.
func (ix *stageIndex) name(id int) string { return ix.table.Load().names[id] }

// names returns the names of every id in use.
func (ix *stageIndex) names() []string { return ix.table.Load().names }

// displayName shortens the runtime name of a function that is not one of
// the machine's stages, for statistics only: "example.com/m.(*Sub).Check-fm"
// is shown as "Sub.Check", "example.com/m.Gen[...].Check-fm" as "Gen.Check",
// a closure as "Machine.Start.func1". Identity never rests on it.
func displayName(full string) string {
	s := full[strings.LastIndexByte(full, '/')+1:]
	// The package name ends at the first dot: the runtime escapes dots
	// in the last element of a package path.
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSuffix(s, "-fm")
	return strings.NewReplacer("(*", "", ")", "", "[...]", "").Replace(s)
}

// uniqueName returns name, or name#2, name#3... if names has it already:
// distinct functions can share a display name (instances of a generic
// type, or functions of two packages).
func uniqueName(names []string, name string) string {
	unique := name
	for n := 2; slices.Contains(names, unique); n++ {
		unique = fmt.Sprintf("%s#%d", name, n)
	}
	return unique
}
