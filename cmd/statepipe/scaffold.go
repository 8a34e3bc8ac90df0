package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"text/template"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

const newHelp = `Usage: statepipe new NAME [--dir D]

Generates a ready-to-run statepipe pipeline in directory D (default ./NAME):

  item.go          the data type and sample data
  machine.go       the state machine: Start, Enrich, Store (a batch stage), Done
  bulk.go          a fake bulk client to replace with your service
  main.go          submits two sources through their own groups, prints results
  machine_test.go  a test of the whole machine
  go.mod           when D is not inside a Go module already, or is inside a
                   checkout of statepipe

statepipe is not on the module proxy yet, so the go.mod of a program made
inside a checkout replaces statepipe with that checkout; elsewhere, one
made by a statepipe built from a checkout replaces it with the checkout it
was built from. The "next:" steps printed at the end build, run and test
the program as they are.

NAME is the program's name: a Go identifier in ASCII, not a keyword. D must
not exist yet.

Flags:
`

// scaffold is what the templates are filled with.
type scaffold struct {
	Name    string // the program's name
	Module  string // module path for a generated go.mod
	Version string // statepipe version for go.mod's require; empty: none
	Replace string // for go.mod's replace of statepipe: a checkout's directory; empty: none
}

// statepipeModule is the module path of the library.
const statepipeModule = "github.com/statepipe/statepipe"

func newCommand(args []string, e env) error {
	fs := flag.NewFlagSet("new", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "the directory `D` to create (default ./NAME); it must not exist")
	pos, err := parseFlags(fs, "new", args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, newHelp)
		printFlags(e.stdout, fs)
		return err
	}
	if err != nil {
		return err
	}
	switch len(pos) {
	case 0:
		return usageError{cmd: "new", msg: "new needs a NAME"}
	case 1:
	default:
		return usageError{cmd: "new", msg: fmt.Sprintf("new takes one NAME, got %d arguments", len(pos))}
	}
	name := pos[0]
	if err := checkName(name); err != nil {
		return usageError{cmd: "new", msg: err.Error()}
	}
	if *dir == "" {
		*dir = name
	}
	pl, err := planModule(*dir, statepipeVersion(), buildSource())
	if err != nil {
		return err
	}
	s := scaffold{Name: name, Module: name, Version: pl.version, Replace: pl.replace}
	files, err := s.render(pl.ownMod)
	if err != nil {
		return err
	}
	if err := writeFiles(*dir, files); err != nil {
		return err
	}
	printNextSteps(e.stdout, *dir, files, pl)
	return nil
}

// plan says where the generated program gets statepipe from, and how to
// run it.
type plan struct {
	ownMod   bool   // write a go.mod: dir is in no module, or in statepipe's checkout
	version  string // its require of statepipe, if any
	replace  string // its replace of statepipe, if any
	checkout string // dir is inside this checkout of statepipe
	noWork   bool   // a go.work above dir does not list the new module: run with GOWORK=off

	module, moduleDir string // the module dir is in, when not its own
	// source is a checkout of statepipe to point the enclosing module at,
	// when statepipe has no version on the proxy; empty if none is known.
	source string
}

// planModule decides how the program in dir gets statepipe. version is
// the released version this binary was built with, empty for a local
// build; source is the checkout it was built from, if it still exists.
//
// statepipe is not on the module proxy yet: a local build points the
// generated module at a checkout with a replace directive. Inside a
// checkout the program gets a module of its own (not a package of
// statepipe's), replacing statepipe with that checkout.
func planModule(dir, version, source string) (plan, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return plan{}, err
	}
	var pl plan
	pl.checkout = enclosingCheckout(abs)
	pl.module, pl.moduleDir = enclosingModule(abs)
	_, pl.noWork = enclosingFile(abs, "go.work")
	switch {
	case pl.checkout != "":
		rel, err := filepath.Rel(abs, pl.checkout)
		if err != nil {
			return plan{}, err
		}
		pl.ownMod, pl.version, pl.replace = true, "v0.0.0", filepath.ToSlash(rel)
	case pl.moduleDir == "":
		pl.ownMod, pl.noWork = true, false
		switch {
		case version != "":
			pl.version = version
		case source != "":
			pl.version, pl.replace = "v0.0.0", source
		}
	default:
		pl.noWork = false // the enclosing module's business
		pl.version = version
		if version == "" {
			pl.source = source
		}
	}
	return pl, nil
}

// enclosingCheckout returns the root of the checkout of statepipe that
// holds abs, or "".
func enclosingCheckout(abs string) string {
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(b) == statepipeModule {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// buildSource is builtFrom; tests replace it.
var buildSource = builtFrom

// builtFrom returns the checkout of statepipe this binary was built from,
// if it is still there: the directory two above this source file, as the
// compiler recorded it (not with -trimpath).
func builtFrom() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return ""
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || modulePath(b) != statepipeModule {
		return ""
	}
	return root
}

// checkName reports why name cannot name a generated program.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("NAME must not be empty")
	case token.IsKeyword(name):
		return fmt.Errorf("NAME %q is a Go keyword", name)
	case !token.IsIdentifier(name):
		return fmt.Errorf("NAME %q is not a Go identifier (letters, digits and _, not starting with a digit)", name)
	case strings.IndexFunc(name, func(r rune) bool { return r > 127 }) >= 0:
		return fmt.Errorf("NAME %q is also the module path and directory: use ASCII letters, digits and _", name)
	case name == "main":
		return errors.New(`NAME "main" cannot be a module path; choose another`)
	}
	return nil
}

// render fills every template; withMod includes go.mod. The Go files are
// gofmt'ed, which also catches a template that makes invalid Go.
func (s scaffold) render(withMod bool) (map[string][]byte, error) {
	paths, err := fs.Glob(templateFS, "templates/*.tmpl")
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte, len(paths))
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".tmpl")
		if name == "go.mod" && !withMod {
			continue
		}
		t, err := template.ParseFS(templateFS, p)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, s); err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		out := b.Bytes()
		if strings.HasSuffix(name, ".go") {
			if out, err = format.Source(out); err != nil {
				return nil, fmt.Errorf("template %s makes invalid Go: %w", name, err)
			}
		}
		files[name] = out
	}
	return files, nil
}

// writeFiles creates dir, which must not exist, and writes files in it.
// On failure it removes what it created.
func writeFiles(dir string, files map[string][]byte) (err error) {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists; choose another NAME or --dir", dir)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; choose another NAME or --dir", dir)
		}
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// enclosingModule returns the module path and directory of the go.mod
// above abs, if any.
func enclosingModule(abs string) (module, dir string) {
	d, ok := enclosingFile(abs, "go.mod")
	if !ok {
		return "", ""
	}
	b, err := os.ReadFile(filepath.Join(d, "go.mod"))
	if err != nil {
		return "", ""
	}
	return modulePath(b), d
}

// enclosingFile returns the nearest directory above abs that holds name.
func enclosingFile(abs, name string) (string, bool) {
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return d, true
		}
		if filepath.Dir(d) == d {
			return "", false
		}
	}
}

func modulePath(gomod []byte) string {
	for _, l := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// statepipeVersion is the version of statepipe this binary was built
// with, for the generated go.mod; empty when it is not a released one (a
// local build), and go mod tidy then picks one.
func statepipeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/statepipe/statepipe" && d.Replace == nil &&
			strings.HasPrefix(d.Version, "v") && d.Version != "v0.0.0" {
			return d.Version
		}
	}
	return ""
}

// printNextSteps prints the commands that build, run and test the new
// program, to be typed as they are in the directory "new" ran in.
func printNextSteps(w io.Writer, dir string, files map[string][]byte, pl plan) {
	names := make([]string, 0, len(files))
	for _, n := range []string{"go.mod", "item.go", "machine.go", "bulk.go", "main.go", "machine_test.go"} {
		if _, ok := files[n]; ok {
			names = append(names, n)
		}
	}
	fmt.Fprintf(w, "created %s: %s\n", dir, strings.Join(names, " "))
	if pl.replace != "" {
		fmt.Fprintf(w, "go.mod takes statepipe from %s (replace): it is not on the module proxy yet\n", pl.replace)
	}
	fmt.Fprintf(w, "check it with statepipevet, which finds the statepipe mistakes the compiler cannot see\n"+
		"(an allocation per transition, a request used after Batcher.Add, Close from a stage, a Submit loop that hangs):\n"+
		"  go install %s/analysis/cmd/statepipevet@latest && statepipevet ./...\n", statepipeModule)
	fmt.Fprintf(w, "\nnext:\n")
	gocmd := "go"
	if pl.noWork {
		// Inside the checkout, its go.work would take over and not know
		// the new module.
		gocmd = "GOWORK=off go"
	}
	if pl.ownMod {
		fmt.Fprintf(w, "  cd %s\n", shellQuote(dir))
		if pl.version == "" {
			fmt.Fprintf(w, "  # statepipe is not on the module proxy yet: point go.mod at a checkout of it\n")
			fmt.Fprintf(w, "  go mod edit -require=%s@v0.0.0 -replace=%s=/path/to/statepipe\n", statepipeModule, statepipeModule)
		}
		fmt.Fprintf(w, "  %s mod tidy\n  %s run .\n  %s test .\n", gocmd, gocmd, gocmd)
		if pl.noWork {
			fmt.Fprintf(w, "  # or add it to the checkout's workspace: go work use . (then plain go)\n")
		}
		return
	}
	// A package of the enclosing module: commands run at its root.
	rel, err := filepath.Rel(pl.moduleDir, absPath(dir))
	if err != nil {
		rel = dir
	}
	pkg := "./" + filepath.ToSlash(rel)
	fmt.Fprintf(w, "  cd %s   # module %s\n", shellQuote(pl.moduleDir), pl.module)
	switch {
	case pl.version != "":
		fmt.Fprintf(w, "  go get %s@%s\n", statepipeModule, pl.version)
	case pl.source != "":
		fmt.Fprintf(w, "  go mod edit -require=%s@v0.0.0 -replace=%s=%s   # not on the module proxy yet\n",
			statepipeModule, statepipeModule, shellQuote(pl.source))
	default:
		fmt.Fprintf(w, "  # statepipe is not on the module proxy yet: point go.mod at a checkout of it\n")
		fmt.Fprintf(w, "  go mod edit -require=%s@v0.0.0 -replace=%s=/path/to/statepipe\n", statepipeModule, statepipeModule)
	}
	fmt.Fprintf(w, "  go mod tidy\n  go run %s\n  go test %s\n", pkg, pkg)
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
