package statepipecheck

import (
	"fmt"
	"go/ast"
	"go/types"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/types/typeutil"
)

// callSite is one call a function makes that runs before it returns.
type callSite struct {
	call *ast.CallExpr
	to   ast.Node // the FuncDecl or FuncLit called, when it is in this package
	stop bool     // a call of Pipelines.Close
}

// closeInStage reports Pipelines.Close reachable from a stage, a flush,
// an observer or a middleware through direct calls and calls to functions, methods and immediately
// called literals of this package. The engine refuses such a Close at
// run time (ErrCloseInStage): it would wait for the stage that calls it.
func (c *checker) closeInStage() {
	calls := map[ast.Node][]callSite{}
	sites := func(fn ast.Node) []callSite {
		if s, ok := calls[fn]; ok {
			return s
		}
		s := c.callSites(fn)
		calls[fn] = s
		return s
	}
	kinds := map[ast.Node]string{} // what the engine runs: stage, flush, observer, middleware
	var roots []ast.Node
	add := func(n ast.Node, kind string) {
		if _, seen := kinds[n]; !seen && funcBody(n) != nil {
			kinds[n] = kind
			roots = append(roots, n)
		}
	}
	for n := range c.insp.PreorderSeq((*ast.FuncDecl)(nil), (*ast.FuncLit)(nil)) {
		if _, ok := stageSig(funcSig(c.pass.TypesInfo, n)); ok {
			add(n, "stage")
		}
	}
	for _, n := range c.flushFuncs() {
		add(n, "flush")
	}
	c.engineCallbacks(add)
	reported := map[*ast.CallExpr]bool{}
	for _, root := range roots {
		// Breadth first, so the path named is a shortest one.
		type step struct {
			fn    ast.Node
			first *ast.CallExpr // the call in root that leads here
			path  []string
		}
		seen := map[ast.Node]bool{root: true}
		queue := []step{{fn: root}}
		for len(queue) > 0 {
			s := queue[0]
			queue = queue[1:]
			done := false
			for _, cs := range sites(s.fn) {
				first := s.first
				if first == nil {
					first = cs.call
				}
				if cs.stop {
					if !reported[first] {
						reported[first] = true
						c.reportCloseInStage(root, kinds[root], first, s.path)
					}
					done = true
					break
				}
				if cs.to != nil && !seen[cs.to] {
					seen[cs.to] = true
					queue = append(queue, step{cs.to, first, append(s.path[:len(s.path):len(s.path)], funcName(cs.to))})
				}
			}
			if done {
				break
			}
		}
	}
}

func (c *checker) reportCloseInStage(root ast.Node, what string, at *ast.CallExpr, path []string) {
	if _, ok := root.(*ast.FuncLit); ok {
		article := "a "
		if strings.ContainsRune("aeiou", rune(what[0])) {
			article = "an "
		}
		what = article + what + " literal"
	} else {
		what += " " + funcName(root)
	}
	via := ""
	if len(path) > 0 {
		via = " (through " + strings.Join(path, ", ") + ")"
	}
	c.pass.Report(analysis.Diagnostic{
		Pos:      at.Pos(),
		End:      at.End(),
		Category: catCloseStage,
		Message: fmt.Sprintf("Pipelines.Close is called from %s%s: there it returns ErrCloseInStage and closes nothing; signal the code that owns the Pipelines (cancel a context, close a channel) and close it there",
			what, via),
	})
}

// engineCallbacks calls add with the other functions the engine runs on
// its own goroutines, where Close is refused too: observers (methods
// Observe and FlushStarting of types that implement statepipe.Observer or
// FlushObserver, functions made into an ObserverFunc) and middleware
// given to WithMiddleware.
func (c *checker) engineCallbacks(add func(ast.Node, string)) {
	info := c.pass.TypesInfo
	for n := range c.insp.PreorderSeq((*ast.CallExpr)(nil)) {
		call := n.(*ast.CallExpr)
		switch {
		case coreFunc(info, call, "WithMiddleware"):
			for _, a := range call.Args {
				if f := c.funcNode(a); f != nil {
					add(f, "middleware")
				}
			}
		case len(call.Args) == 1 && info.Types[call.Fun].IsType():
			if _, ok := coreNamed(info.TypeOf(call.Fun), "ObserverFunc"); ok {
				if f := c.funcNode(call.Args[0]); f != nil {
					add(f, "observer")
				}
			}
		}
	}
	core := corePackage(c.pass.Pkg)
	if core == nil {
		return
	}
	for _, pair := range [][2]string{{"Observer", "Observe"}, {"FlushObserver", "FlushStarting"}} {
		obj, ok := core.Scope().Lookup(pair[0]).(*types.TypeName)
		if !ok {
			continue
		}
		iface, ok := obj.Type().Underlying().(*types.Interface)
		if !ok {
			continue
		}
		for f, d := range c.decls {
			recv := f.Type().(*types.Signature).Recv()
			if recv == nil || f.Name() != pair[1] {
				continue
			}
			if types.Implements(recv.Type(), iface) || types.Implements(types.NewPointer(recv.Type()), iface) {
				add(d, "observer")
			}
		}
	}
}

// corePackage returns statepipe as pkg sees it.
func corePackage(pkg *types.Package) *types.Package {
	if pkg.Path() == corePath {
		return pkg
	}
	for _, imp := range pkg.Imports() {
		if imp.Path() == corePath {
			return imp
		}
	}
	return nil
}

// callSites returns the calls fn makes before it returns: not those in
// go statements or in literals it does not call.
func (c *checker) callSites(fn ast.Node) []callSite {
	info := c.pass.TypesInfo
	var out []callSite
	body := funcBody(fn)
	if body == nil {
		return nil
	}
	inspectShallow(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			return false // runs beside fn, not inside it
		case *ast.CallExpr:
			if coreMethod(info, n, "Pipelines", "Close") {
				out = append(out, callSite{call: n, stop: true})
				return true
			}
			if lit, ok := ast.Unparen(n.Fun).(*ast.FuncLit); ok {
				out = append(out, callSite{call: n, to: lit})
				return true
			}
			if f := typeutil.StaticCallee(info, n); f != nil {
				if d := c.declOf(f); d != nil {
					out = append(out, callSite{call: n, to: d})
				}
			}
		}
		return true
	})
	return out
}
