package statepipecheck

import (
	"go/ast"
	"go/types"

	"golang.org/x/tools/go/types/typeutil"
)

// corePath is the import path of the package whose pitfalls are checked.
// Everything below recognises its names by type, never by spelling alone.
const corePath = "github.com/statepipe/statepipe"

// coreNamed reports whether t is the core's generic type name (any
// instantiation), and returns its type argument.
func coreNamed(t types.Type, name string) (arg types.Type, ok bool) {
	n, isNamed := types.Unalias(t).(*types.Named)
	if !isNamed {
		return nil, false
	}
	obj := n.Origin().Obj()
	if obj.Pkg() == nil || obj.Pkg().Path() != corePath || obj.Name() != name {
		return nil, false
	}
	if args := n.TypeArgs(); args.Len() == 1 {
		return args.At(0), true
	}
	return nil, true
}

// requestArg returns T when t is statepipe.Request[T].
func requestArg(t types.Type) (types.Type, bool) { return coreNamed(t, "Request") }

// corePointer returns T when t is *statepipe.name[T].
func corePointer(t types.Type, name string) (types.Type, bool) {
	p, ok := types.Unalias(t).(*types.Pointer)
	if !ok {
		return nil, false
	}
	return coreNamed(p.Elem(), name)
}

// stageSig returns T when sig is func(statepipe.Request[T]) statepipe.Request[T],
// the Stage signature the engine discovers stages by (receiver aside).
func stageSig(sig *types.Signature) (types.Type, bool) {
	if sig == nil || sig.Variadic() || sig.Params().Len() != 1 || sig.Results().Len() != 1 {
		return nil, false
	}
	in, ok1 := requestArg(sig.Params().At(0).Type())
	out, ok2 := requestArg(sig.Results().At(0).Type())
	if !ok1 || !ok2 || !types.Identical(in, out) {
		return nil, false
	}
	return in, true
}

// coreMethod reports whether call calls method name of the core type
// recv (through a pointer receiver, as all of them are).
func coreMethod(info *types.Info, call *ast.CallExpr, recv, name string) bool {
	f, ok := typeutil.Callee(info, call).(*types.Func)
	if !ok || f.Name() != name {
		return false
	}
	sig := f.Type().(*types.Signature)
	if sig.Recv() == nil {
		return false
	}
	_, ok = corePointer(sig.Recv().Type(), recv)
	return ok
}

// coreFunc reports whether call calls the core's package-level func name.
func coreFunc(info *types.Info, call *ast.CallExpr, name string) bool {
	f, ok := typeutil.Callee(info, call).(*types.Func)
	return ok && f.Name() == name && f.Pkg() != nil && f.Pkg().Path() == corePath &&
		f.Type().(*types.Signature).Recv() == nil
}

// recvOf returns the receiver expression of a method call x.M(...).
func recvOf(call *ast.CallExpr) ast.Expr {
	if sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr); ok {
		return sel.X
	}
	return nil
}

// methodValue returns the method that e, a selector x.M not called,
// makes a method value of.
func methodValue(info *types.Info, e ast.Expr) (*ast.SelectorExpr, *types.Func) {
	sel, ok := ast.Unparen(e).(*ast.SelectorExpr)
	if !ok {
		return nil, nil
	}
	s, ok := info.Selections[sel]
	if !ok || s.Kind() != types.MethodVal {
		return nil, nil
	}
	f, _ := s.Obj().(*types.Func)
	return sel, f
}

// machine is a type of this package that is a statepipe.StateMachine[T]:
// the method set of *N has Start with the Stage signature and Close().
type machine struct {
	named *types.Named
	elem  types.Type // T
	mset  *types.MethodSet
}

// machines returns the state machine types declared in pkg.
func machines(pkg *types.Package) []*machine {
	var ms []*machine
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		tn, ok := scope.Lookup(name).(*types.TypeName)
		if !ok || tn.IsAlias() {
			continue
		}
		n, ok := tn.Type().(*types.Named)
		if !ok || types.IsInterface(n) {
			continue
		}
		if m := asMachine(n); m != nil {
			ms = append(ms, m)
		}
	}
	return ms
}

func asMachine(n *types.Named) *machine {
	mset := types.NewMethodSet(types.NewPointer(n))
	start, closer := mset.Lookup(n.Obj().Pkg(), "Start"), mset.Lookup(n.Obj().Pkg(), "Close")
	if start == nil || closer == nil {
		return nil
	}
	elem, ok := stageSig(start.Type().(*types.Signature))
	if !ok {
		return nil
	}
	cs := closer.Type().(*types.Signature)
	if cs.Params().Len() != 0 || cs.Results().Len() != 0 {
		return nil
	}
	return &machine{named: n, elem: elem, mset: mset}
}

// isStageOf reports whether f is one of m's stages as the engine finds
// them: an exported method of the method set with the Stage signature
// for m's T (Start included).
func (m *machine) isStageOf(f *types.Func) bool {
	if !f.Exported() {
		return false
	}
	elem, ok := stageSig(f.Type().(*types.Signature))
	return ok && sameElem(elem, m.elem)
}

// sameElem compares the T of two stages. Each method of a generic type
// declares its own receiver type parameters, so there T is compared by
// position.
func sameElem(a, b types.Type) bool {
	if pa, ok := a.(*types.TypeParam); ok {
		pb, ok := b.(*types.TypeParam)
		return ok && pa.Index() == pb.Index()
	}
	return types.Identical(a, b)
}

// funcSig returns the signature of a FuncDecl or FuncLit.
func funcSig(info *types.Info, n ast.Node) *types.Signature {
	switch n := n.(type) {
	case *ast.FuncDecl:
		if f, ok := info.Defs[n.Name].(*types.Func); ok {
			return f.Type().(*types.Signature)
		}
	case *ast.FuncLit:
		sig, _ := info.TypeOf(n).(*types.Signature)
		return sig
	}
	return nil
}

// funcBody returns the body of a FuncDecl or FuncLit.
func funcBody(n ast.Node) *ast.BlockStmt {
	switch n := n.(type) {
	case *ast.FuncDecl:
		return n.Body
	case *ast.FuncLit:
		return n.Body
	}
	return nil
}

// hasRequestParam reports whether sig takes a Request[T] or *Request[T]:
// the functions that run once per request.
func hasRequestParam(sig *types.Signature) bool { return holdsRequest(sig.Params()) }

// holdsRequest reports whether a tuple has a Request or *Request of any T.
func holdsRequest(tup *types.Tuple) bool {
	for v := range tup.Variables() {
		t := v.Type()
		if p, ok := types.Unalias(t).(*types.Pointer); ok {
			t = p.Elem()
		}
		if _, ok := requestArg(t); ok {
			return true
		}
	}
	return false
}

// inspectShallow walks n without entering function literals, which run
// when called, not where they are written.
func inspectShallow(n ast.Node, f func(ast.Node) bool) {
	ast.Inspect(n, func(c ast.Node) bool {
		if _, ok := c.(*ast.FuncLit); ok && c != n {
			return false
		}
		return f(c)
	})
}
