package statepipecheck

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/ast/inspector"
)

// batchAdd reports a Batcher.Add whose result is not what the stage
// returns, and the request given to Add used after it: from Add on, the
// batcher owns the request; what the stage returns is the placeholder
// that parks it.
func (c *checker) batchAdd() {
	info := c.pass.TypesInfo
	for cur := range c.insp.Root().Preorder((*ast.CallExpr)(nil)) {
		call := cur.Node().(*ast.CallExpr)
		if len(call.Args) != 1 || !coreMethod(info, call, "Batcher", "Add") {
			continue
		}
		fn := enclosingFunc(cur)
		if fn == nil || !c.inRequestCode(cur) {
			continue // Add outside a stage fails at once (ErrNotRunning): tests do it on purpose
		}
		b := types.ExprString(recvOf(call))
		arg, _ := ast.Unparen(call.Args[0]).(*ast.Ident)
		argObj, _ := info.Uses[arg].(*types.Var)

		parent := cur.Parent()
		for {
			if _, ok := parent.Node().(*ast.ParenExpr); !ok {
				break
			}
			parent = parent.Parent()
		}
		returned := false
		var into *types.Var // the variable that holds Add's result
		switch p := parent.Node().(type) {
		case *ast.ReturnStmt:
			returned = true
		case *ast.AssignStmt:
			if len(p.Lhs) == len(p.Rhs) {
				for i, rhs := range p.Rhs {
					if ast.Unparen(rhs) != call {
						continue
					}
					if id, ok := p.Lhs[i].(*ast.Ident); ok {
						into, _ = info.ObjectOf(id).(*types.Var)
					}
				}
			}
			returned = into != nil && returnsVar(info, fn, into, call.End())
		}
		if !returned {
			c.pass.Report(analysis.Diagnostic{
				Pos:      call.Pos(),
				End:      call.End(),
				Category: catBatchAdd,
				Message:  fmt.Sprintf("the result of %s.Add is not returned: the stage must return it (return %s.Add(r)) or the request is lost or runs twice", b, b),
			})
		}
		if argObj == nil || argObj == into || returned && into == nil {
			// return b.Add(r): nothing of this call runs after it;
			// r = b.Add(r): r is the placeholder from here on.
			continue
		}
		if use := firstUseAfter(info, fn, argObj, call.End(), reachLimit(cur)); use != nil {
			c.pass.Report(analysis.Diagnostic{
				Pos:      use.Pos(),
				End:      use.End(),
				Category: catBatchAdd,
				Message:  fmt.Sprintf("%s is used after %s.Add(%s): the batcher owns it now; set its fields before Add and use the flush's results after it resumes", arg.Name, b, arg.Name),
			})
		}
	}
}

// inRequestCode reports whether cur is inside a function that takes a
// Request, or a literal within one: code that runs per request.
func (c *checker) inRequestCode(cur inspector.Cursor) bool {
	for f := range cur.Enclosing((*ast.FuncDecl)(nil), (*ast.FuncLit)(nil)) {
		if sig := funcSig(c.pass.TypesInfo, f.Node()); sig != nil && hasRequestParam(sig) {
			return true
		}
	}
	return false
}

// returnsVar reports whether fn has, after pos, a return of v itself.
func returnsVar(info *types.Info, fn ast.Node, v *types.Var, after token.Pos) bool {
	found := false
	inspectShallow(funcBody(fn), func(n ast.Node) bool {
		if ret, ok := n.(*ast.ReturnStmt); ok && ret.Pos() > after {
			for _, res := range ret.Results {
				if id, ok := ast.Unparen(res).(*ast.Ident); ok && info.Uses[id] == v {
					found = true
				}
			}
		}
		return !found
	})
	return found
}

// reachLimit returns where the code that can run after the node at cur
// ends: the end of the innermost block around it whose statements from
// there on include a return (code after that block is on other paths),
// or the end of the function.
func reachLimit(cur inspector.Cursor) token.Pos {
	pos := cur.Node().Pos()
	for c := cur.Parent(); c.Valid(); c = c.Parent() {
		var list []ast.Stmt
		switch n := c.Node().(type) {
		case *ast.FuncDecl, *ast.FuncLit:
			return n.End()
		case *ast.BlockStmt:
			list = n.List
		case *ast.CaseClause:
			list = n.Body
		case *ast.CommClause:
			list = n.Body
		default:
			continue
		}
		for _, st := range list {
			if _, ok := st.(*ast.ReturnStmt); ok && st.End() > pos {
				return c.Node().End()
			}
		}
	}
	return token.NoPos
}

// firstUseAfter returns the first use of v in fn after pos and before
// limit that comes before v is assigned anew (a textual approximation
// of the paths that follow pos).
func firstUseAfter(info *types.Info, fn ast.Node, v *types.Var, after, limit token.Pos) *ast.Ident {
	kill := token.NoPos
	var killers = map[*ast.Ident]bool{}
	ast.Inspect(funcBody(fn), func(n ast.Node) bool {
		if a, ok := n.(*ast.AssignStmt); ok && a.Pos() > after && (a.Tok == token.ASSIGN || a.Tok == token.DEFINE) {
			for _, lhs := range a.Lhs {
				if id, ok := lhs.(*ast.Ident); ok && info.ObjectOf(id) == v {
					killers[id] = true
					if kill == token.NoPos || a.End() < kill {
						kill = a.End()
					}
				}
			}
		}
		return true
	})
	var first *ast.Ident
	ast.Inspect(funcBody(fn), func(n ast.Node) bool {
		id, ok := n.(*ast.Ident)
		if !ok || id.Pos() <= after || id.Pos() >= limit || killers[id] || info.Uses[id] != v {
			return true
		}
		if kill != token.NoPos && id.Pos() >= kill {
			return true
		}
		if first == nil || id.Pos() < first.Pos() {
			first = id
		}
		return true
	})
	return first
}
