package statepipecheck

import (
	"fmt"
	"go/ast"
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

// closeInStage reports Pipelines.Close reachable from a stage or a flush
// through direct calls and calls to functions, methods and immediately
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
	var roots []ast.Node
	for n := range c.insp.PreorderSeq((*ast.FuncDecl)(nil), (*ast.FuncLit)(nil)) {
		if _, ok := stageSig(funcSig(c.pass.TypesInfo, n)); ok && funcBody(n) != nil {
			roots = append(roots, n)
		}
	}
	roots = append(roots, c.flushFuncs()...)
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
						c.reportCloseInStage(root, first, s.path)
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

func (c *checker) reportCloseInStage(root ast.Node, at *ast.CallExpr, path []string) {
	what := "stage"
	if _, ok := stageSig(funcSig(c.pass.TypesInfo, root)); !ok {
		what = "flush"
	}
	if _, ok := root.(*ast.FuncLit); ok {
		what = "a " + what + " literal"
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
