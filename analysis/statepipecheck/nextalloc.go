package statepipecheck

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/token"
	"go/types"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/ast/inspector"
)

// nextAlloc reports method values assigned to Request.Next in functions
// that run per request (those taking a Request or *Request): each one
// builds a closure that escapes with the request, an allocation per
// transition. The fix is the idiom the README documents: a Stage field
// made once in the constructor.
func (c *checker) nextAlloc() {
	info := c.pass.TypesInfo
	for cur := range c.insp.Root().Preorder((*ast.AssignStmt)(nil), (*ast.CompositeLit)(nil)) {
		var val ast.Expr
		switch n := cur.Node().(type) {
		case *ast.AssignStmt:
			if len(n.Lhs) != len(n.Rhs) {
				continue
			}
			for i, lhs := range n.Lhs {
				if isNextField(info, lhs) {
					c.reportNextValue(n.Rhs[i], cur)
				}
			}
			continue
		case *ast.CompositeLit:
			if _, ok := requestArg(info.TypeOf(n)); !ok {
				continue
			}
			for _, el := range n.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					if id, ok := kv.Key.(*ast.Ident); ok && id.Name == "Next" {
						val = kv.Value
					}
				}
			}
		}
		if val != nil {
			c.reportNextValue(val, cur)
		}
	}
}

// isNextField reports whether e is x.Next for a Request x.
func isNextField(info *types.Info, e ast.Expr) bool {
	sel, ok := ast.Unparen(e).(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Next" {
		return false
	}
	s, ok := info.Selections[sel]
	if !ok || s.Kind() != types.FieldVal {
		return false
	}
	t := s.Recv()
	if p, ok := types.Unalias(t).(*types.Pointer); ok {
		t = p.Elem()
	}
	_, ok = requestArg(t)
	return ok
}

func (c *checker) reportNextValue(val ast.Expr, cur inspector.Cursor) {
	fn := enclosingFunc(cur)
	if fn == nil {
		return
	}
	sig := funcSig(c.pass.TypesInfo, fn)
	if sig == nil || !hasRequestParam(sig) {
		return // built once, outside the per-request path
	}
	sel, method := methodValue(c.pass.TypesInfo, val)
	if method == nil {
		return
	}
	recv := types.ExprString(sel.X)
	example := recv // the receiver as the constructor would name it
	switch ast.Unparen(sel.X).(type) {
	case *ast.Ident, *ast.SelectorExpr:
	default:
		example = "m"
	}
	field := lowerFirst(method.Name())
	d := analysis.Diagnostic{
		Pos:      sel.Pos(),
		End:      sel.End(),
		Category: catNextAlloc,
		Message: fmt.Sprintf("%s.%s allocates a method value on every transition: assign a statepipe.Stage field made once in the constructor (%s.%s = %s.%s)",
			recv, method.Name(), example, field, example, method.Name()),
	}
	if fix, ok := c.nextFix(sel, method); ok {
		d.SuggestedFixes = []analysis.SuggestedFix{fix}
	}
	c.pass.Report(d)
}

func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}

// nextFix builds the fix for r.Next = x.M: a field m of type
// statepipe.Stage[T] in x's struct (unless one is there), x.m = x.M in
// the one constructor of x's type before each return of it (unless it is
// there), and r.Next = x.m. It gives up, offering no fix, whenever a
// piece cannot be placed with certainty.
func (c *checker) nextFix(sel *ast.SelectorExpr, method *types.Func) (analysis.SuggestedFix, bool) {
	var none analysis.SuggestedFix
	info := c.pass.TypesInfo
	// A method value of a value receiver binds a copy made before the
	// field is set: the field would be nil inside it. Fix pointers only.
	if _, ok := types.Unalias(info.TypeOf(sel.X)).(*types.Pointer); !ok {
		return none, false
	}
	named := receiverNamed(info.TypeOf(sel.X))
	if named == nil || named.Obj().Pkg() != c.pass.Pkg || named.TypeParams().Len() > 0 {
		return none, false
	}
	st, ok := named.Underlying().(*types.Struct)
	if !ok {
		return none, false
	}
	elem, ok := stageSig(method.Type().(*types.Signature))
	if !ok {
		return none, false
	}
	spec, file := c.typeSpec(named.Obj())
	if spec == nil {
		return none, false
	}
	structType, ok := spec.Type.(*ast.StructType)
	if !ok {
		return none, false
	}

	// The field: reuse a Stage[T] field of the right name, or add one
	// whose name clashes with nothing.
	var edits []analysis.TextEdit
	field, exists := "", false
	for _, name := range []string{lowerFirst(method.Name()), lowerFirst(method.Name()) + "Stage"} {
		obj, _, _ := types.LookupFieldOrMethod(types.NewPointer(named), true, c.pass.Pkg, name)
		if obj == nil {
			field = name
			break
		}
		if v, ok := obj.(*types.Var); ok && v.IsField() && fieldOf(st, v) {
			if arg, ok := coreNamed(v.Type(), "Stage"); ok && types.Identical(arg, elem) {
				field, exists = name, true
				break
			}
		}
	}
	if field == "" {
		return none, false
	}
	if !exists {
		typ, ok := c.stageTypeText(file, elem)
		if !ok {
			return none, false
		}
		text := fmt.Sprintf("%s %s // %s, made once: naming it allocates nothing", field, typ, method.Name())
		edits = append(edits, c.insertField(structType, text))
	}

	// The constructor: the one function of the package that returns the
	// type, and in it each return of a local variable holding it.
	ctor := c.constructor(named)
	if ctor == nil {
		return none, false
	}
	assigned := false
	ast.Inspect(ctor.Body, func(n ast.Node) bool {
		if a, ok := n.(*ast.AssignStmt); ok {
			for _, lhs := range a.Lhs {
				if s, ok := lhs.(*ast.SelectorExpr); ok && s.Sel.Name == field && receiverNamed(info.TypeOf(s.X)) == named {
					assigned = true
				}
			}
		}
		return true
	})
	if !assigned {
		// Right after the statement that makes the machine, before
		// anything (statepipe.New among them) can run its stages.
		made := c.madeIn(ctor, named)
		if len(made) == 0 {
			return none, false
		}
		for _, m := range made {
			edits = append(edits, analysis.TextEdit{
				Pos:     m.stmt.End(),
				End:     m.stmt.End(),
				NewText: fmt.Appendf(nil, "\n%s%s.%s = %s.%s", c.indentOf(m.stmt.Pos()), m.name, field, m.name, method.Name()),
			})
		}
	}
	edits = append(edits, analysis.TextEdit{Pos: sel.Sel.Pos(), End: sel.Sel.End(), NewText: []byte(field)})
	return analysis.SuggestedFix{
		Message:   fmt.Sprintf("Name %s through a field made once in %s", method.Name(), ctor.Name.Name),
		TextEdits: edits,
	}, true
}

// receiverNamed returns N for an expression of type N or *N.
func receiverNamed(t types.Type) *types.Named {
	t = types.Unalias(t)
	if p, ok := t.(*types.Pointer); ok {
		t = types.Unalias(p.Elem())
	}
	n, _ := t.(*types.Named)
	return n
}

func fieldOf(st *types.Struct, v *types.Var) bool {
	for f := range st.Fields() {
		if f == v {
			return true
		}
	}
	return false
}

// typeSpec finds the declaration of a type of this package.
func (c *checker) typeSpec(obj *types.TypeName) (*ast.TypeSpec, *ast.File) {
	for _, f := range c.pass.Files {
		if f.FileStart > obj.Pos() || obj.Pos() >= f.FileEnd {
			continue
		}
		var spec *ast.TypeSpec
		ast.Inspect(f, func(n ast.Node) bool {
			if s, ok := n.(*ast.TypeSpec); ok && s.Name.Pos() == obj.Pos() {
				spec = s
			}
			return spec == nil
		})
		return spec, f
	}
	return nil, nil
}

// stageTypeText spells statepipe.Stage[T] as the file that declares the
// struct can: every package it needs must be imported there.
func (c *checker) stageTypeText(file *ast.File, elem types.Type) (string, bool) {
	names := map[string]string{} // path -> name in file
	for _, imp := range file.Imports {
		pkg := c.pass.TypesInfo.PkgNameOf(imp)
		if pkg == nil || pkg.Name() == "_" || pkg.Name() == "." {
			continue
		}
		names[pkg.Imported().Path()] = pkg.Name()
	}
	ok := true
	qual := func(p *types.Package) string {
		if p == c.pass.Pkg {
			return ""
		}
		name, found := names[p.Path()]
		if !found {
			ok = false
		}
		return name
	}
	text := types.TypeString(elem, qual)
	var core string
	if c.pass.Pkg.Path() != corePath {
		core = names[corePath]
		if core == "" {
			return "", false
		}
		core += "."
	}
	return core + "Stage[" + text + "]", ok
}

// insertField adds a line at the end of a struct's fields.
func (c *checker) insertField(st *ast.StructType, text string) analysis.TextEdit {
	fields := st.Fields
	if len(fields.List) == 0 || c.line(fields.Opening) == c.line(fields.Closing) {
		// struct{} or a one-line struct: rewrite it whole.
		var buf bytes.Buffer
		buf.WriteString("struct {\n")
		for _, f := range fields.List {
			buf.WriteString("\t")
			format.Node(&buf, c.pass.Fset, f)
			buf.WriteString("\n")
		}
		buf.WriteString("\t" + text + "\n}")
		return analysis.TextEdit{Pos: st.Pos(), End: st.End(), NewText: buf.Bytes()}
	}
	last := fields.List[len(fields.List)-1]
	end := last.End()
	if last.Comment != nil {
		end = last.Comment.End()
	}
	return analysis.TextEdit{Pos: end, End: end, NewText: []byte("\n\n\t" + text)}
}

func (c *checker) line(p token.Pos) int { return c.pass.Fset.Position(p).Line }

// indentOf returns the white space that starts the line of p.
func (c *checker) indentOf(p token.Pos) string {
	tf := c.pass.Fset.File(p)
	content, err := c.pass.ReadFile(tf.Name())
	if err != nil {
		return "\t"
	}
	start := tf.Offset(tf.LineStart(tf.Line(p)))
	end := tf.Offset(p)
	if start > end || end > len(content) {
		return "\t"
	}
	ws := content[start:end]
	if strings.TrimSpace(string(ws)) != "" {
		return "\t"
	}
	return string(ws)
}

// constructor returns the one package-level function that returns N or
// *N (among its results), or nil when there is none or more than one.
func (c *checker) constructor(named *types.Named) *ast.FuncDecl {
	var found *ast.FuncDecl
	for f, d := range c.decls {
		sig := f.Type().(*types.Signature)
		if sig.Recv() != nil || d.Body == nil {
			continue
		}
		for v := range sig.Results().Variables() {
			if receiverNamed(v.Type()) == named {
				if found != nil && found != d {
					return nil
				}
				found = d
			}
		}
	}
	return found
}

// made is a statement of a constructor that defines the variable it returns.
type made struct {
	stmt ast.Stmt
	name string
}

// madeIn returns, for each local variable of type *N that ctor returns
// (in a return of its own, not of a literal), the top-level statement of
// its body that defines it; nothing when one of them is defined
// elsewhere (a named result, a nested block), where placing the
// assignment is not certain.
func (c *checker) madeIn(ctor *ast.FuncDecl, named *types.Named) []made {
	info := c.pass.TypesInfo
	vars := map[*types.Var]string{}
	inspectShallow(ctor.Body, func(n ast.Node) bool {
		ret, ok := n.(*ast.ReturnStmt)
		if !ok {
			return true
		}
		for _, res := range ret.Results {
			id, ok := ast.Unparen(res).(*ast.Ident)
			if !ok || receiverNamed(info.TypeOf(id)) != named {
				continue
			}
			if _, ptr := types.Unalias(info.TypeOf(id)).(*types.Pointer); !ptr {
				continue // a copy is returned: the field would be bound to the local
			}
			if v, ok := info.Uses[id].(*types.Var); ok {
				vars[v] = id.Name
			}
		}
		return true
	})
	var out []made
	for _, st := range ctor.Body.List {
		var defined []*ast.Ident // what st itself defines, not its blocks
		switch st := st.(type) {
		case *ast.AssignStmt:
			if st.Tok == token.DEFINE {
				for _, lhs := range st.Lhs {
					if id, ok := lhs.(*ast.Ident); ok {
						defined = append(defined, id)
					}
				}
			}
		case *ast.DeclStmt:
			if gd, ok := st.Decl.(*ast.GenDecl); ok {
				for _, spec := range gd.Specs {
					if vs, ok := spec.(*ast.ValueSpec); ok {
						defined = append(defined, vs.Names...)
					}
				}
			}
		}
		for _, id := range defined {
			if v, ok := info.Defs[id].(*types.Var); ok {
				if name, ok := vars[v]; ok {
					out = append(out, made{st, name})
					delete(vars, v)
				}
			}
		}
	}
	if len(vars) != 0 {
		return nil
	}
	return out
}
