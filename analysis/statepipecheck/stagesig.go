package statepipecheck

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
)

// stageSignatures checks the exported methods of each state machine
// type of the package, as the engine discovers stages (stages.go): every
// exported method in the method set of the machine (promoted ones
// included) with exactly func(Request[T]) Request[T] is a stage, Start
// first. It reports an exported method that takes or returns a Request
// another way (it is not a stage), and a stage that no code of the
// package names as a value while the machine's other stages are named:
// probably a helper that became a stage.
func (c *checker) stageSignatures() {
	named := c.namedMethods()
	reported := map[*types.Func]bool{}
	byValue := c.givenByValue()
	for _, m := range machines(c.pass.Pkg) {
		var unnamed []*types.Func
		anyNamed := false
		// The engine looks at the method set of the value given to New.
		var valueSet *types.MethodSet
		if byValue[m.named.Obj()] {
			valueSet = types.NewMethodSet(m.named)
		}
		for sel := range m.mset.Methods() {
			f, ok := sel.Obj().(*types.Func)
			if !ok || !f.Exported() || f.Name() == "Start" || f.Name() == "Close" {
				continue
			}
			f = f.Origin()
			if valueSet != nil && valueSet.Lookup(f.Pkg(), f.Name()) == nil {
				if m.isStageOf(f) && c.declOf(f) != nil && !reported[f] {
					reported[f] = true
					c.reportMethod(f, "%s.%s has a pointer receiver, but statepipe.New is given a %s value: the engine does not run it as a stage; pass a *%s to New",
						recvName(f), f.Name(), m.named.Obj().Name(), m.named.Obj().Name())
				}
				continue
			}
			if !m.isStageOf(f) {
				if sig := f.Type().(*types.Signature); (holdsRequest(sig.Params()) || holdsRequest(sig.Results())) && c.declOf(f) != nil && !reported[f] {
					reported[f] = true
					elem := types.TypeString(m.elem, types.RelativeTo(c.pass.Pkg))
					c.reportMethod(f, "%s.%s is not a stage of %s: a stage is exactly func(statepipe.Request[%s]) statepipe.Request[%s]; fix the signature, or unexport it if it is a helper",
						recvName(f), f.Name(), m.named.Obj().Name(), elem, elem)
				}
				continue
			}
			if named[f] {
				anyNamed = true
			} else if c.declOf(f) != nil {
				unnamed = append(unnamed, f)
			}
		}
		if !anyNamed {
			continue // routing this package cannot see: say nothing
		}
		for _, f := range unnamed {
			if reported[f] {
				continue
			}
			reported[f] = true
			c.reportMethod(f, "%s.%s has the Stage signature, so the engine runs it as a stage of %s, but nothing names it as a Next: unexport it if it is a helper, or route to it",
				recvName(f), f.Name(), m.named.Obj().Name())
		}
	}
}

// givenByValue returns the types of the package that statepipe.New is
// given as values (N, not *N) and never as pointers.
func (c *checker) givenByValue() map[*types.TypeName]bool {
	value, pointer := map[*types.TypeName]bool{}, map[*types.TypeName]bool{}
	for n := range c.insp.PreorderSeq((*ast.CallExpr)(nil)) {
		call := n.(*ast.CallExpr)
		if len(call.Args) == 0 || !coreFunc(c.pass.TypesInfo, call, "New") {
			continue
		}
		t := types.Unalias(c.pass.TypesInfo.TypeOf(call.Args[0]))
		if named := receiverNamed(t); named != nil {
			if _, ok := t.(*types.Pointer); ok {
				pointer[named.Origin().Obj()] = true
			} else {
				value[named.Origin().Obj()] = true
			}
		}
	}
	for tn := range pointer {
		delete(value, tn)
	}
	return value
}

// namedMethods returns the methods that the package uses as values
// (m.B or (*M).B, not m.B(r)): the stages it can route to.
func (c *checker) namedMethods() map[*types.Func]bool {
	info := c.pass.TypesInfo
	called := map[*ast.SelectorExpr]bool{}
	for n := range c.insp.PreorderSeq((*ast.CallExpr)(nil)) {
		if sel, ok := ast.Unparen(n.(*ast.CallExpr).Fun).(*ast.SelectorExpr); ok {
			called[sel] = true
		}
	}
	named := map[*types.Func]bool{}
	for sel, s := range info.Selections {
		if called[sel] || (s.Kind() != types.MethodVal && s.Kind() != types.MethodExpr) {
			continue
		}
		if f, ok := s.Obj().(*types.Func); ok {
			named[f.Origin()] = true
		}
	}
	return named
}

// reportMethod reports at the name of method f.
func (c *checker) reportMethod(f *types.Func, format string, args ...any) {
	c.pass.Report(analysis.Diagnostic{
		Pos:      f.Pos(),
		End:      f.Pos() + token.Pos(len(f.Name())),
		Category: catStageSig,
		Message:  fmt.Sprintf(format, args...),
	})
}

// recvName returns the name of the type that declares method f.
func recvName(f *types.Func) string {
	if n := receiverNamed(f.Type().(*types.Signature).Recv().Type()); n != nil {
		return n.Obj().Name()
	}
	return "?"
}
