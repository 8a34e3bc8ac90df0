package statepipe

import (
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// maxStageIDs bounds the distinct stage functions the engine tells apart
// (discovered stages first, then other functions seen as Next). Functions
// beyond it share the last id, named "(other)", in statistics.
const maxStageIDs = 64

// otherStage is the id shared by stage functions beyond maxStageIDs.
const otherStage = maxStageIDs - 1

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

// stageIndex maps a stage function to a small id, for statistics, cycle
// checks and error messages, without allocating: a func value points to a
// closure whose first word is its code pointer, and every method value of
// one method (r.Next = s.B, wherever it is built) shares that code.
type stageIndex struct {
	discovered int             // names[:discovered] are the stages found by New
	own        map[string]bool // "pkg.Type" of the machine and of the types it embeds

	// table is read on every transition and replaced (copy on write) when
	// a new code pointer is seen, which happens once per function.
	table atomic.Pointer[stageTable]
	mu    sync.Mutex // serialises writers of table
}

type stageTable struct {
	known []codeID
	names []string // by id
}

type codeID struct {
	code uintptr
	id   int
}

// newStageIndex indexes the stages discovered on machine, whose method
// Start the engine calls through start.
func newStageIndex(machine any, discovered []string, start uintptr) *stageIndex {
	ix := &stageIndex{discovered: len(discovered), own: map[string]bool{}}
	ix.addOwn(reflect.TypeOf(machine))
	ix.table.Store(&stageTable{names: discovered, known: []codeID{{start, 0}}})
	return ix
}

// addOwn records t and the types it embeds, whose methods are the
// machine's (promoted), as "pkg.Type".
func (ix *stageIndex) addOwn(t reflect.Type) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	key := t.PkgPath() + "." + baseName(t.Name())
	if t.Name() == "" || ix.own[key] {
		return
	}
	ix.own[key] = true
	if t.Kind() == reflect.Struct {
		for i := range t.NumField() {
			if f := t.Field(i); f.Anonymous {
				ix.addOwn(f.Type)
			}
		}
	}
}

// codeOf returns the code pointer of fn. It does not let fn escape, so a
// method value built only to be passed here stays on the stack.
func codeOf[T any](fn Stage[T]) uintptr {
	return **(**uintptr)(unsafe.Pointer(&fn))
}

// id returns the id of the stage function with the given code pointer.
func (ix *stageIndex) id(code uintptr) int {
	for _, k := range ix.table.Load().known {
		if k.code == code {
			return k.id
		}
	}
	return ix.learn(code)
}

// learn names a code pointer seen for the first time.
func (ix *stageIndex) learn(code uintptr) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.table.Load()
	for _, k := range old.known {
		if k.code == code { // learnt by another worker meanwhile
			return k.id
		}
	}
	// Only a method value of the machine's own type is one of its
	// discovered stages; any other function gets an id of its own, so
	// that two functions never share one (WithDAG would see a cycle).
	name, own := ix.funcName(code)
	names := old.names[:len(old.names):len(old.names)]
	id := -1
	if own {
		id = slices.Index(names[:ix.discovered], name)
	}
	switch {
	case id >= 0:
	case len(names) < otherStage:
		id = len(names)
		names = append(names, uniqueName(names, name))
	default: // out of ids: share the last one
		id = otherStage
		if len(names) == otherStage {
			names = append(names, "(other)")
		}
	}
	known := append(old.known[:len(old.known):len(old.known)], codeID{code, id})
	ix.table.Store(&stageTable{known: known, names: names})
	return id
}

// name returns the name of stage id.
func (ix *stageIndex) name(id int) string { return ix.table.Load().names[id] }

// names returns the names of every id in use.
func (ix *stageIndex) names() []string { return ix.table.Load().names }

// funcName turns the runtime name of a function into a stage name, and
// reports whether it is a method value of the machine's own type (or of a
// type it embeds): "pkg.(*Machine).Validate-fm" is "Validate", the name
// discovery gave it. A method of another type keeps its type,
// "Sub.Validate"; anything else (a closure, a plain function) keeps its
// name after the package path, "Machine.Start.func1".
func (ix *stageIndex) funcName(code uintptr) (name string, own bool) {
	f := runtime.FuncForPC(code)
	if f == nil {
		return "(unknown)", false
	}
	full := f.Name()
	method, isMethodValue := strings.CutSuffix(full, "-fm")
	// The package path ends at the first dot after its last slash.
	slash := strings.LastIndexByte(full, '/') + 1
	dot := strings.IndexByte(full[slash:], '.')
	if dot < 0 {
		return full[slash:], false
	}
	// The runtime escapes dots (and a few other bytes) in the last element
	// of the path as %xx: "example.com/mach%2ev2" for reflect's
	// "example.com/mach.v2".
	pkg, rest := unescapePath(full[:slash+dot]), full[slash+dot+1:]
	if !isMethodValue {
		return rest, false
	}
	rest = rest[:len(rest)-len("-fm")]
	recv, name := rest[:strings.LastIndexByte(rest, '.')+1], method[strings.LastIndexByte(method, '.')+1:]
	typ := baseName(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(recv, "."), "(*"), ")"))
	if ix.own[pkg+"."+typ] {
		return name, true
	}
	return typ + "." + name, false
}

// unescapePath undoes the runtime's %xx escapes in a package path.
func unescapePath(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if v, err := strconv.ParseUint(p[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// uniqueName returns name, or name#2, name#3... if names has it already:
// distinct functions can share a name (instances of a generic type, or
// functions of two packages).
func uniqueName(names []string, name string) string {
	unique := name
	for n := 2; slices.Contains(names, unique); n++ {
		unique = fmt.Sprintf("%s#%d", name, n)
	}
	return unique
}

// baseName strips type arguments: "Machine[int]" and "Machine[...]" are
// "Machine".
func baseName(typ string) string {
	if i := strings.IndexByte(typ, '['); i >= 0 {
		return typ[:i]
	}
	return typ
}
