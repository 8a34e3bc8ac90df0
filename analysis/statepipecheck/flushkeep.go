package statepipecheck

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
)

// flushKeep reports a flush function (given to statepipe.NewBatcher in
// this package) that lets its batch, a part of it, or an element's
// address outlive the call: stored in a field, a global or through a
// pointer, sent on a channel, returned inside a value, or captured by a
// goroutine that is not waited for. The batcher reuses the slice and
// resumes the requests as soon as flush returns.
func (c *checker) flushKeep() {
	for _, fn := range c.flushFuncs() {
		sig := funcSig(c.pass.TypesInfo, fn)
		if sig == nil || sig.Params().Len() != 2 || funcBody(fn) == nil {
			continue
		}
		k := &keeper{c: c, fn: fn, aliases: map[*types.Var]bool{sig.Params().At(1): true}}
		k.grow()
		k.report()
	}
}

// keeper follows what aliases a flush's batch inside the flush.
type keeper struct {
	c       *checker
	fn      ast.Node
	aliases map[*types.Var]bool // local variables that hold the batch or a part of it
}

// local reports whether v is declared inside the flush.
func (k *keeper) local(v *types.Var) bool {
	return v != nil && v.Pos() >= k.fn.Pos() && v.Pos() < k.fn.End()
}

// aliasing reports whether the value of e holds the batch's memory.
func (k *keeper) aliasing(e ast.Expr) bool {
	info := k.c.pass.TypesInfo
	switch e := ast.Unparen(e).(type) {
	case *ast.Ident:
		v, _ := info.Uses[e].(*types.Var)
		return k.aliases[v]
	case *ast.SliceExpr:
		return k.aliasing(e.X)
	case *ast.UnaryExpr:
		if e.Op == token.AND {
			if lit, ok := ast.Unparen(e.X).(*ast.CompositeLit); ok {
				return k.aliasing(lit) // &T{Items: batch}
			}
			return k.rootAlias(e.X)
		}
	case *ast.CompositeLit:
		for _, el := range e.Elts {
			if kv, ok := el.(*ast.KeyValueExpr); ok {
				el = kv.Value
			}
			if k.aliasing(el) {
				return true
			}
		}
	case *ast.CallExpr:
		if id, ok := ast.Unparen(e.Fun).(*ast.Ident); ok && id.Name == "append" {
			if _, ok := info.Uses[id].(*types.Builtin); ok {
				for i, a := range e.Args {
					spread := e.Ellipsis.IsValid() && i == len(e.Args)-1
					if (i == 0 || !spread) && k.aliasing(a) {
						return true // append(kept, &batch[i]), not append(kept, batch...)
					}
				}
			}
		}
	case *ast.FuncLit:
		return k.captures(e)
	}
	return false
}

// rootAlias reports whether e (an operand of &) lies in the batch's
// memory: batch[i], batch[i].Data.X, or the variable batch itself.
func (k *keeper) rootAlias(e ast.Expr) bool {
	for {
		switch x := ast.Unparen(e).(type) {
		case *ast.SelectorExpr:
			e = x.X
		case *ast.IndexExpr:
			return k.aliasing(x.X)
		case *ast.Ident:
			return k.aliasing(x)
		default:
			return false
		}
	}
}

// captures reports whether lit uses an alias of the batch.
func (k *keeper) captures(lit *ast.FuncLit) bool {
	found := false
	ast.Inspect(lit.Body, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok {
			if v, ok := k.c.pass.TypesInfo.Uses[id].(*types.Var); ok && k.aliases[v] {
				found = true
			}
		}
		return !found
	})
	return found
}

// holder returns the local variable an assignment to lhs stores into,
// when lhs is a local (x, x.f of a struct value x, x[i] of a local
// slice or map); nil when the store reaches memory the flush does not own.
func (k *keeper) holder(lhs ast.Expr) *types.Var {
	info := k.c.pass.TypesInfo
	for {
		switch x := ast.Unparen(lhs).(type) {
		case *ast.Ident:
			if x.Name == "_" {
				return nil
			}
			v, _ := info.ObjectOf(x).(*types.Var)
			if k.local(v) {
				return v
			}
			return nil
		case *ast.SelectorExpr:
			if t := info.TypeOf(x.X); t == nil || isPointer(t) {
				return nil // through a pointer (or of a type unknown)
			}
			lhs = x.X
		case *ast.IndexExpr:
			lhs = x.X
		default:
			return nil
		}
	}
}

// grow adds to the aliases every local variable assigned one, until no
// more are found.
func (k *keeper) grow() {
	for changed := true; changed; {
		changed = false
		k.assignments(func(lhs, rhs ast.Expr) {
			if v := k.holder(lhs); v != nil && !k.aliases[v] && k.aliasing(rhs) {
				k.aliases[v] = true
				changed = true
			}
		})
	}
}

// assignments calls f for each pair of an assignment or a var
// declaration inside the flush.
func (k *keeper) assignments(f func(lhs, rhs ast.Expr)) {
	ast.Inspect(funcBody(k.fn), func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if len(n.Lhs) == len(n.Rhs) {
				for i := range n.Lhs {
					f(n.Lhs[i], n.Rhs[i])
				}
			}
		case *ast.ValueSpec:
			if len(n.Names) == len(n.Values) {
				for i := range n.Names {
					f(n.Names[i], n.Values[i])
				}
			}
		}
		return true
	})
}

func (k *keeper) report() {
	k.assignments(func(lhs, rhs ast.Expr) {
		if _, blank := lhs.(*ast.Ident); blank && lhs.(*ast.Ident).Name == "_" {
			return
		}
		if k.holder(lhs) == nil && k.aliasing(rhs) {
			k.diag(rhs, "stored in "+types.ExprString(lhs))
		}
	})
	waits := k.waitCalls()
	ast.Inspect(funcBody(k.fn), func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SendStmt:
			if k.aliasing(n.Value) {
				k.diag(n.Value, "sent on a channel")
			}
		case *ast.GoStmt:
			if k.escapingCall(n.Call) && !waitsAfter(waits, n.End()) {
				k.diag(n.Call, "used by a goroutine that flush does not wait for")
			}
		case *ast.FuncLit:
			return false // its returns are its own
		case *ast.ReturnStmt:
			for _, res := range n.Results {
				if k.aliasing(res) {
					k.diag(res, "returned")
				}
			}
		}
		return true
	})
}

// escapingCall reports whether a call started by go uses the batch.
func (k *keeper) escapingCall(call *ast.CallExpr) bool {
	if k.aliasing(call.Fun) {
		return true
	}
	for _, a := range call.Args {
		if k.aliasing(a) {
			return true
		}
	}
	return false
}

// waitCalls returns the positions of calls of a method named Wait (a
// sync.WaitGroup, an errgroup.Group): after one, goroutines are joined.
func (k *keeper) waitCalls() []token.Pos {
	var out []token.Pos
	ast.Inspect(funcBody(k.fn), func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok {
			if sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr); ok && sel.Sel.Name == "Wait" {
				out = append(out, call.Pos())
			}
		}
		return true
	})
	return out
}

func waitsAfter(waits []token.Pos, p token.Pos) bool {
	for _, w := range waits {
		if w > p {
			return true
		}
	}
	return false
}

func (k *keeper) diag(at ast.Node, how string) {
	k.c.pass.Report(analysis.Diagnostic{
		Pos:      at.Pos(),
		End:      at.End(),
		Category: catFlushKeep,
		Message:  fmt.Sprintf("flush keeps its batch past the call (%s): the batcher reuses it and resumes the requests when flush returns; copy the values you need", how),
	})
}

func isPointer(t types.Type) bool {
	_, ok := t.Underlying().(*types.Pointer)
	return ok
}
