package statepipe

import (
	"reflect"
	"strings"
)

// machineBatcher is what New learns of a Batcher it finds in the machine.
type machineBatcher struct {
	name                 string
	maxItems, maxFlushes int
	problems             []string
}

// discoverBatchers returns the Batchers of the machine sm: those it holds,
// however deep, in its fields (exported or not; through pointers, embedded
// and nested structs, arrays, slices, maps and interfaces), each once. New
// uses them to leave room in the default bound for every batch a batcher
// may flush at once, and to report their configuration errors.
//
// A Batcher reached through an unexported field cannot be used through
// package reflect, only read, so its configuration is read field by field;
// TestNewFindsTheMachinesBatchers guards the names read here.
func discoverBatchers[T any](sm any) []machineBatcher {
	want := reflect.TypeFor[Batcher[T]]()
	var found []machineBatcher
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value, depth int)
	walk = func(v reflect.Value, depth int) {
		if depth > 8 || !v.IsValid() {
			return
		}
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			if v.Type().Elem() == want {
				found = append(found, readBatcher(v.Elem()))
				return
			}
			walk(v.Elem(), depth+1)
		case reflect.Interface:
			walk(v.Elem(), depth+1)
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i), depth+1)
			}
		case reflect.Array, reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i), depth+1)
			}
		case reflect.Map:
			for it := v.MapRange(); it.Next(); {
				walk(it.Value(), depth+1)
			}
		}
	}
	walk(reflect.ValueOf(sm), 0)
	return found
}

// readBatcher reads the configuration of the Batcher b (a Batcher[T]
// struct value, possibly reached through unexported fields).
func readBatcher(b reflect.Value) machineBatcher {
	cfg := b.FieldByName("cfg")
	mb := machineBatcher{
		name:       cfg.FieldByName("name").String(),
		maxItems:   int(cfg.FieldByName("maxItems").Int()),
		maxFlushes: int(cfg.FieldByName("maxFlushes").Int()),
	}
	problems := cfg.FieldByName("problems")
	for i := range problems.Len() {
		mb.problems = append(mb.problems, problems.Index(i).String())
	}
	return mb
}

// checkBatchers reports the problems of the machine's batchers, and of an
// explicit bound too small for one of them, into c; with no explicit
// bound it leaves room in the default for every batch they may flush at
// once.
func (c *config) checkBatchers(batchers []machineBatcher) {
	room := 0
	for _, b := range batchers {
		if len(b.problems) > 0 {
			c.problems = append(c.problems, "batcher "+quote(b.name)+": "+strings.Join(b.problems, ", "))
			continue
		}
		room += b.maxItems * b.maxFlushes
		if c.maxInFlight != 0 && c.maxInFlight < b.maxItems*b.maxFlushes {
			c.problems = append(c.problems, boundTooSmall(batchConfig{name: b.name, maxItems: b.maxItems, maxFlushes: b.maxFlushes}, c.maxInFlight)+
				"; raise WithMaxInFlight or lower MaxItems or MaxFlushes")
		}
	}
	if c.maxInFlight == 0 {
		c.maxInFlight = min(defaultMaxInFlight+room, maxInFlightLimit)
	}
}

func quote(s string) string { return `"` + s + `"` }
