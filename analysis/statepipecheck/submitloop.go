package statepipecheck

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
)

// submitLoop reports Group.Submit called in a loop when the same
// function, in the same goroutine, reads the group's Out only after the
// loop and no literal of the function (a goroutine, an errgroup task)
// reads it: once the group holds MaxInFlight requests, Submit blocks
// for a reader that never comes.
func (c *checker) submitLoop() {
	info := c.pass.TypesInfo
	for fn := range c.insp.PreorderSeq((*ast.FuncDecl)(nil), (*ast.FuncLit)(nil)) {
		body := funcBody(fn)
		if body == nil {
			continue
		}
		// Reads of Out in this goroutine, and groups some literal reads.
		type read struct {
			group string
			at    ast.Node
		}
		var reads []read
		readElsewhere := map[string]bool{}
		outVars := map[*types.Var]string{} // ch := g.Out()
		inspectShallow(body, func(n ast.Node) bool {
			if gs, ok := n.(*ast.GoStmt); ok {
				// go consume(g), go drain(g.Out()): another reader.
				ast.Inspect(gs.Call, func(n ast.Node) bool {
					if e, ok := n.(ast.Expr); ok {
						readElsewhere[types.ExprString(e)] = true
					}
					if call, ok := n.(*ast.CallExpr); ok && coreMethod(info, call, "Group", "Out") {
						readElsewhere[types.ExprString(recvOf(call))] = true
					}
					return true
				})
				return false
			}
			if a, ok := n.(*ast.AssignStmt); ok && len(a.Lhs) == len(a.Rhs) {
				for i, rhs := range a.Rhs {
					if call, ok := ast.Unparen(rhs).(*ast.CallExpr); ok && coreMethod(info, call, "Group", "Out") {
						if id, ok := a.Lhs[i].(*ast.Ident); ok {
							if v, ok := info.ObjectOf(id).(*types.Var); ok {
								outVars[v] = types.ExprString(recvOf(call))
							}
						}
					}
				}
			}
			if call, ok := n.(*ast.CallExpr); ok && coreMethod(info, call, "Group", "Out") {
				reads = append(reads, read{types.ExprString(recvOf(call)), call})
			}
			return true
		})
		ast.Inspect(body, func(n ast.Node) bool {
			lit, ok := n.(*ast.FuncLit)
			if !ok {
				return true
			}
			ast.Inspect(lit.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if coreMethod(info, n, "Group", "Out") {
						readElsewhere[types.ExprString(recvOf(n))] = true
					}
				case *ast.Ident:
					if v, ok := info.Uses[n].(*types.Var); ok {
						if g, ok := outVars[v]; ok {
							readElsewhere[g] = true
						}
					}
				}
				return true
			})
			return false
		})
		// Loops that submit and do not read, more times than the bound.
		bound := c.inFlightBound(body)
		inspectShallow(body, func(n ast.Node) bool {
			var loopBody *ast.BlockStmt
			switch l := n.(type) {
			case *ast.ForStmt:
				loopBody = l.Body
			case *ast.RangeStmt:
				loopBody = l.Body
			default:
				return true
			}
			if trips, ok := c.tripCount(n); ok && trips <= bound {
				return false // every result fits: Submit never waits for a reader
			}
			submits := map[string]*ast.CallExpr{}
			readsInside := map[string]bool{}
			inspectShallow(loopBody, func(n ast.Node) bool {
				if _, ok := n.(*ast.GoStmt); ok {
					return false
				}
				if call, ok := n.(*ast.CallExpr); ok {
					g := types.ExprString(recvOf(call))
					switch {
					case coreMethod(info, call, "Group", "Submit"):
						if submits[g] == nil {
							submits[g] = call
						}
					case coreMethod(info, call, "Group", "Out"):
						readsInside[g] = true
					}
				}
				return true
			})
			for g, submit := range submits {
				if readsInside[g] || readElsewhere[g] {
					continue
				}
				for _, r := range reads {
					if r.group == g && r.at.Pos() > n.End() {
						c.pass.Report(analysis.Diagnostic{
							Pos:      submit.Pos(),
							End:      submit.End(),
							Category: catSubmitLoop,
							Message: fmt.Sprintf("%s.Submit in a loop before %s.Out is read in the same goroutine: Submit blocks for good once MaxInFlight results wait unread; use Pipelines.Do, or read %s.Out in another goroutine",
								g, g, g),
						})
						break
					}
				}
			}
			return false // an outer loop reported already covers inner ones
		})
	}
}

// defaultMaxInFlight is the smallest in-flight bound a Pipelines has
// without WithMaxInFlight (the default grows with the batchers' needs).
const defaultMaxInFlight = 1024

// inFlightBound returns the smallest bound body sets with a constant
// WithMaxInFlight or MaxInFlight, or the default.
func (c *checker) inFlightBound(body *ast.BlockStmt) int64 {
	bound := int64(defaultMaxInFlight)
	ast.Inspect(body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 1 || !(coreFunc(c.pass.TypesInfo, call, "WithMaxInFlight") || coreFunc(c.pass.TypesInfo, call, "MaxInFlight")) {
			return true
		}
		if k, ok := c.intConst(call.Args[0]); ok && k < bound {
			bound = k
		}
		return true
	})
	return bound
}

func (c *checker) intConst(e ast.Expr) (int64, bool) {
	tv, ok := c.pass.TypesInfo.Types[e]
	if !ok || tv.Value == nil || tv.Value.Kind() != constant.Int {
		return 0, false
	}
	return constant.Int64Val(tv.Value)
}

// tripCount returns how many times a loop runs when it is written with
// constants: range over a constant, an array or a slice literal, or
// for i := A; i < B; i++.
func (c *checker) tripCount(loop ast.Node) (int64, bool) {
	info := c.pass.TypesInfo
	switch l := loop.(type) {
	case *ast.RangeStmt:
		if n, ok := c.intConst(l.X); ok {
			return n, true
		}
		if lit, ok := ast.Unparen(l.X).(*ast.CompositeLit); ok {
			return int64(len(lit.Elts)), true
		}
		if t := info.TypeOf(l.X); t != nil {
			if a, ok := t.Underlying().(*types.Array); ok {
				return a.Len(), true
			}
		}
	case *ast.ForStmt:
		init, ok1 := l.Init.(*ast.AssignStmt)
		cond, ok2 := l.Cond.(*ast.BinaryExpr)
		post, ok3 := l.Post.(*ast.IncDecStmt)
		if !ok1 || !ok2 || !ok3 || len(init.Lhs) != 1 || len(init.Rhs) != 1 || post.Tok != token.INC {
			return 0, false
		}
		id, ok := init.Lhs[0].(*ast.Ident)
		x, ok4 := ast.Unparen(cond.X).(*ast.Ident)
		p, ok5 := ast.Unparen(post.X).(*ast.Ident)
		if !ok || !ok4 || !ok5 || info.ObjectOf(id) != info.ObjectOf(x) || info.ObjectOf(id) != info.ObjectOf(p) {
			return 0, false
		}
		from, ok6 := c.intConst(init.Rhs[0])
		to, ok7 := c.intConst(cond.Y)
		if !ok6 || !ok7 {
			return 0, false
		}
		switch cond.Op {
		case token.LSS:
			return max(to-from, 0), true
		case token.LEQ:
			return max(to-from+1, 0), true
		}
	}
	return 0, false
}
