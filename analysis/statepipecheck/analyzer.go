package statepipecheck

import (
	"go/ast"
	"go/types"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"
)

// Analyzer reports the statepipe pitfalls described in the package doc.
var Analyzer = &analysis.Analyzer{
	Name:     "statepipe",
	Doc:      doc,
	URL:      "https://pkg.go.dev/github.com/statepipe/statepipe/analysis/statepipecheck",
	Requires: []*analysis.Analyzer{inspect.Analyzer},
	Run:      run,
}

const doc = `report statepipe stage pitfalls

Checks code that uses github.com/statepipe/statepipe for mistakes the compiler
cannot see: a method value built per transition (r.Next = m.B), a request used
after Batcher.Add or an Add whose result is not returned, Pipelines.Close
reachable from a stage or a flush, Submit in a loop before reading Out in the
same goroutine, exported methods that look like stages but are not (or are
but are never named as a Next), and a flush that keeps its batch.`

// Diagnostic categories, one per check.
const (
	catNextAlloc  = "nextalloc"
	catBatchAdd   = "batchadd"
	catCloseStage = "closeinstage"
	catSubmitLoop = "submitloop"
	catStageSig   = "stagesig"
	catFlushKeep  = "flushkeep"
)

// checker holds what every check of one package shares.
type checker struct {
	pass  *analysis.Pass
	insp  *inspector.Inspector
	decls map[*types.Func]*ast.FuncDecl // functions and methods declared in the package
}

func run(pass *analysis.Pass) (any, error) {
	if !importsCore(pass.Pkg) {
		return nil, nil
	}
	c := &checker{
		pass:  pass,
		insp:  pass.ResultOf[inspect.Analyzer].(*inspector.Inspector),
		decls: map[*types.Func]*ast.FuncDecl{},
	}
	for n := range c.insp.PreorderSeq((*ast.FuncDecl)(nil)) {
		d := n.(*ast.FuncDecl)
		if f, ok := pass.TypesInfo.Defs[d.Name].(*types.Func); ok {
			c.decls[f] = d
		}
	}
	c.nextAlloc()
	c.batchAdd()
	c.closeInStage()
	c.submitLoop()
	c.stageSignatures()
	c.flushKeep()
	return nil, nil
}

// importsCore reports whether pkg is the core or imports it directly:
// no other package can name its types.
func importsCore(pkg *types.Package) bool { return corePackage(pkg) != nil }

// declOf returns the declaration of f in this package, if it has one.
func (c *checker) declOf(f *types.Func) *ast.FuncDecl {
	if f == nil {
		return nil
	}
	return c.decls[f.Origin()]
}

// funcNode returns the function (FuncDecl or FuncLit) that e names in
// this package: a literal, a function, or a method value.
func (c *checker) funcNode(e ast.Expr) ast.Node {
	switch e := ast.Unparen(e).(type) {
	case *ast.FuncLit:
		return e
	case *ast.Ident:
		if f, ok := c.pass.TypesInfo.Uses[e].(*types.Func); ok {
			if d := c.declOf(f); d != nil {
				return d
			}
		}
	case *ast.SelectorExpr:
		if s, ok := c.pass.TypesInfo.Selections[e]; ok {
			if f, ok := s.Obj().(*types.Func); ok {
				if d := c.declOf(f); d != nil {
					return d
				}
			}
		} else if f, ok := c.pass.TypesInfo.Uses[e.Sel].(*types.Func); ok {
			if d := c.declOf(f); d != nil {
				return d
			}
		}
	}
	return nil
}

// enclosingFunc returns the innermost FuncDecl or FuncLit around cur.
func enclosingFunc(cur inspector.Cursor) ast.Node {
	for f := range cur.Enclosing((*ast.FuncDecl)(nil), (*ast.FuncLit)(nil)) {
		return f.Node()
	}
	return nil
}

// funcName names a function node for a message.
func funcName(n ast.Node) string {
	if d, ok := n.(*ast.FuncDecl); ok {
		return d.Name.Name
	}
	return "a function literal"
}

// flushFuncs returns the flush functions given to statepipe.NewBatcher
// in this package that are written here.
func (c *checker) flushFuncs() []ast.Node {
	var out []ast.Node
	seen := map[ast.Node]bool{}
	for n := range c.insp.PreorderSeq((*ast.CallExpr)(nil)) {
		call := n.(*ast.CallExpr)
		if len(call.Args) == 0 || !coreFunc(c.pass.TypesInfo, call, "NewBatcher") {
			continue
		}
		if f := c.funcNode(call.Args[0]); f != nil && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}
